"""The trainer's automatic choices on this CPU: precision (fp32, bf16 autocast) and memory layout.

One training step of each net, as the trainer runs it, on a batch already in memory, timed in
every layout and precision side by side in one process; the figure that matters is how the
combination ``--precision auto`` picks compares with the fastest one measured. The VGG nets are
also timed with and without ``pool_first`` (max-pool before batch norm and ReLU), in the way
``auto`` picks. ``auto`` picks one precision for the CPU, so every net the shipped MNIST sweep can
draw (each combination of the choices that shape its step) is also timed in channels_last fp32
and bf16, and the worst of ``auto``'s choices against the faster of the two is held to the same
tolerance.
"""

from __future__ import annotations

import time

import torch
from cnnbench import config as cfg
from cnnbench import data as datamod
from cnnbench import space, train
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
#: The settings of the shipped MNIST sweep that change its training step; the others are held at one value.
SWEEP_NET_KEYS = ("arch", "depth", "pool_first", "kernel_size", "batch_size")


def auto_way() -> tuple[str, str]:
    """Return the (layout, precision) the trainer picks on this CPU with ``--precision auto``."""
    cpu = torch.device("cpu")
    precision = train.resolve_precision("auto", cpu)
    return ("channels_last" if train.uses_channels_last(cpu, precision) else "contiguous"), precision


def preset_config(preset: str, **settings) -> cfg.TrainConfig:
    """Return ``preset``'s configuration on the CPU, ``settings`` overriding it (``pool_first=True``, say)."""
    config, _ = cfg.resolve(cfg.Layer.preset(preset), cfg.Layer.flags({**settings, "device": "cpu"}))
    return config


def sweep_nets(name: str = "mnist") -> list[cfg.TrainConfig]:
    """Return a trial configuration for every combination of the shipped sweep ``name``'s choices of
    :data:`SWEEP_NET_KEYS` (conditional ones where they apply); every other setting at its first choice or the
    middle of its range where it applies (an SGD trial's momentum, say), else at the sweep's fixed value."""
    sweep, _ = space.load_sweep(name)
    others: dict = {}
    for key, param in sweep.space.items():
        if key not in SWEEP_NET_KEYS and param.applies(others):
            others[key] = _one_value(param)
    nets: list[dict] = [{}]
    for key in SWEEP_NET_KEYS:
        param = sweep.space.get(key)
        if param is None:
            continue
        grown = []
        for net in nets:
            grown += [{**net, key: value} for value in param.values()] if param.applies(net) else [net]
        nets = grown
    return [space.trial_config(sweep, net | others, device="cpu") for net in nets]


def _one_value(param: space.Param):
    """Return a parameter's first choice, or the middle of its range (the geometric middle of a log range)."""
    if param.choices is not None:
        return param.values()[0]
    return (param.low * param.high) ** 0.5 if param.log else (param.low + param.high) / 2


def training_step(config: cfg.TrainConfig, layout: str, precision: str):
    """Return ``config``'s training step as the trainer runs it on the CPU, in ``layout`` and ``precision``, and a
    batch for it (a step taken once already): ``(step, x, y)``."""
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


def images_per_sec(config: cfg.TrainConfig, layout: str, precision: str, seconds: float) -> float:
    """Return the images/s of ``config``'s training step in ``layout`` and ``precision`` on the CPU."""
    step, x, y = training_step(config, layout, precision)
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
        rates = {way: images_per_sec(preset_config(preset), *way, seconds) for way in WAYS}
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
        rates = {on: images_per_sec(preset_config(preset, pool_first=on), *chosen, seconds) for on in (False, True)}
        record.details["pool_first"][preset] = {"off": rates[False], "on": rates[True]}
        for on, rate in rates.items():
            record.figures.append(Figure(f"{preset}: training step, pool_first {'on' if on else 'off'}", rate,
                                         "images/s", "", None, command))
        record.figures.append(Figure(f"{preset}: pool_first on against off", rates[True] / rates[False], "x", "",
                                     None, command))
    record.details["sweep_nets"], figures = sweep_net_rates(ctx, chosen, command)
    record.figures += figures
    return record


def sweep_net_rates(ctx: Context, chosen: tuple[str, str], command: str) -> tuple[list[dict], list[Figure]]:
    """Time every net of the shipped MNIST sweep in channels_last fp32 and bf16, alternating, best of two; return each
    net's settings and rates, and the figures: how many run faster in bf16, the range of bf16 over fp32, and the
    worst of ``auto``'s choices against the faster way."""
    seconds = 0.3 if ctx.quick else 1.0
    nets = sweep_nets()
    rows = []
    for config in nets[:2] if ctx.quick else nets:
        rates = dict.fromkeys(("fp32", "bf16"), 0.0)
        for _ in range(1 if ctx.quick else 2):  # alternating, the best of each: one slow second must not decide
            for precision in rates:
                rates[precision] = max(rates[precision], images_per_sec(config, "channels_last", precision, seconds))
        net = {k: getattr(config, k) for k in SWEEP_NET_KEYS}
        rows.append({**net, "images_per_sec": rates})
    ratios = [r["images_per_sec"]["bf16"] / r["images_per_sec"]["fp32"] for r in rows]
    worst = min(r["images_per_sec"][chosen[1]] / max(r["images_per_sec"].values()) for r in rows)
    name = f"MNIST sweep's {len(rows)} nets"
    return rows, [
        Figure(f"{name}: faster in bf16 than in fp32", sum(x > 1 for x in ratios), "nets", "", None, command),
        Figure(f"{name}: bf16 against fp32, least", min(ratios), "x", "", None, command),
        Figure(f"{name}: bf16 against fp32, most", max(ratios), "x", "", None, command),
        Figure(f"{name}: the automatic choice ({chosen[1]}) against the faster, worst net", worst, "x",
               f">= {TOLERANCE:g}", ctx.judge(worst >= TOLERANCE), command),
    ]
