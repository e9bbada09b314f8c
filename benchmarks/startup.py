"""Goal 6: ``cnnbench --help`` and ``cnnbench list`` answer in under half a second.

Each command runs in a fresh process, several times; the figure is the median wall time. The
first ``cnnbench list`` after cnnbench's source changes fills the registries (importing torch)
and caches their summaries: it is timed apart, as the cold start.
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


def run(ctx: Context) -> Record:
    """Time ``--help``, a cold ``list`` and a warm ``list``; return the record."""
    cache = tempfile.mkdtemp(prefix="cnnbench-startup-")
    env = {**os.environ, "CNNBENCH_CACHE_DIR": cache}
    repeats = 3 if ctx.quick else REPEATS
    try:
        cold = _wall(["list"], env)
        times = {name: [_wall(args, env) for _ in range(repeats)]
                 for name, args in (("cnnbench --help", ["--help"]), ("cnnbench list", ["list"]))}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    record = Record("startup", suite.machine(), [], {"repeats": repeats, "seconds": times, "cold_list": cold})
    for name, values in times.items():
        median = statistics.median(values)
        record.figures.append(Figure(f"{name}: median wall time of {repeats} fresh processes", median, "s",
                                     f"< {MAX_SECONDS:g}", ctx.judge(median < MAX_SECONDS), name))
    record.figures.append(Figure("cnnbench list, first run after an install or upgrade (fills its cache)", cold,
                                 "s", "", None, "cnnbench list"))
    return record
