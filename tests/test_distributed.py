"""Many workers, many machines, servers that go away: sweeps keep their budget and lose nothing.

Each test drives the real ``cnnbench sweep`` in subprocesses on tiny data and checks the result
through Optuna's and MLflow's own APIs. "Another machine" is a process that shares the stores but
not this machine's lock folder or working directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cnnbench.cli import main
from cnnbench.storage import open_storage

QUICK = """
dataset: mnist
study: dist
trials: 4
epochs: {epochs}
sampler: random
pruner: none
fixed: {{batch_size: {batch}, arch: two_conv, width: 4, optimizer: adam, val_fraction: 0.2}}
space:
  lr: {{low: 1e-3, high: 1e-2, log: true}}
tracking: {{log_model: none, plots: false}}
"""
# Epochs of a trial that a test must catch running: on the tiny data one epoch takes 0.1-0.3 s and a look at
# the study up to 0.1 s, so a trial of LONG epochs lasts for several looks, however fast the machine.
LONG = 15


def write_sweep(folder: Path, epochs: int = 1, batch: int = 32) -> Path:
    path = folder / "dist.yaml"
    path.write_text(textwrap.dedent(QUICK.format(epochs=epochs, batch=batch)))
    return path


def cnnbench(folder: Path, sweep: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start ``cnnbench sweep`` in ``folder`` (its own working directory and lock folder: its own "machine")."""
    folder.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "CNNBENCH_LOCK_DIR": str(folder), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "cnnbench", "sweep", str(sweep), *args], cwd=folder, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


class Watched:
    """A started command whose output is read while it runs, so that a test can wait for a line of it."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines = proc, []
        self.readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                        for stream in (proc.stdout, proc.stderr)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return code, "".join(self.lines)


def trials_of(url: str | None, name: str = "dist") -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:  # polled every 0.3 s while a sweep runs: each storage's pooled connection would stay until collected
        if hasattr(storage, "engine"):
            storage.engine.dispose()


def check_one_to_one(trials, client: MlflowClient, name: str = "dist") -> dict:
    """Every finished trial has exactly one MLflow run, with its params and value; no run is left RUNNING."""
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=5000)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    children = {r.info.run_id: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    claimed = [t.user_attrs["mlflow_run_id"] for t in trials if "mlflow_run_id" in t.user_attrs]
    assert len(claimed) == len(set(claimed)), "two trials claim one run"
    assert set(children) == set(claimed), "runs without a trial, or trials without a run"
    for t in trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        expected = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}}[t.state.name]
        assert run.info.status in expected, (t.number, t.state, run.info.status)
        assert run.data.tags["cnnbench.trial"] == str(t.number)
        for key, value in t.params.items():
            assert run.data.params[key] == str(value)
        if t.state.name == "COMPLETE":
            assert run.data.metrics["best_val_acc"] == pytest.approx(t.value)
    return children


def finished(trials) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


class Proxy:
    """A TCP relay on 127.0.0.1 in front of a server: ``stop()`` makes the server unreachable (connections
    cut, new ones refused) until ``start()``, like a server restart or a network outage."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = _free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> "Proxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self.lock:
            if self.listener is not None:
                # close() alone leaves the socket listening while the accept thread is blocked on it (Linux),
                # so the port would still take connections and refuse a new bind; shutdown() wakes accept().
                try:
                    self.listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.listener.close()
                self.listener = None
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _free_port() -> int:
    from cnnbench.tracking import free_port

    return free_port()


@pytest.fixture
def postgres_url():
    import psycopg

    name = f"cnnbench_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def mlflow_server(tmp_path, postgres_url):
    """An ``mlflow server`` on 127.0.0.1, its backend a fresh PostgreSQL database, its artifacts in a folder."""
    from cnnbench.tracking import server

    backend = postgres_url.rsplit("/", 1)[0] + f"/mlflow_{uuid.uuid4().hex[:10]}"
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {backend.rsplit('/', 1)[1]}")
    try:
        with server(backend, tmp_path / "artifacts", log=tmp_path / "mlflow-server.log") as url:
            yield url
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {backend.rsplit('/', 1)[1]} WITH (FORCE)")


def wait_for(predicate, timeout: float = 300, every: float = 0.3, proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it holds; with ``proc``, fail at once (with its output) should it end first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            code, output = finish(proc)
            raise AssertionError(f"the command ended (exit {code}) before {predicate} held:\n{output}")
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def running_trial(url: str | None):
    """The first RUNNING trial that has written a checkpoint, once there is one.

    Its first checkpoint is written at the end of its first epoch, step 2 (steps count half epochs).
    """
    for t in trials_of(url):
        if t.state.name == "RUNNING" and t.user_attrs.get("mlflow_run_id") and max(t.intermediate_values or [0]) >= 2:
            return t
    return None


# Scale-out


def test_devices_pin_workers_in_turn_and_bad_devices_exit_2(tmp_path, tiny_data):
    sweep = write_sweep(tmp_path)
    runner = CliRunner()
    for args, message in [(["--devices", "cpu,gpu0"], "--devices: unknown device 'gpu0'"),
                          (["--devices", "cpu,cuda:1"], "--devices: device 'cuda:1' asked for, but CUDA is not"),
                          (["--devices", "cpu,"], "--devices: empty device name"),
                          (["--devices", "cpu", "--device", "cpu"], "--devices: --device and --devices both given"),
                          (["--devices", "cpu,cpu", "--workers", "1"], "--workers: 2 devices for 1 workers")]:
        res = runner.invoke(main, ["sweep", str(sweep), "--data-dir", str(tiny_data), *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    assert not (tmp_path / "cnnbench-journal.log").exists() and not (tmp_path / "mlflow.db").exists()

    code, output = finish(cnnbench(tmp_path, sweep, "--data-dir", str(tiny_data), "--devices", "cpu,cpu",
                                   "--trials", "3"))
    assert code == 0, output
    trials = trials_of(None)
    assert finished(trials) == 3 and len(trials) == 3
    runs = check_one_to_one(trials, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    # The file fixes no device: each trial ran on the one its worker was given, not on the default (auto).
    assert {r.data.params["device"] for r in runs.values()} == {"cpu"}
    assert {r.data.tags["cnnbench.device"] for r in runs.values()} == {"cpu"}
    assert len({t.user_attrs["cnnbench.worker"] for t in trials}) <= 2


def test_threads_are_shared_out_between_workers(monkeypatch):
    from cnnbench.sweep import threads_per_worker

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [threads_per_worker(n) for n in (1, 2, 4, 16, 32)] == [16, 8, 4, 1, 1]


def test_a_sweep_that_ends_before_other_workers_counts_their_running_trials(tmp_path, monkeypatch):
    # A command's workers stop once every trial of the budget is handed out; another command's
    # (--join, another machine) may still be training one, which its summary names.
    from cnnbench import sweep as sweeps

    sweep = write_sweep(tmp_path, epochs=1, batch=4)
    seen = {}

    def run(definition, **kwargs):
        seen["study"] = definition.study_name
        return sweeps.Outcome(definition.study_name, 3, 1, 1, 0, 0.9, {"lr": 0.01}, 0, "run", running=1)

    monkeypatch.setattr(sweeps, "run", run)
    res = CliRunner().invoke(main, ["sweep", str(sweep), "--trials", "3"])
    assert res.exit_code == 0, res.output
    assert f"study '{seen['study']}': 1 complete, 1 pruned, 0 failed, 1 running in other workers; best val_acc " \
        in res.output, res.output


def test_a_running_study_is_refused_to_a_second_sweep_unless_it_joins(tmp_path, tiny_data):
    sweep = write_sweep(tmp_path, epochs=LONG, batch=4)
    first = cnnbench(tmp_path, sweep, "--data-dir", str(tiny_data), "--trials", "2")
    try:
        wait_for(lambda: running_trial(None), proc=first)
        res = CliRunner().invoke(main, ["sweep", str(sweep), "--data-dir", str(tiny_data), "--trials", "2"])
        assert res.exit_code == 2, res.output
        assert f"is being run right now by {socket.gethostname()}:{first.pid}" in res.output
        assert "--join" in res.output
        # The first command stops at 2 trials; the joined one runs the study on to 3, from the same budget.
        res = CliRunner().invoke(main, ["sweep", str(sweep), "--data-dir", str(tiny_data), "--trials", "3", "--join"])
        assert res.exit_code == 0, res.output
        code, output = finish(first)
        assert code == 0, output
    finally:
        first.kill()
    trials = trials_of(None)
    assert len(trials) == 3 and finished(trials) == 3
    workers = {t.user_attrs["cnnbench.worker"].rpartition(":")[2] for t in trials}
    assert workers == {str(first.pid), str(os.getpid())}
    check_one_to_one(trials, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    # Once no one runs it, the study is free again.
    res = CliRunner().invoke(main, ["sweep", str(sweep), "--data-dir", str(tiny_data), "--trials", "3"])
    assert res.exit_code == 0 and "3 of 3 trials done" in res.output


def test_machines_that_share_only_postgresql_keep_the_budget_exact(tmp_path, tiny_data, postgres_url):
    sweep = write_sweep(tmp_path)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = ["--data-dir", str(tiny_data), "--storage", postgres_url, "--trials", "6", "--join"]
    procs = [cnnbench(tmp_path / f"machine{i}", sweep, *args, "--workers", "2", env=env) for i in range(2)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    trials = trials_of(postgres_url)
    assert len(trials) == 6 and finished(trials) == 6, [t.state.name for t in trials]
    check_one_to_one(trials, MlflowClient(env["MLFLOW_TRACKING_URI"]))


def start_at_once(n: int, folder: Path, sweep: Path, args: list[str], env: dict) -> list[tuple[int, str]]:
    """Start ``n`` sweep commands in the same instant, each as its own machine; return their exit codes and
    output."""
    gate = folder / "go"
    code = ("import os, sys, time, runpy\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.001)\n"
            "sys.argv = ['cnnbench'] + sys.argv[2:]\n"
            "runpy.run_module('cnnbench', run_name='__main__')\n")
    procs = []
    for i in range(n):
        home = folder / f"machine{i}"
        home.mkdir(parents=True)
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(gate), "sweep", str(sweep), *args],
                                      cwd=home, env={**os.environ, "CNNBENCH_LOCK_DIR": str(home), **env},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(2)  # every interpreter is waiting at the gate: they start together
    gate.touch()
    return [finish(p, timeout=900) for p in procs]


@pytest.mark.parametrize("n", [4, pytest.param(16, marks=pytest.mark.slow)])
def test_workers_started_at_once_on_fresh_local_stores_all_work(tmp_path, tiny_data, n):
    sweep = write_sweep(tmp_path)
    journal = tmp_path / "study.log"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    results = start_at_once(n, tmp_path, sweep, ["--data-dir", str(tiny_data), "--storage", str(journal),
                                                 "--trials", str(n), "--join"], env)
    assert [code for code, _ in results] == [0] * n, [out[-800:] for code, out in results if code]
    trials = trials_of(str(journal))
    assert len(trials) == n and finished(trials) == n
    check_one_to_one(trials, MlflowClient(env["MLFLOW_TRACKING_URI"]))


@pytest.mark.parametrize("n", [4, pytest.param(16, marks=pytest.mark.slow)])
def test_workers_started_at_once_on_fresh_postgresql_and_mlflow_server_all_work(tmp_path, tiny_data, postgres_url,
                                                                                 mlflow_server, n):
    sweep = write_sweep(tmp_path)
    results = start_at_once(n, tmp_path, sweep, ["--data-dir", str(tiny_data), "--storage", postgres_url,
                                                 "--trials", str(n), "--join"],
                            {"MLFLOW_TRACKING_URI": mlflow_server})
    assert [code for code, _ in results] == [0] * n, [out[-800:] for code, out in results if code]
    # MLflow printed two lines of links as each run ended, and the sweep pointed at a local `mlflow ui`
    assert not [out for _, out in results if "View run" in out or f"compare the runs at {mlflow_server};" not in out]
    trials = trials_of(postgres_url)
    assert len(trials) == n and finished(trials) == n
    check_one_to_one(trials, MlflowClient(mlflow_server))
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    # A run deleted on the server (in `mlflow ui`, say) is left out of `best`, which asks the server through MLflow.
    ranked = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: -t.values[0])
    MlflowClient(mlflow_server).delete_run(ranked[0].user_attrs["mlflow_run_id"])
    done = subprocess.run([sys.executable, "-m", "cnnbench", "best", "--storage", postgres_url, "--json"],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert [row["trial"] for row in json.loads(done.stdout)] == [t.number for t in ranked[1:6]]
    assert done.stderr.startswith(f"note: left out trial {ranked[0].number}: its MLflow run "), done.stderr


@pytest.mark.slow
def test_a_sweep_with_several_workers_against_postgresql_and_an_mlflow_server(tmp_path, tiny_data, postgres_url,
                                                                               mlflow_server):
    sweep = write_sweep(tmp_path, epochs=2)
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    code, output = finish(cnnbench(tmp_path, sweep, "--data-dir", str(tiny_data), "--storage", postgres_url,
                                   "--workers", "3", "--trials", "6", env=env))
    assert code == 0, output
    # MLflow printed two lines of links as each run ended, and the sweep pointed at a local `mlflow ui`
    assert "View run" not in output and f"compare the runs at {mlflow_server}; export the winner" in output, output
    trials = trials_of(postgres_url)
    assert len(trials) == 6 and finished(trials) == 6
    assert len({t.user_attrs["cnnbench.worker"] for t in trials}) > 1
    check_one_to_one(trials, MlflowClient(mlflow_server))
    # The weights went to the server's artifact store and come back from it.
    done = subprocess.run([sys.executable, "-m", "cnnbench", "best", "--storage", postgres_url, "--export", "out"],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert list((tmp_path / "artifacts").rglob("model.safetensors"))


# Fault tolerance


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_killed_workers_are_replaced_and_their_trials_retried(tmp_path, tiny_data, storage, request):
    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else None
    sweep = write_sweep(tmp_path, epochs=LONG, batch=4)
    args = ["--data-dir", str(tiny_data), "--workers", "2", "--trials", "3"] + (["--storage", url] if url else [])
    proc = cnnbench(tmp_path, sweep, *args)
    killed = []
    try:
        for _ in range(2):  # twice, each time a worker in the middle of a trial
            victim = wait_for(lambda: next((t for t in trials_of(url) if t.state.name == "RUNNING"
                                            and t.intermediate_values and t.number not in killed), None))
            os.kill(int(victim.user_attrs["cnnbench.worker"].rpartition(":")[2]), signal.SIGKILL)
            killed.append(victim.number)
        code, output = finish(proc)
    finally:
        proc.kill()
    assert code == 0, output
    assert output.count("was killed by signal 9; starting another") == 2
    trials = trials_of(url)
    assert finished(trials) == 3 and "RUNNING" not in {t.state.name for t in trials}
    for number in killed:
        dead = trials[number]
        assert dead.state.name == "FAIL" and dead.user_attrs["reason"].endswith("died")
        retry = next(t for t in trials if t.user_attrs.get("retry_of") == number)
        assert retry.params == dead.params
        assert retry.user_attrs["attempt"] == dead.user_attrs.get("attempt", 1) + 1
    check_one_to_one(trials, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert not list((tmp_path / "cnnbench-checkpoints").rglob("*.ckpt*"))


def test_a_worker_lost_with_its_machine_is_failed_by_its_heartbeat_and_retried(tmp_path, postgres_url):
    from optuna.storages import RDBStorage

    from cnnbench.sweep import WORKER_ATTR, recover
    from cnnbench.tracking import Tracker

    tracker = Tracker("lost")
    storage = RDBStorage(postgres_url, heartbeat_interval=1, grace_period=5)
    study = optuna.create_study(study_name="lost", storage=storage)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1)})
    trial.set_user_attr(WORKER_ATTR, "a-machine-that-is-gone:4242")
    storage.record_heartbeat(trial._trial_id)
    assert recover(study, tracker) == []  # its heartbeat is fresh: it is left alone
    time.sleep(6)
    assert recover(study, tracker) == [trial.number]
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["reason"] == "worker a-machine-that-is-gone:4242 died"
    assert trials[1].state.name == "WAITING" and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].system_attrs["fixed_params"] == trials[0].params


def test_a_checkpoint_write_killed_part_way_leaves_the_previous_one_loadable(tmp_path):
    code = ("import sys, torch\n"
            "from cnnbench.train import save_checkpoint\n"
            "i = 0\n"
            "while True:\n"
            "    i += 1\n"
            "    save_checkpoint(sys.argv[1], {'i': i, 'w': torch.full((1 << 20,), float(i))})\n"
            "    print(i, flush=True)\n")
    from cnnbench.train import load_checkpoint

    path = tmp_path / "trial.ckpt"
    seen = 0
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        written = int(proc.stdout.readline())  # at least one complete write in this round
        time.sleep(0.05 + 0.07 * attempt)  # then die somewhere inside a later one
        proc.kill()
        proc.wait()
        state = load_checkpoint(path)
        assert state["i"] >= written and bool((state["w"] == float(state["i"])).all())
        seen += 1
    assert seen == 5


def test_the_mlflow_server_going_away_mid_sweep_delays_the_sweep_and_loses_nothing(tmp_path, tiny_data,
                                                                                  mlflow_server):
    proxy = Proxy(int(mlflow_server.rsplit(":", 1)[1])).start()
    uri = f"http://127.0.0.1:{proxy.port}"
    sweep = write_sweep(tmp_path, epochs=LONG, batch=4)
    env = {"MLFLOW_TRACKING_URI": uri, "CNNBENCH_PATIENCE_SECONDS": "180"}
    proc = cnnbench(tmp_path, sweep, "--data-dir", str(tiny_data), "--trials", "2", env=env)
    try:
        watched = Watched(proc)
        wait_for(lambda: running_trial(None))
        proxy.stop()
        wait_for(lambda: watched.said("is unreachable"))  # the outage has met a call, however loaded the machine
        proxy.start()
        code, output = watched.finish()
    finally:
        proc.kill()
    assert code == 0, output
    assert "the MLflow store http://127.0.0.1" in output and "is unreachable" in output
    assert "is reachable again" in output
    trials = trials_of(None)
    assert len(trials) == 2 and finished(trials) == 2
    check_one_to_one(trials, MlflowClient(uri))

    # Down for longer than the worker waits: it stops with the reason; the study completes once it is back.
    more = ["--data-dir", str(tiny_data), "--trials", "4"]
    proc = cnnbench(tmp_path, sweep, *more, env={**env, "CNNBENCH_PATIENCE_SECONDS": "4"})
    wait_for(lambda: running_trial(None), proc=proc)
    proxy.stop()
    code, output = finish(proc)
    assert code == 1 and "was unreachable for 4 s" in output, output
    proxy.start()
    code, output = finish(cnnbench(tmp_path, sweep, *more, env=env))
    assert code == 0, output
    trials = trials_of(None)
    assert finished(trials) == 4 and "RUNNING" not in {t.state.name for t in trials}
    check_one_to_one(trials, MlflowClient(uri))
    proxy.stop()


def test_postgresql_going_away_mid_sweep_delays_the_sweep_and_loses_nothing(tmp_path, tiny_data, postgres_url):
    proxy = Proxy(5432).start()
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sweep = write_sweep(tmp_path, epochs=LONG, batch=4)
    env = {"CNNBENCH_PATIENCE_SECONDS": "180"}
    proc = cnnbench(tmp_path, sweep, "--data-dir", str(tiny_data), "--storage", url, "--trials", "2", env=env)
    try:
        watched = Watched(proc)
        wait_for(lambda: running_trial(postgres_url))
        proxy.stop()
        wait_for(lambda: watched.said("is unreachable"))  # the outage has met a call, however loaded the machine
        proxy.start()
        code, output = watched.finish()
    finally:
        proc.kill()
    assert code == 0, output
    assert f"the study storage postgresql://***@127.0.0.1:{proxy.port}/" in output  # the user name stays hidden
    assert "is unreachable" in output and "is reachable again" in output
    trials = trials_of(postgres_url)
    assert len(trials) == 2 and finished(trials) == 2, [t.state.name for t in trials]
    check_one_to_one(trials, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))

    # Down for longer than the worker waits: it stops with the reason; the study completes once it is back.
    sweep_more = ["--data-dir", str(tiny_data), "--storage", url, "--trials", "4"]
    proc = cnnbench(tmp_path, sweep, *sweep_more, env={"CNNBENCH_PATIENCE_SECONDS": "4"})
    wait_for(lambda: running_trial(postgres_url), proc=proc)
    proxy.stop()
    code, output = finish(proc)
    assert code == 1 and "was unreachable for 4 s" in output, output
    proxy.start()
    code, output = finish(cnnbench(tmp_path, sweep, *sweep_more))
    assert code == 0, output
    trials = trials_of(postgres_url)
    assert finished(trials) == 4 and "RUNNING" not in {t.state.name for t in trials}
    check_one_to_one(trials, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    proxy.stop()


# Security


def test_a_study_named_by_another_tool_cannot_lead_an_export_out_of_its_folder(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend("cnnbench-journal.log"))
    study = optuna.create_study(study_name="../../outside", storage=storage, direction="maximize")
    trial = study.ask()
    study.tell(trial, 0.5)
    res = CliRunner().invoke(main, ["best", "--study", "../../outside", "--export"])
    assert res.exit_code == 2 and "cannot name an export folder" in res.output
    assert not (tmp_path.parent.parent / "outside-trial0").exists()


def test_a_server_started_for_other_machines_warns(tmp_path, monkeypatch):
    import warnings

    from cnnbench import tracking

    started = []

    def popen(command, **kwargs):
        started.append(command)
        raise RuntimeError("not started in this test")

    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.warns(UserWarning, match="without authentication"), pytest.raises(RuntimeError):
        with tracking.server("sqlite:///x.db", tmp_path, host="0.0.0.0"):
            pass
    assert started[0][started[0].index("--host") + 1] == "0.0.0.0"
    with warnings.catch_warnings(), pytest.raises(RuntimeError):
        warnings.simplefilter("error")
        with tracking.server("sqlite:///x.db", tmp_path):
            pass
    assert started[1][started[1].index("--host") + 1] == "127.0.0.1"


def test_params_another_command_logs_to_the_same_run_at_the_same_moment_are_not_an_error(tmp_path, monkeypatch):
    # Seen with 16 commands of one study ending together: each records the study's best on the sweep's run.
    import mlflow
    import sqlalchemy.exc

    from cnnbench.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("race")
    run_id = tracker.start("sweep-race", tags={})
    other, real = MlflowClient(), tracker.client.log_batch
    raced = []

    def log_batch(run, **kwargs):
        if kwargs.get("params") and not raced:
            raced.append(1)
            other.log_batch(run, params=kwargs["params"][:1])  # the other command's insert lands first
            cause = sqlalchemy.exc.IntegrityError("INSERT INTO params", {}, Exception("UNIQUE constraint failed"))
            raise mlflow.exceptions.MlflowException(f"(sqlite3.IntegrityError) {cause}") from cause
        return real(run, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", log_batch)
    tracker.log_params(run_id, {"best.lr": 0.01, "best.width": 4})
    assert raced and MlflowClient().get_run(run_id).data.params == {"best.lr": "0.01", "best.width": "4"}
    with pytest.raises(mlflow.exceptions.MlflowException, match="Changing param values is not allowed"):
        tracker.log_params(run_id, {"best.lr": 0.02})  # a real conflict is still an error


def refused_once(real):
    """Return ``real`` wrapped to meet a refused connection on its first call, and the list of calls it refused."""
    import requests

    refused = []

    def call(*args, **kwargs):
        if not refused:
            refused.append(args)
            raise requests.exceptions.ConnectionError("connection refused")
        return real(*args, **kwargs)

    return call, refused


def test_reading_a_run_back_rides_out_a_server_blip(tmp_path, monkeypatch, capfd):
    # The sweep reads runs back when it ends and when it exports; those reads wait for the store like its writes.
    from cnnbench.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("blip")
    run_id = tracker.start("trial-0", tags={"cnnbench.precision": "bf16"}, params={"lr": 0.01})
    get_run, refused = refused_once(tracker.client.get_run)
    monkeypatch.setattr(tracker.client, "get_run", get_run)
    data = tracker.run_data(run_id)
    assert refused == [(run_id,)] and data.tags["cnnbench.precision"] == "bf16" and data.params["lr"] == "0.01"
    assert "is unreachable" in capfd.readouterr().err


def test_logging_and_fetching_a_model_ride_out_a_server_blip(tmp_path, monkeypatch, capfd):
    # At the end of every command the sweep fetches the best trial's weights and logs them as an MLflow model.
    import mlflow
    import torch

    from cnnbench import tracking
    from cnnbench.tracking import Tracker, download_artifact

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("blip")
    run_id = tracker.start("trial-0", tags={})
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "weights.txt").write_text("w")
    tracker.log_artifacts(run_id, tmp_path / "up")

    fetch, fetch_refused = refused_once(mlflow.artifacts.download_artifacts)
    monkeypatch.setattr(tracking.mlflow.artifacts, "download_artifacts", fetch)
    assert download_artifact(run_id, "weights.txt", tmp_path / "down").read_text() == "w" and fetch_refused

    log, log_refused = refused_once(mlflow.pytorch.log_model)
    monkeypatch.setattr(tracking.mlflow.pytorch, "log_model", log)
    tracker.log_pytorch_model(run_id, torch.nn.Linear(3, 2), torch.zeros(1, 3))
    assert log_refused and mlflow.active_run() is None
    assert len(mlflow.search_logged_models(experiment_ids=[tracker.experiment_id], output_format="list")) == 1
    assert capfd.readouterr().err.count("is unreachable") == 2


def test_a_ctrl_c_while_a_finished_run_s_model_is_logged_leaves_the_run_finished(tmp_path, monkeypatch):
    # The sweep logs the best trial's model after the study: a Ctrl-C then made the ended run FAILED (MLflow's
    # start_run ends a run FAILED on any exception), although the trial was complete.
    import mlflow
    import mlflow.pytorch  # a lazy module: patched before it is loaded, the patch would not be seen
    import torch

    from cnnbench import tracking
    from cnnbench.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("cut")
    done = tracker.start("trial-0", tags={})
    tracker.end(done, "FINISHED")

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking.mlflow.pytorch, "log_model", cut)
    with pytest.raises(KeyboardInterrupt):
        tracker.log_pytorch_model(done, torch.nn.Linear(3, 2), torch.zeros(1, 3))
    assert mlflow.active_run() is None and tracker.client.get_run(done).info.status == "FINISHED"


def test_commands_ending_together_record_the_newest_best_on_the_sweep_run(tmp_path, monkeypatch):
    # CI on 2026-12-03: of four commands ending together, two read the study's best, a third recorded a newer
    # best on the sweep's run in between, and MLflow refused the first two's params ("Changing param values").
    from cnnbench import space, sweep
    from cnnbench.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    definition = space.Sweep(dataset="mnist", study="ending", trials=2, epochs=1, sampler="random", pruner="none",
                             space={"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                             tracking={"log_model": "none", "plots": False})
    study, tracker = sweep.open_study(definition), Tracker("ending")
    parent = tracker.start("sweep-ending", tags={})
    lr = optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)

    def add(value: float, rate: float) -> None:
        run_id = tracker.start(f"trial-{len(study.trials)}", tags={}, parent=parent)
        study.add_trial(optuna.trial.create_trial(params={"lr": rate}, distributions={"lr": lr}, value=value,
                                                  user_attrs={"mlflow_run_id": run_id}))

    add(0.90, 0.01)
    first, read, failed = Tracker("ending"), threading.Event(), []
    real = first.log_params

    def slow(run_id, params):  # the first command has read its best and is about to record it
        read.set()
        time.sleep(1.5)
        real(run_id, params)

    monkeypatch.setattr(first, "log_params", slow)

    def end_first() -> None:
        try:
            sweep._summarise(definition, study, first, parent, None)
        except Exception as err:  # noqa: BLE001 - the assertion below shows it
            failed.append(err)

    ending = threading.Thread(target=end_first)
    ending.start()
    assert read.wait(30)
    add(0.95, 0.02)  # a trial of the second command completes meanwhile, better
    outcome = sweep._summarise(definition, optuna.load_study(study_name="ending", storage=open_storage(None)),
                               Tracker("ending"), parent, None)
    ending.join(30)
    assert not failed, failed
    assert outcome.best_trial == 1
    run = MlflowClient().get_run(parent)
    assert run.data.tags["cnnbench.best_trial"] == "1" and run.data.metrics["best_val_acc"] == 0.95
    recorded = run.data.tags.get("best.lr", run.data.params["best.lr"])
    assert float(recorded) == 0.02
