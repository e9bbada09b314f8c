"""Two `cnnbench train` runs started together on one machine, sharing its cores and not: the fast path for
several commands on one machine (cnnbench/cores.py).

The same run (the seed-004 net, 2 epochs) alone, then twice at once with the cores shared (the default), then
twice at once each with every core (``CNNBENCH_SHARE_CORES=0``, as before sharing). Each figure is the run's
own training seconds; the pair's wall time is the slower of the two.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import suite
from suite import Context, Figure, Record

def _args(quick: bool) -> list[str]:
    return ["train", "--preset", "seed004", "--epochs", "1" if quick else "2", "--json"]


def _together(ctx: Context, copies: int, share: bool) -> list[dict]:
    """Start ``copies`` runs at once; return each one's JSON summary."""
    env = {**os.environ, "CNNBENCH_DATA_DIR": str(ctx.data_root), "CNNBENCH_SHARE_CORES": "1" if share else "0"}
    args = _args(ctx.quick)
    runs = [subprocess.Popen([sys.executable, "-m", "cnnbench", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for run in runs:
        stdout, stderr = run.communicate()
        if run.returncode != 0:
            raise RuntimeError(f"cnnbench {' '.join(args)} failed ({run.returncode}): {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def run(ctx: Context) -> Record:
    """Time the run alone, two at once sharing the cores, two at once not; return the figures."""
    command = shlex.join(["cnnbench", *_args(ctx.quick)])
    alone = _together(ctx, 1, True)
    shared = _together(ctx, 2, True)
    fought = _together(ctx, 2, False)
    record = Record("sharing", suite.machine(), [], {"alone": alone, "shared": shared, "not_shared": fought})

    def threads(r: dict) -> str:
        return f"{r['threads']} thread{'s' * (r['threads'] != 1)}"

    slowest = {name: max(r["train_seconds"] for r in runs) for name, runs in (("shared", shared), ("not", fought))}
    record.figures += [
        Figure("one run alone: seconds of training", alone[0]["train_seconds"], "s", "", None, command),
        *(Figure(f"two at once, cores shared: run {i + 1}'s seconds ({threads(r)})", r["train_seconds"],
                 "s", "", None, f"{command}  (twice at once)") for i, r in enumerate(shared)),
        *(Figure(f"two at once, each on every core: run {i + 1}'s seconds ({threads(r)})",
                 r["train_seconds"], "s", "", None, f"CNNBENCH_SHARE_CORES=0 {command}  (twice at once)")
          for i, r in enumerate(fought)),
        Figure("two at once: the slower run, not shared / shared", slowest["not"] / slowest["shared"], "x", "", None,
               "the two pairs above"),
        Figure("two at once, shared: the slower run / one alone", slowest["shared"] / alone[0]["train_seconds"], "x",
               "", None, "the pair and the run alone above"),
    ]
    for name, runs in (("shared", shared), ("not_shared", fought)):
        record.details[f"{name}_test_acc"] = [r["test_acc"] for r in runs]
    return record
