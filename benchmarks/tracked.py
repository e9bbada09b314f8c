"""Goals 5 and the sweep's: framework overhead per trial, and the shipped MNIST sweep end to end.

They run their own scripts (``overhead.py``, ``sweep_bench.py``) in a fresh process and turn the
JSON those write into figures. ``workers`` runs the same sweep with one worker process per core,
beside the one-worker sweep of the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import suite
from suite import Context, Figure, Record

HERE = Path(__file__).resolve().parent
MAX_OVERHEAD, MAX_SWEEP_SECONDS, MIN_SWEEP_ACC, MAX_EXPORT_GAP = 0.03, 15 * 60, 0.993, 0.05


def _script(ctx: Context, script: str, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "CNNBENCH_DATA_DIR": str(ctx.data_root)}
    subprocess.run([sys.executable, str(HERE / script), *args], env=env, check=True)
    return env, " ".join(["python", f"benchmarks/{script}", *args])


def overhead(ctx: Context) -> Record:
    """Time 1-epoch MNIST trials with and without the sweep around them; return the overhead share."""
    repeats, trials = (1, 2) if ctx.quick else (7, 5)
    _, command = _script(ctx, "overhead.py", "--repeats", str(repeats), "--trials", str(trials))
    result = json.loads((suite.RESULTS / f"overhead-{repeats}x{trials}.json").read_text())
    record = Record("overhead", suite.machine(), [], result)
    record.figures += [
        Figure("1-epoch MNIST trial, fit + test evaluation alone (median)", result["plain_seconds"], "s", "", None,
               command),
        Figure("same trial through the sweep: Optuna, MLflow, plots, weights (median)", result["tracked_seconds"],
               "s", "", None, command),
        Figure("per-trial framework overhead: share of each tracked trial outside fit and evaluate (median)",
               100 * result["overhead_share"], "%", f"<= {100 * MAX_OVERHEAD:g}",
               ctx.judge(result["overhead_share"] <= MAX_OVERHEAD), command),
        Figure("side by side: (tracked - plain) / tracked, median of the paired timings", 100 * result["paired_share"],
               "%", "", None, command),
    ]
    return record


def sweep(ctx: Context) -> Record:
    """Run ``cnnbench sweep mnist`` (50 trials; 6 in a quick run), then export its best; return the figures."""
    trials = 6 if ctx.quick else 50
    _, command = _script(ctx, "sweep_bench.py", "--trials", str(trials))
    result = json.loads((suite.RESULTS / f"sweep-{trials}.json").read_text())
    record = Record("sweep", suite.machine(), [], result)
    gap = result["export_difference_points"]
    record.figures += [
        Figure(f"{result['command']}: wall time", result["wall_seconds"], "s", f"<= {MAX_SWEEP_SECONDS}",
               ctx.judge(result["wall_seconds"] <= MAX_SWEEP_SECONDS), command),
        Figure("best trial's test accuracy", 100 * result["best_test_acc"], "%", f">= {100 * MIN_SWEEP_ACC:g}",
               ctx.judge(result["best_test_acc"] >= MIN_SWEEP_ACC), command),
        Figure("its export (model.pt2, plain torch): test accuracy", 100 * result["export_test_acc_plain_torch"], "%",
               "", None, command),
        Figure("export against reported test accuracy", gap, "points", f"<= {MAX_EXPORT_GAP:g}",
               ctx.judge(gap <= MAX_EXPORT_GAP), command),
    ]
    return record


def workers(ctx: Context, alone: Record | None) -> Record:
    """Run the shipped MNIST sweep with one worker per core; return its time against ``alone``'s, one worker's."""
    from cnnbench.sweep import threads_per_worker
    from sweep_bench import results_path

    cores = threads_per_worker(1)
    trials = 6 if ctx.quick else 50
    _, command = _script(ctx, "sweep_bench.py", "--trials", str(trials), "--workers", str(cores))
    result = json.loads(results_path(trials, cores).read_text())
    record = Record("workers", suite.machine(), [], result)
    record.figures += [
        Figure(f"{result['command']}: wall time", result["wall_seconds"], "s", "", None, command),
        Figure("best trial's test accuracy", 100 * result["best_test_acc"], "%", "", None, command),
    ]
    if alone is not None:
        one = alone.details["wall_seconds"]
        record.details["one_worker_wall_seconds"] = one
        record.figures.append(Figure(f"one worker's wall time / {cores} workers' (same run)",
                                     one / result["wall_seconds"], "x", "", None, command))
    return record
