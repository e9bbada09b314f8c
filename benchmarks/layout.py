"""The trainer's automatic choices on this CPU: precision (fp32, bf16 autocast) and memory layout.

One training step of each net, as the trainer runs it, on a batch already in memory, timed in
every layout and precision side by side in one process; the figure that matters is how the
combination ``--precision auto`` picks compares with the fastest one measured. The VGG nets are
also timed with and without ``pool_first`` (max-pool before batch norm and ReLU), in the way
``auto`` picks.
"""

from __future__ import annotations

import time

import torch
from cnnbench import config as cfg
from cnnbench import data as datamod
from cnnbench import train
from cnnbench.optim import create_optimizer

import suite
from suite import Context, Figure, Record

#: The nets of the seed projects the throughput goal names, and the MNIST presets.
PRESETS = ("seed004", "seed002", "seed003", "mnist_fast", "mnist_best")
#: (layout, precision) pairs; contiguous bf16 is left out: bf16 autocast needs channels_last to pay off.
WAYS = (("contiguous", "fp32"), ("channels_last", "fp32"), ("channels_last", "bf16"))
#: Presets whose net takes ``pool_first``; each is timed with it on and off.
POOL_FIRST = ("mnist_fast", "mnist_best")
#: The automatic choice may be this much slower than the fastest way and still count as the fastest (timing noise).
TOLERANCE = 0.9


def auto_way() -> tuple[str, str]:
    """Return the (layout, precision) the trainer picks on this CPU with ``--precision auto``."""
    cpu = torch.device("cpu")
    precision = train.resolve_precision("auto", cpu)
    return ("channels_last" if train.uses_channels_last(cpu, precision) else "contiguous"), precision


def training_step(preset: str, layout: str, precision: str, **settings):
    """Return ``preset``'s training step as the trainer runs it on the CPU, in ``layout`` and ``precision``, and a
    batch for it (a step taken once already): ``(step, x, y)``.

    ``settings`` override the preset's (``pool_first=True``, say).
    """
    config, _ = cfg.resolve(cfg.Layer.preset(preset), cfg.Layer.flags({**settings, "device": "cpu"}))
    spec = datamod.DATASETS.get(config.dataset)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    model = train.build_model(config, spec).to(memory_format=fmt)
    optimizer = create_optimizer(config.optimizer, model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 momentum=config.momentum, nesterov=config.nesterov)
    step = train._train_step(model, optimizer, config.label_smoothing, torch.device("cpu"), precision, False)
    x = torch.randn(config.batch_size, *spec.shape).contiguous(memory_format=fmt)
    y = torch.randint(0, spec.num_classes, (config.batch_size,))
    step(x, y)  # the first step allocates and picks kernels
    return step, x, y


def images_per_sec(preset: str, layout: str, precision: str, seconds: float, **settings) -> float:
    """Return the images/s of ``preset``'s training step in ``layout`` and ``precision`` on the CPU."""
    step, x, y = training_step(preset, layout, precision, **settings)
    start, count = time.perf_counter(), 0
    while count < 2 or time.perf_counter() - start < seconds:
        step(x, y)
        count += 1
    return len(x) * count / (time.perf_counter() - start)


def run(ctx: Context) -> Record:
    """Time every preset's step in every way; return the record."""
    torch.set_num_threads(2)
    train.keep_freed_memory()
    seconds = 1.0 if ctx.quick else 3.0
    chosen = auto_way()
    command = "python benchmarks/run.py --only layout"
    record = Record("layout", suite.machine(), [], {"auto": list(chosen), "images_per_sec": {}})
    for preset in PRESETS[:2] if ctx.quick else PRESETS:
        rates = {way: images_per_sec(preset, *way, seconds) for way in WAYS}
        record.details["images_per_sec"][preset] = {" ".join(way): rate for way, rate in rates.items()}
        for (layout, precision), rate in rates.items():
            record.figures.append(Figure(f"{preset}: training step, {layout}, {precision}", rate, "images/s", "", None,
                                         command))
        best = max(rates.values())
        record.figures.append(Figure(f"{preset}: the automatic choice ({chosen[0]}, {chosen[1]}) against the fastest",
                                     rates[chosen] / best, "x", f">= {TOLERANCE:g}",
                                     ctx.judge(rates[chosen] >= TOLERANCE * best), command))
    record.details["pool_first"] = {}
    for preset in POOL_FIRST[:1] if ctx.quick else POOL_FIRST:
        rates = {on: images_per_sec(preset, *chosen, seconds, pool_first=on) for on in (False, True)}
        record.details["pool_first"][preset] = {"off": rates[False], "on": rates[True]}
        for on, rate in rates.items():
            record.figures.append(Figure(f"{preset}: training step, pool_first {'on' if on else 'off'}", rate,
                                         "images/s", "", None, command))
        record.figures.append(Figure(f"{preset}: pool_first on against off", rates[True] / rates[False], "x", "",
                                     None, command))
    return record
