"""Goal 6: ``cnnbench --help`` and ``cnnbench list`` answer in under half a second.

Each command runs in a fresh process, several times; the figure is the median wall time. The
first ``cnnbench list`` after cnnbench's source changes fills the registries (importing torch)
and caches their summaries: it is timed apart, as the cold start. Two everyday commands are timed
the same way, with no goal: ``cnnbench best`` on a study of 20 trials, and ``cnnbench predict`` of
one image with a model ``cnnbench train --preset seed002 --epochs 1 --export`` made first.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import suite
from suite import Context, Figure, Record

MAX_SECONDS = 0.5
REPEATS = 7


def _wall(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnbench", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _study(folder: str) -> None:
    """Write a study of 20 complete trials to ``folder``'s default journal, as a sweep records them."""
    import optuna

    from cnnbench.storage import DEFAULT_JOURNAL, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="bench", direction="maximize",
                                storage=open_storage(os.path.join(folder, DEFAULT_JOURNAL)))
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)}
    for n in range(20):
        study.add_trial(optuna.trial.create_trial(params={"lr": 10 ** (-n / 7)}, distributions=lr, value=0.9 + n / 1000,
                                                  user_attrs={"best_val_acc": 0.9 + n / 1000, "test_acc": 0.9,
                                                              "params": 21840, "train_seconds": 4.2}))


def run(ctx: Context) -> Record:
    """Time ``--help``, a cold ``list``, a warm ``list``, ``best`` and ``predict``; return the record."""
    cache = tempfile.mkdtemp(prefix="cnnbench-startup-")
    env = {**os.environ, "CNNBENCH_CACHE_DIR": cache, "CNNBENCH_DATA_DIR": str(ctx.data_root)}
    repeats = 3 if ctx.quick else REPEATS
    try:
        cold = _wall(["list"], env)
        times = {name: [_wall(args, env) for _ in range(repeats)]
                 for name, args in (("cnnbench --help", ["--help"]), ("cnnbench list", ["list"]))}
        _study(cache)
        export = os.path.join(cache, "export")
        _wall(["train", "--preset", "seed002", "--epochs", "1", "--export", export], env)
        image = os.path.join(export, "learning_curves.png")
        for name, args in (("cnnbench best", ["best", "--storage", os.path.join(cache, "cnnbench-journal.log")]),
                           ("cnnbench predict", ["predict", export, image])):
            times[name] = [_wall(args, env) for _ in range(repeats)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    record = Record("startup", suite.machine(), [], {"repeats": repeats, "seconds": times, "cold_list": cold})
    for name, values in times.items():
        median = statistics.median(values)
        goal = name in ("cnnbench --help", "cnnbench list")
        record.figures.append(Figure(f"{name}: median wall time of {repeats} fresh processes", median, "s",
                                     f"< {MAX_SECONDS:g}" if goal else "", ctx.judge(median < MAX_SECONDS) if goal
                                     else None, name))
    record.figures.append(Figure("cnnbench list, first run after an install or upgrade (fills its cache)", cold,
                                 "s", "", None, "cnnbench list"))
    return record
