"""Goals 2 to 4: what ``cnnbench train --preset NAME --json`` reaches, and in how much training time."""

from __future__ import annotations

from dataclasses import dataclass

import suite
from suite import Context, Figure, Record


@dataclass(frozen=True)
class Goal:
    """A preset, the seed it trains with, the test accuracy it must reach and the training seconds it may take."""

    preset: str
    min_acc: float
    max_seconds: float | None = None
    seed: int | None = None


#: Each benchmark's goals; a quick run trains only the first of each, for one epoch on a small subset.
GOALS = {
    "mnist_fast": [Goal("mnist_fast", 0.99, max_seconds=15, seed=s) for s in (0, 1, 2)],
    "mnist_best": [Goal("mnist_best", 0.995)],
    "seeds": [Goal("seed002", 0.97), Goal("seed004", 0.98)],
}


def run(name: str, ctx: Context) -> Record:
    """Train every goal of benchmark ``name`` through the command line; return the record."""
    record = Record(name, suite.machine(), [], {"runs": []})
    for goal in GOALS[name][:1] if ctx.quick else GOALS[name]:
        flags = (["--seed", str(goal.seed)] if goal.seed is not None else []) + (["--epochs", "1"] if ctx.quick else [])
        summary, command = suite.train_cli(ctx, goal.preset, *flags)
        record.details["runs"].append(summary)
        acc, seconds = summary["test_acc"], summary["train_seconds"]
        label = goal.preset + (f", seed {goal.seed}" if goal.seed is not None else "")
        record.figures.append(Figure(f"{label}: test accuracy", 100 * acc, "%", f">= {100 * goal.min_acc:g}",
                                     ctx.judge(acc >= goal.min_acc), command))
        within = goal.max_seconds is None or seconds < goal.max_seconds
        record.figures.append(Figure(
            f"{label}: training time ({summary['epochs']} epochs, {summary['precision']})", seconds, "s",
            f"< {goal.max_seconds:g}" if goal.max_seconds else "", ctx.judge(within) if goal.max_seconds else None,
            command))
    return record
