"""Goals 2 to 4: what ``cnnbench train --preset NAME --json`` reaches, and in how much training time."""

from __future__ import annotations

from dataclasses import dataclass

import suite
from suite import Context, Figure, Record


@dataclass(frozen=True)
class Goal:
    """A preset, the seed it trains with, the test accuracy it must reach and the training seconds it may take.

    ``reported`` is the test accuracy the seed project itself reported, where it reported one.
    """

    preset: str
    min_acc: float | None = None
    max_seconds: float | None = None
    seed: int | None = None
    reported: float | None = None


#: Each benchmark's goals; a quick run trains only the first of each, for one epoch on a small subset.
GOALS = {
    "mnist_fast": [Goal("mnist_fast", 0.99, max_seconds=15, seed=s) for s in (0, 1, 2)],
    "mnist_best": [Goal("mnist_best", 0.995)],
    # Every seed project's recipe as it describes it (the presets), next to what it reported.
    "seeds": [Goal("seed002", 0.97, reported=0.97), Goal("seed004", 0.98, reported=0.98), Goal("seed000"),
              Goal("seed001"), Goal("seed003")],
}
#: Time to 99% MNIST test accuracy: the best preset must be this many times faster than the seed-004 recipe.
MIN_TIME_TO_99_RATIO = 10.0


def run(name: str, ctx: Context) -> Record:
    """Train every goal of benchmark ``name`` through the command line; return the record."""
    record = Record(name, suite.machine(), [], {"runs": []})
    for goal in GOALS[name][:1] if ctx.quick else GOALS[name]:
        flags = (["--seed", str(goal.seed)] if goal.seed is not None else []) + (["--epochs", "1"] if ctx.quick else [])
        summary, command = suite.train_cli(ctx, goal.preset, *flags)
        record.details["runs"].append(summary)
        acc, seconds = summary["test_acc"], summary["train_seconds"]
        label = goal.preset + (f", seed {goal.seed}" if goal.seed is not None else "")
        if goal.reported is not None:
            record.figures.append(Figure(f"{label}: test accuracy its project reported", 100 * goal.reported, "%",
                                         "", None, "(the project's README)"))
        record.figures.append(Figure(
            f"{label}: test accuracy ({summary['epochs']} epochs, {summary['dataset']})", 100 * acc, "%",
            f">= {100 * goal.min_acc:g}" if goal.min_acc else "",
            ctx.judge(acc >= goal.min_acc) if goal.min_acc else None, command))
        within = goal.max_seconds is None or seconds < goal.max_seconds
        record.figures.append(Figure(
            f"{label}: training time ({summary['epochs']} epochs, {summary['precision']})", seconds, "s",
            f"< {goal.max_seconds:g}" if goal.max_seconds else "", ctx.judge(within) if goal.max_seconds else None,
            command))
    return record


def time_to_99(ctx: Context, throughput: Record, fast: Record) -> Record:
    """Return the best preset's training time to 99% MNIST test accuracy against the seed-004 recipe's.

    Both come from this run: ``fast`` trained mnist_fast, ``throughput`` the seed-004 recipe the
    seed project's way, with its test accuracy read after every epoch.
    """
    import statistics

    seed = throughput.details["pairs"]["seed004"]["seed_seconds_to_99"]
    ours = [r["train_seconds"] for r in fast.details["runs"] if r["test_acc"] >= 0.99]
    record = Record("time_to_99", suite.machine(), [], {"seed004_seconds": seed, "mnist_fast_seconds": ours})
    command = "python benchmarks/run.py --only time_to_99"
    if seed is None or not ours:
        missing = "the seed-004 recipe" if seed is None else "mnist_fast"
        record.details["not_reached"] = missing
        return record
    median = statistics.median(ours)
    record.figures += [
        Figure("seed-004 recipe (DataLoader, fp32): training seconds to 99.0% test", seed, "s", "", None, command),
        Figure("mnist_fast: training seconds to 99.0% test (median of its runs)", median, "s", "< 15",
               ctx.judge(median < 15), command),
        Figure("time to 99.0%: speed-up over the seed-004 recipe", seed / median, "x",
               f">= {MIN_TIME_TO_99_RATIO:g}x", ctx.judge(seed / median >= MIN_TIME_TO_99_RATIO), command),
    ]
    return record
