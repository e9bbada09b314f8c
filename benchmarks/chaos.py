"""Reliability goals of docs/reliability.md, measured on tiny data.

``python benchmarks/chaos.py kill --storage journal|postgresql``: a 30-trial sweep with 4 workers,
20 of whose worker processes are SIGKILLed at random times. Goals: 30 finished trials, none
RUNNING in Optuna or MLflow, every finished trial mapped to exactly one MLflow run with the same
params and value, no unloadable checkpoint.

``python benchmarks/chaos.py start --storage journal|postgresql``: 16 ``cnnbench sweep --join``
commands started in the same instant on fresh stores, 10 times. Goal: 0 failures.

journal means Optuna's journal file and MLflow's sqlite store; postgresql means a fresh PostgreSQL
database (on 127.0.0.1:5432, user postgres, trust auth) and an ``mlflow server`` on 127.0.0.1 whose
backend is another fresh database. Results go to ``benchmarks/results/chaos-*.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
SWEEP = """
dataset: mnist
study: chaos
trials: {trials}
epochs: {epochs}
sampler: random
pruner: none
fixed: {{batch_size: {batch}, arch: two_conv, width: 4, optimizer: adam, val_fraction: 0.2}}
space:
  lr: {{low: 1e-3, high: 1e-2, log: true}}
  width: {{choices: [4, 8]}}
tracking: {{log_model: none, plots: false}}
"""


@click.group()
def main() -> None:
    """Chaos and start-up benchmarks for sweeps with many workers."""


@main.command()
@click.option("--storage", type=click.Choice(["journal", "postgresql"]), default="journal", show_default=True)
@click.option("--workers", default=4, show_default=True)
@click.option("--trials", default=30, show_default=True)
@click.option("--kills", default=20, show_default=True, help="SIGKILLs of worker processes.")
@click.option("--epochs", default=3, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--between", default=(2.0, 8.0), type=(float, float), show_default=True,
              help="Seconds between kills, drawn uniformly from this range.")
@click.option("--seed", default=0, show_default=True)
def kill(storage: str, workers: int, trials: int, kills: int, epochs: int, batch: int, between: tuple[float, float],
         seed: int) -> None:
    """SIGKILL worker processes of a running sweep at random times; check nothing is lost."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix=f"cnnbench-chaos-{storage}-"))
    sweep = _setup(work, trials, epochs, batch)
    with _stores(storage, work) as (url, uri):
        command = _command(sweep, url, ["--workers", str(workers)])
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        done = []
        try:
            while len(done) < kills and proc.poll() is None:
                time.sleep(rng.uniform(*between))
                victims = _workers(proc.pid)
                if not victims:
                    continue
                pid = rng.choice(victims)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    done.append({"pid": pid, "at_seconds": round(time.perf_counter() - t0, 1)})
            output, _ = proc.communicate(timeout=3600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        wall = time.perf_counter() - t0
        figures = {"storage": storage, "workers": workers, "trials_asked": trials, "kills_asked": kills,
                   "kills": len(done), "kill_times": done, "exit_code": proc.returncode, "wall_seconds": round(wall, 1),
                   **_check(url, uri, work), "output_tail": output[-3000:]}
    _save(f"chaos-kill-{storage}", figures, work)


@main.command()
@click.option("--storage", type=click.Choice(["journal", "postgresql"]), default="journal", show_default=True)
@click.option("--commands", default=16, show_default=True, help="Commands started in the same instant.")
@click.option("--repeat", default=10, show_default=True)
def start(storage: str, commands: int, repeat: int) -> None:
    """Start many sweep commands at once on fresh stores, several times; count the failures."""
    rounds = []
    for i in range(repeat):
        work = Path(tempfile.mkdtemp(prefix=f"cnnbench-start-{storage}-"))
        sweep = _setup(work, commands, 1, 32)
        with _stores(storage, work) as (url, uri):
            t0 = time.perf_counter()
            codes, tails = _start_at_once(commands, work, _command(sweep, url, ["--join"]),
                                          {"MLFLOW_TRACKING_URI": uri})
            checked = _check(url, uri, work)
            rounds.append({"round": i, "exit_codes": codes, "failed_commands": sum(c != 0 for c in codes),
                           "wall_seconds": round(time.perf_counter() - t0, 1), **checked,
                           "failure_output": [t for c, t in zip(codes, tails) if c][:3]})
        print(json.dumps({k: v for k, v in rounds[-1].items() if k != "failure_output"}), flush=True)
    figures = {"storage": storage, "commands": commands, "repeat": repeat,
               "failed_rounds": sum(r["failed_commands"] > 0 or not r["ok"] for r in rounds),
               "failed_commands": sum(r["failed_commands"] for r in rounds), "rounds": rounds}
    _save(f"chaos-start-{storage}", figures, None)


def _setup(work: Path, trials: int, epochs: int, batch: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_mnist  # the tests' tiny MNIST in the real IDX format

    write_mnist(work / "data")
    path = work / "chaos.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(trials=trials, epochs=epochs, batch=batch)))
    return path


def _command(sweep: Path, url: str, extra: list[str]) -> list[str]:
    cnnbench = str(Path(sys.executable).with_name("cnnbench"))
    return [cnnbench, "sweep", str(sweep), "--data-dir", str(sweep.parent / "data"), "--storage", url, *extra]


@contextlib.contextmanager
def _stores(storage: str, work: Path):
    """Yield (Optuna storage URL, MLflow tracking URI), both fresh."""
    if storage == "journal":
        yield str(work / "cnnbench-journal.log"), f"sqlite:///{work / 'mlflow.db'}"
        return
    import psycopg

    from cnnbench.tracking import server

    names = [f"cnnbench_chaos_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f"CREATE DATABASE {name}")
    base = "postgresql://postgres@127.0.0.1:5432"
    try:
        with server(f"{base}/{names[1]}", work / "artifacts", log=work / "mlflow-server.log") as uri:
            yield f"{base}/{names[0]}", uri
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _workers(parent: int) -> list[int]:
    """The worker processes of ``cnnbench sweep`` process ``parent`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _start_at_once(n: int, work: Path, command: list[str], env: dict) -> tuple[list[int], list[str]]:
    gate = work / "go"
    code = ("import os, sys, time, runpy\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.001)\n"
            "sys.argv = ['cnnbench'] + sys.argv[2:]\n"
            "runpy.run_module('cnnbench', run_name='__main__')\n")
    procs = []
    for i in range(n):
        home = work / f"machine{i}"  # its own working directory and lock folder: its own machine
        home.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(gate), *command[1:]], cwd=home,
                                      env={**os.environ, **env, "CNNBENCH_LOCK_DIR": str(home)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    time.sleep(3)  # every interpreter waits at the gate, so they really start together
    gate.touch()
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    return [p.returncode for p in procs], [o[-1500:] for o in outputs]


def _check(url: str, uri: str, work: Path) -> dict:
    """Count what the goals are about, through Optuna's and MLflow's own APIs."""
    import optuna
    from mlflow.tracking import MlflowClient

    from cnnbench.storage import open_storage
    from cnnbench.train import load_checkpoint

    storage = open_storage(url)
    trials = optuna.load_study(study_name="chaos", storage=storage).get_trials()
    states = [t.state.name for t in trials]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("chaos").experiment_id], max_results=50000)
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    claimed = [t.user_attrs.get("mlflow_run_id") for t in trials if t.user_attrs.get("mlflow_run_id")]
    mismatched = []
    for t in trials:
        run = children.get(t.user_attrs.get("mlflow_run_id"))
        if t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        same = (run is not None and all(run.data.params.get(k) == str(v) for k, v in t.params.items())
                and run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]
                and (t.state.name != "COMPLETE" or abs(run.data.metrics.get("best_val_acc", -1) - t.value) < 1e-9))
        if not same:
            mismatched.append(t.number)
    unloadable = []
    for path in work.rglob("*.ckpt"):
        try:
            load_checkpoint(path)
        except Exception:
            unloadable.append(str(path))
    figures = {
        "finished_trials": states.count("COMPLETE") + states.count("PRUNED"),
        "failed_trials": states.count("FAIL"), "waiting_trials": states.count("WAITING"),
        "running_trials_optuna": states.count("RUNNING"),
        "running_runs_mlflow": sum(r.info.status == "RUNNING" for r in runs),
        "trials_without_one_run": mismatched,
        "runs_without_a_trial": sorted(set(children) - set(claimed)),
        "runs_claimed_twice": len(claimed) - len(set(claimed)),
        "unloadable_checkpoints": unloadable,
        "checkpoints_left": len(list(work.rglob("*.ckpt"))),
        "partial_checkpoint_files_left": len(list(work.rglob(".*.ckpt.*.tmp"))),
        "retried_trials": sum(1 for t in trials if t.user_attrs.get("retry_of") is not None),
        "failed_reasons": sorted({t.user_attrs.get("reason", "")[:80] for t in trials if t.state.name == "FAIL"}),
    }
    figures["ok"] = (figures["running_trials_optuna"] == 0 and figures["running_runs_mlflow"] == 0
                     and not mismatched and not figures["runs_without_a_trial"] and not figures["runs_claimed_twice"]
                     and not unloadable)
    return figures


def _save(name: str, figures: dict, work: Path | None) -> None:
    figures["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average": os.getloadavg()}
    figures["command"] = " ".join(["python", "benchmarks/chaos.py", *sys.argv[1:]])
    if work is not None:
        figures["folder"] = str(work)
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k not in ("output_tail", "rounds", "kill_times")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
