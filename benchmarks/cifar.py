"""Goal 3: the best CIFAR-10 test accuracy reached within 10 minutes of training on this machine.

Trains the ``cifar10_airbench`` preset for as many epochs as fit in the budget on this machine:
two epochs first, timed, then the whole run with the epoch count their times allow (the
one-cycle schedule needs the count before it starts). The budget holds the test evaluation too,
with its test-time augmentation, as airbench counts it. On a GPU the goal is the time to 94%
against the published airbench94 time; where no GPU is lent that figure is not measured.
"""

from __future__ import annotations

import suite
from suite import Context, Figure, Record

PRESET, MIN_ACC, MAX_SECONDS = "cifar10_airbench", 0.90, 600.0
#: The share of the budget the epochs are sized to fill: room for the machine's speed to drift between the timed
#: epochs and the run.
BUDGET_SHARE = 0.95


def epochs_within(first: float, later: float, budget: float = MAX_SECONDS) -> int:
    """Return how many epochs fit in ``BUDGET_SHARE`` of ``budget`` when the first takes ``first`` seconds and each
    later one ``later`` (the first of a process is slower: it sets up every kernel; at least one)."""
    return max(1, 1 + int((BUDGET_SHARE * budget - first) / later))


def run(ctx: Context) -> Record:
    """Time two epochs, train the preset for the epochs that fit; return its test accuracy and time against the goal."""
    summary, command = suite.train_cli(ctx, PRESET, "--epochs", "1" if ctx.quick else "2")
    runs = [summary]
    if not ctx.quick:
        first, later = summary["epoch_seconds"]
        epochs = epochs_within(first, later, MAX_SECONDS - summary["test_seconds"])
        summary, command = suite.train_cli(ctx, PRESET, "--epochs", str(epochs))
        runs.append(summary)
    acc, seconds = summary["test_acc"], summary["train_seconds"] + summary["test_seconds"]
    record = Record("cifar10", suite.machine(), [], {"runs": runs})
    record.figures += [
        Figure(f"{PRESET}: test accuracy ({summary['epochs']} epochs, {summary['precision']})", 100 * acc, "%",
               f">= {100 * MIN_ACC:g} within {MAX_SECONDS / 60:g} min",
               ctx.judge(acc >= MIN_ACC and seconds <= MAX_SECONDS), command),
        Figure(f"{PRESET}: training and test time", seconds, "s", f"<= {MAX_SECONDS:g}",
               ctx.judge(seconds <= MAX_SECONDS), command),
        Figure(f"{PRESET}: training throughput", summary["images_per_sec"], "images/s", "", None, command),
    ]
    return record
