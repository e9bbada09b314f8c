"""Runs share the CPU cores: each takes its share of the threads when it starts, and gives them back after."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from cnnbench import cores
from cnnbench.cli import main

pytestmark = pytest.mark.skipif(not cores.enabled(), reason="no flock on this platform: runs keep their threads")

HOLD = ("from cnnbench import cores; import time\n"
        "with cores.share(threads=2) as n:\n print(n.threads, flush=True); time.sleep(60)")


@pytest.fixture(autouse=True)
def _own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNBENCH_CORES_DIR", str(tmp_path / "cores"))
    monkeypatch.setattr(cores, "available", lambda: {0, 1})
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_second_run_on_the_same_cores_halves_the_threads_and_both_are_given_back(tmp_path):
    with cores.share(threads=2) as first:
        assert first.threads == 2 and torch.get_num_threads() == 2
        with cores.share(threads=2) as second:
            assert second.threads == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cores.share(threads=2) as third:  # the second has ended
            assert third.threads == 1
    assert list((tmp_path / "cores").iterdir()) == []


def test_a_run_never_takes_more_threads_than_it_had_nor_fewer_than_one(monkeypatch):
    monkeypatch.setattr(cores, "available", lambda: {0, 1, 2, 3})
    with cores.share(threads=1) as one:
        assert one.threads == 1
        with cores.share(threads=8) as other, cores.share(threads=8) as third:
            assert (other.threads, third.threads) == (2, 1)  # 4 cores: 4 // 2, then 4 // 3
            with cores.share(threads=8), cores.share(threads=8) as fifth:
                assert fifth.threads == 1  # 4 // 5 is none: one thread


def test_runs_on_other_cpus_do_not_count(monkeypatch):
    monkeypatch.setattr(cores, "available", lambda: {0, 1})
    with cores.share(threads=2) as low:
        monkeypatch.setattr(cores, "available", lambda: {2, 3})
        with cores.share(threads=2) as high:
            assert (low.threads, high.threads) == (2, 2)
            monkeypatch.setattr(cores, "available", lambda: {1, 2})
            with cores.share(threads=2) as across:
                assert across.threads == 1  # overlaps both: 2 cores // 3 runs, at least one


def test_a_run_killed_leaves_no_claim_behind(tmp_path):
    env = {**os.environ, "CNNBENCH_CORES_DIR": str(tmp_path / "cores"), "OMP_NUM_THREADS": "2"}
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() in {"1", "2"}  # its own CPUs: one where the machine has one
        with cores.share(threads=2) as beside:
            assert beside.threads == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(list((tmp_path / "cores").glob("*.cpus"))) == 1  # the dead run's file, still there
    with cores.share(threads=2) as alone:
        assert alone.threads == 2
    assert list((tmp_path / "cores").iterdir()) == []  # removed by the run that found it unlocked


def test_sharing_turned_off_or_impossible_keeps_the_threads(tmp_path, monkeypatch):
    with cores.share(threads=2):
        monkeypatch.setenv("CNNBENCH_SHARE_CORES", "0")
        with cores.share(threads=2) as off, cores.share(threads=3) as more_than_cores:
            assert (off.threads, more_than_cores.threads) == (2, 3)
        monkeypatch.delenv("CNNBENCH_SHARE_CORES")
        with cores.share(False, threads=2) as on_a_gpu:  # a run on an accelerator claims nothing
            assert on_a_gpu == cores.Share(2, 2) and len(list((tmp_path / "cores").glob("*.cpus"))) == 1
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("CNNBENCH_CORES_DIR", str(tmp_path / "file"))  # not a folder: nowhere to register
        with cores.share(threads=2) as unregistered:
            assert unregistered.threads == 2


def test_train_beside_another_run_says_it_shares_and_records_its_threads(tiny_data, tmp_path):
    torch.set_num_threads(2)
    args = ["train", "mnist", "--data-dir", str(tiny_data), "--epochs", "1", "--arch", "two_conv", "--width", "4"]
    with cores.share(threads=2):
        shared = CliRunner().invoke(main, args, catch_exceptions=False)
        as_json = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert shared.exit_code == 0, shared.output
    assert "sharing the CPU with other cnnbench runs: training on 1 of 2 threads" in shared.output
    assert json.loads(as_json.output.strip().splitlines()[-1])["threads"] == 1
    alone = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert json.loads(alone.output.strip().splitlines()[-1])["threads"] == 2 and torch.get_num_threads() == 2


SWEEP = """
dataset: mnist
study: shared
trials: 2
epochs: 1
sampler: random
pruner: none
fixed: {val_fraction: 0.2, batch_size: 32, device: cpu, arch: two_conv, width: 4}
space:
  lr: {low: 1e-3, high: 1e-2, log: true}
tracking: {log_model: none, plots: false}
"""


def test_each_trial_of_a_sweep_takes_its_share_and_records_it(tiny_data, tmp_path):
    from mlflow.tracking import MlflowClient

    torch.set_num_threads(2)
    path = tmp_path / "shared.yaml"
    path.write_text(SWEEP)
    with cores.share(threads=2):  # another run on the same two cores for the whole sweep
        res = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tiny_data)], catch_exceptions=False)
        assert list((tmp_path / "cores").glob("*.cpus")) and torch.get_num_threads() == 2
    assert res.exit_code == 0, res.output
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id], "tags.`cnnbench.trial` != ''")
    assert sorted(r.data.tags["cnnbench.threads"] for r in runs) == ["1", "1"]
    assert re.search(r"trial 0 \(on 1 of 2 threads, [^)]+ s\) complete", res.output), res.output
    assert "trial 1 (on 1 of 2 threads, " in res.output
    alone = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tiny_data), "--trials", "3"],
                               catch_exceptions=False)
    assert re.search(r"trial 2 \([^)]+ s\) complete", alone.output) and "threads" not in alone.output
