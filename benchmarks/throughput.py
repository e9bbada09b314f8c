"""Goal 1: cnnbench's trainer against the seed projects' way of training, same net, batch and machine.

Both run in one benchmark run, one epoch each in turn (the seed's epoch runs, in a plain child
process of its own, from the trainer's ``on_epoch_end`` hook), so a shared machine's load falls
on both alike. Between epochs, a large matrix product is timed: at its rate, the best a convolution
gets on this machine, the net's FLOPs give a ceiling for any trainer that computes them.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from statistics import median

import torch
from cnnbench import config as cfg
from cnnbench import data as datamod
from cnnbench import train

import baseline
import suite
from suite import Context, Figure, Record

#: Threads for both ways of training: one per core of the two-core machine the figures were taken on.
THREADS = 2
#: The trainer must be this many times faster than the seed's loop, and lose at most this many points of accuracy
#: against it (being more accurate is not held against it).
MIN_RATIO, MAX_GAP_POINTS = 8.0, 0.3


@dataclass(frozen=True)
class Pair:
    """A seed preset to train both ways, for how many epochs, and whether its figures are held to the goals.

    With ``augment``, both ways train on seed 001's augmentation: the seed way per image in its ``DataLoader``
    (the goal's "per-sample transforms including seed 001's rotation/crop"), cnnbench on whole batches.
    """

    preset: str
    epochs: int
    judged: bool
    augment: bool = False

    @property
    def key(self) -> str:
        return f"{self.preset}+seed001_augmentation" if self.augment else self.preset


PAIRS = (Pair("seed004", 10, True), Pair("seed002", 2, False), Pair("seed003", 1, False),
         Pair("seed004", 10, True, augment=True), Pair("seed002", 2, False, augment=True),
         Pair("seed003", 1, False, augment=True))


def compare(pair: Pair, ctx: Context, epochs: int) -> dict:
    """Train ``pair.preset`` for ``epochs`` epochs both ways, alternating epochs.

    Returns, for ``cnnbench`` and ``seed``, the (images, seconds) of each epoch and the test
    accuracy; the speed-up of each pair of epochs and their median; the load average after each pair.
    """
    flags = {"epochs": epochs} | ({"augment": "seed001"} if pair.augment else {})
    config, _ = cfg.resolve(cfg.Layer.preset(pair.preset), cfg.Layer.flags(flags))
    data = datamod.load(config.dataset, ctx.data_root, val_fraction=config.val_fraction)
    precision = train.resolve_precision(config.precision, train.resolve_device(config.device))
    rates = []  # the matrix-product rate after each pair of epochs: the machine's ceiling is the best of them
    loop = baseline.SeedProcess(pair.preset, ctx.data_root, batch_size=config.batch_size, lr=config.lr,
                                seed=config.seed, threads=THREADS, augment=pair.augment)
    seed_epochs, seed_test, load = [], [], []

    def seed_epoch(metrics) -> None:
        seed_epochs.append(loop.epoch())
        seed_test.append(loop.test_accuracy())  # not timed: gives the seed recipe's time to 99%
        load.append(os.getloadavg()[0])
        rates.append(matmul_rate(precision))
        images, seconds = seed_epochs[-1]
        print(f"{pair.key} epoch {metrics.epoch}/{epochs}: cnnbench {metrics.images_per_sec:,.0f} images/s, "
              f"seed way {images / seconds:,.0f} images/s (test {seed_test[-1]:.4f}), load {load[-1]:.1f}",
              file=sys.stderr, flush=True)

    try:
        result = train.fit(config, data, on_epoch_end=seed_epoch)
    finally:
        loop.close()
    test = train.evaluate(result.model, data.test, data.spec, config)
    per_image = flops_per_image(result.model, data.spec.shape, config.batch_size)
    ours = [(m.images_per_sec * m.epoch_seconds, m.epoch_seconds) for m in result.history]
    speedups = [(n / s) / (n_seed / s_seed) for (n, s), (n_seed, s_seed) in zip(ours, seed_epochs)]
    return {
        "batch_size": config.batch_size,
        "cnnbench": {"epochs": ours, "test_acc": test.acc, "precision": result.precision},
        "seed": {"epochs": seed_epochs, "test_acc": seed_test[-1], "epoch_test_acc": seed_test, "precision": "fp32",
                 "num_workers": baseline.NUM_WORKERS},
        "seed_seconds_to_99": _seconds_to(0.99, seed_epochs, seed_test),
        "epoch_speedups": speedups,
        "median_epoch_speedup": median(speedups),
        "load_average": load,
        "ceiling": {"flops_per_image": per_image, "matmul_rates": rates, "matmul_flops_per_sec": max(rates),
                    "images_per_sec": max(rates) / per_image},
    }


def flops_per_image(model: torch.nn.Module, shape: tuple[int, ...], batch_size: int) -> float:
    """Return the floating-point operations of one training step of ``model`` (forward and backward), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    x, y = torch.randn(batch_size, *shape), torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch_size


def matmul_rate(precision: str, seconds: float = 1.0) -> float:
    """Return the FLOP/s of a 1024x1024 matrix product in ``precision``: near the best a convolution gets here."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        a @ b
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def _seconds_to(target: float, epochs: list[tuple[int, float]], test_acc: list[float]) -> float | None:
    """Return the training seconds until the test accuracy first reached ``target``, None if it never did."""
    total = 0.0
    for (_, seconds), acc in zip(epochs, test_acc):
        total += seconds
        if acc >= target:
            return total
    return None


def _rate(epochs: list[tuple[float, float]]) -> float:
    return sum(n for n, _ in epochs) / sum(s for _, s in epochs)


def figures(pair: Pair, ctx: Context, epochs: int, run: dict, command: str) -> list[Figure]:
    """Return the images/s of both ways, their ratio and their test accuracies for one compared pair."""
    ours, seed = _rate(run["cnnbench"]["epochs"]), _rate(run["seed"]["epochs"])
    lost = 100 * (run["seed"]["test_acc"] - run["cnnbench"]["test_acc"])  # negative: cnnbench is more accurate
    judge = ctx.judge if pair.judged else (lambda ok: None)
    tag = f"{pair.preset}, batch {run['batch_size']}" + (", seed 001's augmentation" if pair.augment else "")
    bound, precision = run["ceiling"], run["cnnbench"]["precision"]
    reached = run["seed_seconds_to_99"]
    extra = [Figure(f"{tag}: seed way, training seconds to 99.0% test accuracy", reached, "s", "", None, command)] \
        if reached is not None else []
    return extra + [
        Figure(f"{tag}: cnnbench trainer ({run['cnnbench']['precision']})", ours, "images/s", "", None, command),
        Figure(f"{tag}: seed way (fp32, DataLoader num_workers={baseline.NUM_WORKERS})", seed, "images/s", "", None,
               command),
        Figure(f"{tag}: speed-up", ours / seed, "x", f">= {MIN_RATIO:g}x" if pair.judged else "",
               judge(ours / seed >= MIN_RATIO), command),
        Figure(f"{tag}: ceiling, images/s at this machine's {precision} matrix-product rate "
               f"({bound['matmul_flops_per_sec'] / 1e9:,.0f} GFLOP/s, {bound['flops_per_image'] / 1e6:.1f} MFLOP "
               "an image)", bound["images_per_sec"], "images/s", "", None, command),
        Figure(f"{tag}: {MIN_RATIO:g}x the seed way, as a share of that ceiling",
               100 * MIN_RATIO * seed / bound["images_per_sec"], "%", "", None, command),
        Figure(f"{tag}: test accuracy after {epochs} epochs, cnnbench", 100 * run["cnnbench"]["test_acc"], "%", "",
               None, command),
        Figure(f"{tag}: test accuracy after {epochs} epochs, seed way", 100 * run["seed"]["test_acc"], "%", "",
               None, command),
        Figure(f"{tag}: test accuracy lost against the seed way", lost, "points",
               f"<= {MAX_GAP_POINTS:g}" if pair.judged else "", judge(lost <= MAX_GAP_POINTS), command),
    ]


def run(ctx: Context, command: str) -> Record:
    """Compare every pair (only the MNIST ones, one epoch each, in a quick run); return the record."""
    torch.set_num_threads(THREADS)
    record = Record("throughput", suite.machine(), [], {"threads": THREADS, "pairs": {}})
    for pair in PAIRS:
        if ctx.quick and baseline.RECIPES[pair.preset].dataset != "MNIST":
            continue
        epochs = 1 if ctx.quick else pair.epochs
        result = compare(pair, ctx, epochs)
        record.details["pairs"][pair.key] = result
        record.figures += figures(pair, ctx, epochs, result, command)
    return record
