"""Sweeps end to end through the CLI on tiny data, checked through Optuna's and MLflow's own APIs."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import cnnbench
from cnnbench.cli import main
from cnnbench.storage import DEFAULT_JOURNAL
from cnnbench.sweep import _duration

TINY = """
dataset: mnist
study: tiny
trials: 4
epochs: 2
pruner: median
baselines: [seed004]
fixed: {val_fraction: 0.2, batch_size: 32, device: cpu}
space:
  arch: {choices: [two_conv, vgg]}
  width: {choices: [4, 8]}
  depth: {choices: [1], when: {arch: vgg}}
  optimizer: {choices: [adam, sgd]}
  lr: {low: 1e-3, high: 1e-1, log: true}
  momentum: {low: 0.5, high: 0.9, when: {optimizer: sgd}}
tracking: {log_model: best}
"""

#: Four grid points, one of which cannot be built: four_conv with 7x7 kernels (both build with 3x3, two_conv with 7x7).
GRID = """
dataset: mnist
study: tiny
trials: 4
epochs: 1
sampler: grid
pruner: none
fixed: {batch_size: 32, device: cpu}
space:
  arch: {choices: [four_conv, two_conv]}
  kernel_size: {choices: [3, 7]}
"""


def sweep(tmp_path, text, *args):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return CliRunner().invoke(main, ["sweep", str(path), *args], catch_exceptions=False)


def trials_of(study: str) -> list:
    return optuna.load_study(study_name=study, storage=journal()).get_trials()


def journal():
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(DEFAULT_JOURNAL))


@pytest.fixture
def swept(tmp_path, tiny_data):
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    return res


def test_sweep_records_every_trial_in_optuna_and_mlflow(swept, tmp_path):
    study = optuna.load_study(study_name="tiny", storage=journal())
    trials = study.get_trials()
    assert len(trials) == 4 and trials[0].user_attrs["baseline"] == "seed004"
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)

    client = MlflowClient()
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("cnnbench.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status != "RUNNING" for r in runs)

    by_id = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.run_name.startswith(f"trial-{t.number}")
        assert run.data.tags["cnnbench.trial"] == str(t.number)
        assert run.data.tags["cnnbench.state"] == t.state.name
        for key, value in t.params.items():
            assert run.data.params[key] == str(value)
        assert run.data.params["epochs"] == "2" and run.data.params["dataset"] == "mnist"
        tags = run.data.tags  # what ran the trial, so that runs from several machines compare
        assert tags["cnnbench.host"] == socket.gethostname() and tags["cnnbench.version"] == cnnbench.__version__
        assert tags["cnnbench.torch"] == torch.__version__ and tags["cnnbench.gpu"] == ""
        assert tags["cnnbench.cpu"] and int(tags["cnnbench.threads"]) >= 1
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["best_val_acc"] == pytest.approx(t.value)
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert [m.step for m in history] == [1, 2]
            assert max(m.value for m in history) == pytest.approx(t.value)
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"learning_curves.png", "confusion_matrix.png", "misclassified.png",
                    "model.safetensors"} <= names
            weights = Path(run.info.artifact_uri.removeprefix("file://")) / "model.safetensors"
            mask = os.umask(0o022)
            os.umask(mask)  # safetensors makes its files 0600: no one else reading a shared store could read them
            assert oct(weights.stat().st_mode & 0o777) == oct(0o666 & ~mask)
    best_run = client.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    assert best_run.data.tags.get("cnnbench.logged_model") == "1"
    assert sum(r.data.tags.get("cnnbench.logged_model") == "1" for r in children) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(study.best_value)
    study_plots = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert "study/optimization_history.png" in study_plots


def test_a_finished_sweep_run_again_does_not_draw_its_study_plots_again(swept, tmp_path, tiny_data, monkeypatch):
    # They were drawn and logged again on every run of a finished study's command: 1.3 s of an 8 s no-op.
    from optuna.visualization import matplotlib as ovm

    client = MlflowClient()
    exp = client.get_experiment_by_name("tiny")
    parent = client.search_runs([exp.experiment_id], "tags.`cnnbench.role` = 'sweep'")[0]
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials_of("tiny"))
    assert parent.data.tags["cnnbench.plotted_trials"] == str(complete)

    def drawn(*args, **kwargs):
        raise AssertionError("the study plots were drawn again")

    monkeypatch.setattr(ovm, "plot_optimization_history", drawn)
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "study")} >= {"study/optimization_history.png"}


def test_the_best_configuration_is_printed_with_floats_to_four_digits(tmp_path, tiny_data):
    res = sweep(tmp_path, """
        dataset: mnist
        study: floats
        trials: 2
        epochs: 1
        sampler: random
        pruner: none
        baselines: []
        fixed: {arch: two_conv, width: 4, batch_size: 32, device: cpu}
        space:
          lr: {low: 1e-3, high: 1e-1, log: true}
        tracking: {log_model: none, plots: false}
        """, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    lr = optuna.load_study(study_name="floats", storage=journal()).best_params["lr"]
    assert f"best configuration: lr={lr:.4g}\n" in res.output and len(f"{lr:.4g}") < len(str(lr))


def test_a_finished_sweep_leaves_no_empty_checkpoint_folder(swept, tmp_path):
    # Each trial's checkpoint goes when the trial ends; the folders that held them go with the last command.
    assert not (tmp_path / "cnnbench-checkpoints").exists()


def test_rerun_resumes_and_trials_is_a_total(swept, tmp_path, tiny_data):
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "6")
    assert res.exit_code == 0, res.output
    assert "4 of 6 trials done" in res.output and "note: study" not in res.output
    study = optuna.load_study(study_name="tiny", storage=journal())
    assert len(study.get_trials()) == 6
    assert sum(t.user_attrs.get("baseline") == "seed004" for t in study.get_trials()) == 1
    drawn = [t.params["lr"] for t in study.get_trials() if t.params]
    assert len(set(drawn)) == len(drawn) == 5  # the resumed sampler does not draw the first run's points again
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "6", "--sampler", "random")
    assert "6 of 6 trials done, nothing to run (raise --trials for more)" in res.output
    # a resume may draw with another sampler, as Optuna allows, but it said nothing of it
    assert ("note: study 'tiny' began with the tpe sampler; this command's trials use the random sampler (each "
            "trial's MLflow run records its own)") in res.output, res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "6", "--seed", "7")  # and another seed
    assert "note: study 'tiny' began with seed 0; this command's trials use seed 7 (each" in res.output, res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "5")
    assert "6 trials done, 5 asked for, nothing to run" in res.output
    assert len(optuna.load_study(study_name="tiny", storage=journal()).get_trials()) == 6
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sum(r.data.tags.get("cnnbench.role") == "sweep" for r in runs) == 1


def test_a_baseline_added_to_the_sweep_file_runs_when_the_study_resumes(tmp_path, tiny_data):
    # Baselines were queued when the study was made only: one added later never ran, whatever --trials said.
    res = sweep(tmp_path, TINY.replace("baselines: [seed004]", "baselines: []"), "--data-dir", str(tiny_data),
                "--trials", "2", "--epochs", "1")
    assert res.exit_code == 0, res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "3", "--epochs", "1")
    assert res.exit_code == 0, res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "4", "--epochs", "1")  # not twice
    assert res.exit_code == 0, res.output
    assert [t.user_attrs.get("baseline") for t in trials_of("tiny")] == [None, None, "seed004", None]


def test_a_sweep_run_again_from_scratch_with_its_seed_draws_the_same_trials(tmp_path, tiny_data, monkeypatch):
    drawn = []
    for folder in (tmp_path / "first", tmp_path / "again"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        res = sweep(folder, TINY, "--data-dir", str(tiny_data), "--epochs", "1")
        assert res.exit_code == 0, res.output
        drawn.append([t.params for t in optuna.load_study(study_name="tiny", storage=journal()).get_trials()])
    assert drawn[0] == drawn[1] and len(drawn[0]) == 4


def test_a_sweep_stopped_by_its_timeout_says_so_and_how_to_go_on(tmp_path, tiny_data):
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--timeout", "0.001")
    assert res.exit_code == 0, res.output
    done = len([t for t in trials_of("tiny") if t.state.is_finished()])
    assert done < 4
    assert f"the timeout (0.001 s) stopped the sweep at {done} of 4 trials; run the same command to go on" in res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data))  # resumed without one: runs the rest, says nothing
    assert res.exit_code == 0 and "4 of 4 done" in res.output and "timeout" not in res.output


def interrupt_training(monkeypatch, at: int) -> None:
    """Make the sweep's ``at``-th training (counted from 1) stop with a Ctrl-C as it begins."""
    import cnnbench.sweep as sweeps

    calls, fit = [], sweeps.fit

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return fit(*args, **kwargs)

    monkeypatch.setattr(sweeps, "fit", interrupted)


def test_an_interrupted_sweep_counts_its_cut_trial_apart_from_failures(tmp_path, tiny_data, monkeypatch):
    interrupt_training(monkeypatch, at=2)
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--epochs", "1")
    assert res.exit_code == 130 and "interrupted; to resume, run" in res.output
    cut = [t for t in trials_of("tiny") if t.state == optuna.trial.TrialState.FAIL]
    assert len(cut) == 1 and cut[0].user_attrs["reason"] == "interrupted"
    res = CliRunner().invoke(main, ["best", "--trial", str(cut[0].number), "--export"])
    assert res.exit_code == 2 and f"trial {cut[0].number} of study 'tiny' failed (interrupted): only a" in res.output
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--epochs", "1", "--trials", "5")
    assert res.exit_code == 0, res.output
    assert "1 of 5 trials done" in res.output and ", 0 failed, 1 interrupted;" in res.output
    # The sweep's MLflow run counts it as the summary does, and records the target the resume asked for beside the
    # first (MLflow params are written once).
    parent = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("tiny").experiment_id],
                                        "tags.`cnnbench.role` = 'sweep'")[0].data
    assert (parent.metrics["trials_failed"], parent.metrics["trials_interrupted"]) == (0, 1)
    assert (parent.params["trials"], parent.tags["trials"]) == ("4", "5")


def test_a_cut_trial_is_tried_again_before_the_baselines_queued_behind_it(tmp_path, tiny_data, monkeypatch):
    interrupt_training(monkeypatch, at=1)
    text = TINY.replace("baselines: [seed004]", "baselines: [seed004, seed002]")
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data), "--epochs", "1")
    assert res.exit_code == 130, res.output
    # The retry was queued behind seed002 and ran after it, where the docs say a cut trial is tried again first (with
    # too small a budget left, it did not run at all).
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data), "--epochs", "1", "--trials", "2")
    assert res.exit_code == 0, res.output
    ran = [(t.user_attrs.get("baseline"), t.user_attrs.get("retry_of"), t.state.name) for t in sorted(
        trials_of("tiny"), key=lambda t: (t.datetime_start is None, t.datetime_start))]
    assert ran == [("seed004", None, "FAIL"), ("seed004", 0, "COMPLETE"), ("seed002", None, "COMPLETE")], ran


def test_a_ctrl_c_between_a_trial_s_run_and_its_training_is_counted_as_an_interruption(tmp_path, tiny_data,
                                                                                       monkeypatch):
    # With two workers, a Ctrl-C landed after a trial's run was made and before its training began: the trial
    # failed with no reason (counted as an error) and its run stayed RUNNING.
    import cnnbench.sweep as sweeps

    set_attrs = sweeps._set_attrs

    def cut(trial, attrs):
        if "mlflow_run_id" in attrs:
            set_attrs(trial, attrs)
            raise KeyboardInterrupt
        set_attrs(trial, attrs)

    monkeypatch.setattr(sweeps, "_set_attrs", cut)
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--epochs", "1")
    assert res.exit_code == 130, res.output
    [cut_short] = [t for t in trials_of("tiny") if t.state == optuna.trial.TrialState.FAIL]
    assert cut_short.user_attrs["reason"] == "interrupted"
    run = MlflowClient().get_run(cut_short.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["cnnbench.state"] == "FAIL"
    assert run.data.tags["cnnbench.reason"] == "interrupted"


def test_resuming_with_another_space_is_refused_unless_renamed(swept, tmp_path, tiny_data, monkeypatch):
    import cnnbench.data

    changed = TINY.replace("high: 1e-1", "high: 0.5")
    before = (tmp_path / DEFAULT_JOURNAL).read_bytes()
    with monkeypatch.context() as mp:
        mp.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the study was read"))
        res = sweep(tmp_path, changed, "--data-dir", str(tiny_data))
    assert res.exit_code == 2
    assert "space.lr.high: 0.1 -> 0.5" in res.output and "--study" in res.output
    assert (tmp_path / DEFAULT_JOURNAL).read_bytes() == before  # not even a refused creation logged
    res = sweep(tmp_path, changed, "--data-dir", str(tiny_data), "--study", "tiny2", "--trials", "1")
    assert res.exit_code == 0, res.output


def test_diverging_trials_are_pruned_and_the_sweep_goes_on(tmp_path, tiny_data):
    text = TINY.replace("lr: {low: 1e-3, high: 1e-1, log: true}", "lr: {low: 1e10, high: 1e12, log: true}")
    text = text.replace("optimizer: {choices: [adam, sgd]}", "optimizer: {choices: [sgd]}")
    text = text.replace("baselines: [seed004]", "baselines: []")
    text = text.replace("arch: {choices: [two_conv, vgg]}", "arch: {choices: [two_conv]}")  # BatchNorm stays finite
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data), "--trials", "2", "--epochs", "3")
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.user_attrs["reason"].startswith("diverged: loss is not finite at epoch 1") for t in trials)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.cnnbench.state = 'PRUNED'")
    assert len(runs) == 2 and all(r.info.status == "KILLED" for r in runs)


def test_an_unexpected_error_ends_the_sweep_s_run_as_failed_unless_another_command_runs_it(
        tmp_path, tiny_data, monkeypatch):
    from cnnbench import sweep as sweeps

    real = sweeps.work

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sweeps, "work", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "1")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny").experiment_id
    [parent] = client.search_runs([experiment], "tags.cnnbench.role = 'sweep'")
    assert parent.info.status == "FAILED"  # not RUNNING for ever in `mlflow ui`
    monkeypatch.setattr(sweeps, "work", real)
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "1")
    assert res.exit_code == 0, res.output
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    # A command that joined a sweep another machine is running leaves the sweep's run to that one.
    import time

    study = optuna.load_study(study_name="tiny", storage=journal())
    study.set_user_attr(sweeps.LIVE_ATTR, {"elsewhere:1": time.time()})
    monkeypatch.setattr(sweeps, "work", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--trials", "2", "--join")
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_unbuildable_configuration_is_pruned_before_training(tmp_path, tiny_data):
    res = sweep(tmp_path, GRID, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert len({(t.params["arch"], t.params["kernel_size"]) for t in trials}) == 4
    [unbuildable] = [t for t in trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert unbuildable.params == {"arch": "four_conv", "kernel_size": 7}
    assert unbuildable.state == optuna.trial.TrialState.PRUNED
    assert unbuildable.user_attrs["reason"].startswith("unbuildable")
    assert unbuildable.intermediate_values == {}


def test_a_grid_sweep_run_again_after_its_grid_is_tried_starts_no_trial(tmp_path, tiny_data):
    assert sweep(tmp_path, GRID, "--data-dir", str(tiny_data)).exit_code == 0
    res = sweep(tmp_path, GRID, "--data-dir", str(tiny_data), "--trials", "6")  # a larger budget than the grid
    assert res.exit_code == 0, res.output
    assert "the grid's 4 points are all tried, so the sweep stopped at 4 of 6 trials" in res.output
    assert len(optuna.load_study(study_name="tiny", storage=journal()).trials) == 4  # not a fifth, a repeat


def test_a_grid_with_a_conditional_setting_tries_each_combination_once(tmp_path, tiny_data):
    # Four grid points, two of which differ only in vgg's depth for two_conv: three distinct trials, and the
    # twin pruned as a duplicate before training; the grid keeps one order from ask to ask.
    text = GRID.replace("trials: 4", "trials: 8").replace(
        "  arch: {choices: [four_conv, two_conv]}\n  kernel_size: {choices: [3, 7]}",
        "  arch: {choices: [two_conv, vgg]}\n  depth: {choices: [1, 2], when: {arch: vgg}}").replace(
        "batch_size: 32,", "batch_size: 32, width: 4,")
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    complete = [t.params for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(map(str, complete)) == sorted(map(str, [{"arch": "two_conv"}, {"arch": "vgg", "depth": 1},
                                                          {"arch": "vgg", "depth": 2}]))
    [twin] = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert twin.params == {"arch": "two_conv"} and twin.user_attrs["reason"].startswith("duplicate of trial ")
    assert "the grid's 4 points are all tried, so the sweep stopped at 4 of 8 trials" in res.output


@pytest.mark.parametrize("sampler", ["random", "grid"])
def test_a_combination_drawn_again_is_pruned_as_a_duplicate_and_baselines_are_never_twins(tmp_path, tiny_data,
                                                                                          sampler):
    # Two combinations and three sampled trials: random search must draw one again, and does not train it again
    # (the same settings and seed give the same result); the grid draws each once. Two baselines have no sampled
    # settings at all: both run (the grid took the second for the first's duplicate).
    text = GRID.replace("trials: 4", "trials: 5").replace("sampler: grid", f"sampler: {sampler}").replace(
        "pruner: none", "pruner: none\nbaselines: [seed000, seed002]").replace(
        "  arch: {choices: [four_conv, two_conv]}\n", "").replace("batch_size: 32,", "batch_size: 32, arch: two_conv,")
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert [(t.user_attrs.get("baseline"), t.state.name) for t in trials[:2]] == [("seed000", "COMPLETE"),
                                                                                  ("seed002", "COMPLETE")]
    sampled = trials[2:]
    complete = [t for t in sampled if t.state == optuna.trial.TrialState.COMPLETE]
    twins = [t for t in sampled if t.state == optuna.trial.TrialState.PRUNED]
    assert len({str(t.params) for t in complete}) == len(complete) == 2
    assert len(twins) == (0 if sampler == "grid" else 1)
    for twin in twins:
        first = int(twin.user_attrs["reason"].split()[3])
        assert trials[first].params == twin.params and trials[first].state == optuna.trial.TrialState.COMPLETE
        assert twin.user_attrs["reason"] == (f"duplicate of trial {first} (complete, val_acc {trials[first].value:.4f}"
                                             "), with the same settings and seed: not trained again")
        assert "train_seconds" not in twin.user_attrs and not twin.intermediate_values
        assert twin.user_attrs["cnnbench.duplicate_of"] == first
        res = CliRunner().invoke(main, ["best", "--trial", str(twin.number), "--export"])
        assert res.exit_code == 2 and f"fix: trial {first} trained these settings: `cnnbench best --trial {first}`" \
            in res.output, res.output


def test_without_a_terminal_the_sweep_prints_a_line_per_finished_trial(tmp_path, tiny_data):
    res = sweep(tmp_path, GRID, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("trial ")]
    study = optuna.load_study(study_name="tiny", storage=journal())
    best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    assert len(lines) == 4 and lines[-1].endswith(f"4 of 4 done, {best}")
    for line, trial in zip(lines, study.trials):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            took = _duration(trial.duration.total_seconds())
            assert line.startswith(f"trial {trial.number} ({trial.params['arch']}, {took}) complete: val_acc "
                                   f"{trial.value:.4f}; ")
        else:
            assert re.match(rf"trial {trial.number} \(four_conv, [^)]+ s\) pruned: unbuildable: ", line), line


@pytest.mark.parametrize("seconds, said", [(0.04, "0.0 s"), (52.14, "52.1 s"), (59.96, "1 min 00 s"),
                                           (185.4, "3 min 05 s"), (3599.6, "1 h 00 min"), (3725, "1 h 02 min")])
def test_a_trial_s_time_reads_in_the_unit_a_person_would_use(seconds, said):
    assert _duration(seconds) == said


def test_median_pruner_stops_poor_trials_early(tmp_path, tiny_data):
    text = """
    dataset: mnist
    study: tiny
    trials: 9
    epochs: 3
    sampler: random
    pruner: median
    seed: 3
    fixed: {batch_size: 32, device: cpu, arch: two_conv, width: 4, val_fraction: 0.2}
    space:
      lr: {choices: [1e-6, 3e-2]}
      weight_decay: {low: 1e-9, high: 1e-8, log: true}   # too small to matter: it makes each trial a new one
    tracking: {log_model: none, plots: false}
    """
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert not any("duplicate" in t.user_attrs["reason"] for t in pruned)
    assert pruned and all(t.params["lr"] == 1e-6 for t in pruned)
    # Steps count half epochs: step 6 is the end of the third and last epoch, which no pruned trial reached.
    assert all(max(t.intermediate_values) < 6 for t in pruned)


def test_baselines_train_every_epoch_where_the_pruner_stops_the_sampled_trials(tmp_path, tiny_data, monkeypatch):
    import cnnbench.sweep

    # A pruner that would stop every trial after its first epoch.
    monkeypatch.setattr(cnnbench.sweep, "make_pruner", lambda sweep, steps: optuna.pruners.ThresholdPruner(lower=2.0))
    text = TINY.replace("baselines: [seed004]", "baselines: [seed004, seed002]").replace("trials: 4", "trials: 3")
    res = sweep(tmp_path, text.replace("tracking: {log_model: best}", "tracking: {log_model: none, plots: false}"),
                "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert [t.user_attrs.get("baseline") for t in trials] == ["seed004", "seed002", None]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    # Half an epoch, then the end of each epoch, in half epochs.
    assert [sorted(t.intermediate_values) for t in trials] == [[1, 2, 4], [1, 2, 4], [1]]
    assert trials[2].user_attrs["reason"].startswith("pruned at half of epoch 1 (val_acc ")
    # The progress lines name each baseline, and the architecture a sampled trial drew.
    lines = [line.split(";")[0] for line in res.output.splitlines() if line.startswith("trial ")]
    assert [line.split(" complete")[0].split(" pruned")[0] for line in lines] == [
        f"trial {t.number} ({name}, {_duration(t.duration.total_seconds())})"
        for t, name in zip(trials, ["seed004", "seed002", trials[2].params["arch"]])]
    # Its MLflow run holds the value it was judged on, though it logged no epoch.
    metrics = MlflowClient().get_run(trials[2].user_attrs["mlflow_run_id"]).data.metrics
    assert metrics["half_epoch_val_acc"] == pytest.approx(trials[2].intermediate_values[1])
    assert "val_acc" not in metrics and metrics["half_epoch_val_loss"] > 0


def test_baselines_values_stand_at_the_halving_rungs_for_the_trials_after_them(tmp_path, tiny_data):
    text = TINY.replace("pruner: median", "pruner: halving").replace("trials: 4", "trials: 2")
    res = sweep(tmp_path, text.replace("tracking: {log_model: best}", "tracking: {log_model: none, plots: false}"),
                "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert trials[0].user_attrs["baseline"] == "seed004"
    # Rung 0 at step 1 (half an epoch), rung 1 at step 4 (the end of the second and last epoch).
    assert trials[0].system_attrs["completed_rung_0"] == trials[0].intermediate_values[1]
    assert trials[0].system_attrs["completed_rung_1"] == trials[0].intermediate_values[4]


def test_without_the_half_epoch_check_steps_are_epochs_and_a_last_epoch_is_never_pruned(tmp_path, tiny_data,
                                                                                         monkeypatch):
    import cnnbench.sweep

    monkeypatch.setattr(cnnbench.sweep, "make_pruner", lambda sweep, steps: optuna.pruners.ThresholdPruner(lower=2.0))
    text = TINY.replace("baselines: [seed004]", "prune_at_half_epoch: false").replace("trials: 4", "trials: 2")
    res = sweep(tmp_path, text.replace("tracking: {log_model: best}", "tracking: {log_model: none, plots: false}"),
                "--data-dir", str(tiny_data), "--epochs", "1")
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="tiny", storage=journal())
    assert study.user_attrs["cnnbench.steps_per_epoch"] == 1
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1], [1]]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # The steps are the study's: resumed with the check asked for, it goes on reporting once an epoch.
    res = sweep(tmp_path, text.replace("prune_at_half_epoch: false", "prune_at_half_epoch: true"),
                "--data-dir", str(tiny_data), "--epochs", "1", "--trials", "3")
    assert res.exit_code == 0, res.output
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1], [1], [1]]


@pytest.mark.parametrize("fixed,error", [
    ("device: cuda", "device 'cuda' asked for, but CUDA is not available here"),
    ("device: cpu, precision: fp16", "fp16 autocast is not supported on the CPU"),
])
def test_a_device_or_precision_this_machine_lacks_is_refused_before_any_study(tmp_path, monkeypatch, fixed, error):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = sweep(tmp_path, TINY.replace("device: cpu", fixed))
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {tmp_path / 'tiny.yaml'}:") and error in res.output
    assert not Path(DEFAULT_JOURNAL).exists() and not Path("mlflow.db").exists()


def test_best_prints_the_top_trials(swept):
    res = CliRunner().invoke(main, ["best", "--json", "--top", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    study = optuna.load_study(study_name="tiny", storage=journal())
    assert rows[0]["trial"] == study.best_trial.number
    assert rows[0]["val_acc"] == pytest.approx(study.best_value)
    assert rows[0]["run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    res = CliRunner().invoke(main, ["best"], catch_exceptions=False)
    assert res.exit_code == 0 and "test_acc" in res.output and "run_id" in res.output
    assert f"{rows[0]['params']:,}" in res.output  # parameter counts as people read them, e.g. 18,482
    line = next(x for x in res.output.splitlines() if x.split() and x.split()[0] == str(rows[0]["trial"]))
    # accuracies to four places each (0.9690, not 0.969), so that a column reads down; seconds to a tenth
    assert f" {rows[0]['val_acc']:.4f} " in line and f" {rows[0]['test_acc']:.4f} " in line, line
    assert f" {rows[0]['seconds']:.1f} " in line, line


PARETO = """
dataset: mnist
study: pareto
trials: 5
epochs: 1
objective: [val_acc, params]
sampler: random
fixed: {val_fraction: 0.2, batch_size: 32, device: cpu}
space:
  arch: {choices: [two_conv, vgg]}
  width: {choices: [4, 16]}
  depth: {choices: [1], when: {arch: vgg}}
  optimizer: {choices: [adam, sgd]}
  lr: {low: 1e-3, high: 1e-1, log: true}
  momentum: {low: 0.5, high: 0.9, when: {optimizer: sgd}}
tracking: {log_model: none}
"""


def test_a_pareto_sweep_names_its_front_and_best_lists_and_exports_any_of_it(tmp_path, tiny_data):
    res = sweep(tmp_path, PARETO, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="pareto", storage=journal())
    front = sorted(study.best_trials, key=lambda t: -t.values[0])
    # The summary lists the front by accuracy, parameters as whole counts; no 'no complete trial yet'.
    assert f"Pareto front of val_acc and params: {len(front)} trial" in res.output
    lines = [f"  trial {t.number}: val_acc {t.values[0]:.4f}, params {int(t.values[1]):,}" for t in front]
    assert "\n".join(lines) in res.output and "no complete trial" not in res.output
    assert "--trial N" in res.output
    parent = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("pareto").experiment_id],
                                        "tags.`cnnbench.role` = 'sweep'")[0]
    assert parent.data.tags["cnnbench.pareto_trials"] == ",".join(str(t.number) for t in front)
    assert parent.data.tags["cnnbench.pruner"] == "none"  # a Pareto study has nothing to prune by

    rows = json.loads(CliRunner().invoke(main, ["best", "--json", "--top", "5"], catch_exceptions=False).output)
    assert [r["trial"] for r in rows[:len(front)]] == [t.number for t in front]  # the front first
    assert [r["pareto"] for r in rows] == [True] * len(front) + [False] * (5 - len(front))
    table = CliRunner().invoke(main, ["best", "--top", "5"], catch_exceptions=False).output
    header = table.splitlines()[0].split()
    assert header[0] == "pareto" and header[-1] == "run_id"  # settings some trials lack stay before the metrics
    assert header.index("momentum") < header.index("val_acc")

    other = rows[-1]  # a trial plain --export would not pick
    res = CliRunner().invoke(main, ["best", "--trial", str(other["trial"]), "--export", str(tmp_path / "other")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "other" / "metrics.json").read_text())
    client = MlflowClient()  # the trial's figures, as its MLflow run holds them
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        run_copy = client.download_artifacts(other["run_id"], name, str(tmp_path))
        assert (tmp_path / "other" / name).read_bytes() == Path(run_copy).read_bytes()
    assert metrics["trial"] == other["trial"] != rows[0]["trial"] and metrics["params"] == other["params"]
    res = CliRunner().invoke(main, ["best", "--trial", "9"])
    assert res.exit_code == 2 and res.output.startswith("error: --trial: study 'pareto' has no trial 9")
    res = CliRunner().invoke(main, ["report", "--format", "md", "--out", str(tmp_path / "report")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    numbers = [str(t.number) for t in sorted(front, key=lambda t: t.number)]
    listed = numbers[0] if len(numbers) == 1 else ", ".join(numbers[:-1]) + " and " + numbers[-1]
    verdict = (tmp_path / "report" / "report.md").read_text()
    assert "Study pareto weighs val_acc against params: its Pareto front" in verdict
    assert f" is trial{'s' * (len(numbers) > 1)} {listed}." in verdict


def test_a_pareto_sweep_without_a_pruner_records_none_and_refuses_one_given_by_flag(tmp_path):
    from cnnbench.space import load_sweep

    path = tmp_path / "pareto.yaml"
    path.write_text(textwrap.dedent(PARETO))
    assert load_sweep(str(path))[0].pruner == "none"  # the default, halving, would judge nothing
    res = CliRunner().invoke(main, ["sweep", str(path), "--pruner", "halving"])
    assert res.exit_code == 2 and "error: --pruner: the halving pruner judges" in res.output
    assert "give --pruner none" in res.output and not Path(DEFAULT_JOURNAL).exists()


def test_best_trial_refuses_a_trial_that_is_not_complete(tmp_path, tiny_data):
    assert sweep(tmp_path, GRID, "--data-dir", str(tiny_data)).exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=journal())
    pruned = next(t.number for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED)
    res = CliRunner().invoke(main, ["best", "--trial", str(pruned), "--export"])
    assert res.exit_code == 2 and f"trial {pruned} of study 'tiny' was pruned (unbuildable" in res.output
    assert not Path("exports").exists()


def test_a_sweep_that_may_mirror_digits_warns_once_before_it_starts(tmp_path, tiny_data):
    text = GRID.replace("kernel_size: {choices: [3, 7]}", "augment: {choices: [none, flip]}")
    res = sweep(tmp_path, text + "  tta: {choices: [none, flip_shift]}\n", "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    first, *rest = res.output.splitlines()
    assert first.startswith("warning: augment 'flip' and tta 'flip_shift' mirror images, but a mirrored mnist image")
    assert not any("warning" in line for line in rest)


def test_a_duplicate_is_no_twin_so_the_retry_of_a_failed_trial_trains():
    # Trial 1 stood down for trial 0 while 0 ran; 0 then failed and trial 2 retries it: 2 must train, not be
    # pruned as 1's duplicate. A complete trial is a twin.
    from cnnbench.sweep import DUPLICATE_ATTR, _twin

    study = optuna.create_study(direction="maximize")
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=lr, state=optuna.trial.TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=lr, user_attrs={DUPLICATE_ATTR: 0},
                                              state=optuna.trial.TrialState.PRUNED))
    study.enqueue_trial({"lr": 0.1})
    retry = study.ask(lr)
    assert retry.params == {"lr": 0.1} and _twin(retry) is None
    study.tell(retry, 0.9)
    study.enqueue_trial({"lr": 0.1})
    assert _twin(study.ask(lr)).number == retry.number


@pytest.mark.parametrize("change, warning", [
    (("trials: 4", "trials: 2\nbaselines: [seed000, seed002]"),
     "the 2 baselines take all 2 trials, so nothing in the space is searched; give --trials above 2"),
    (("space:\n  arch: {choices: [four_conv, two_conv]}\n  kernel_size: {choices: [3, 7]}\n", "space: {}\n"),
     "the space is empty, so the 4 trials would train one configuration: the first trains it, the others are "
     "pruned as its duplicates; give a space, or trials: 1"),
])
def test_a_sweep_whose_trials_search_nothing_warns_before_it_starts(tmp_path, tiny_data, change, warning):
    text = GRID.replace(*change).replace("sampler: grid", "sampler: random")
    assert text != GRID.replace("sampler: grid", "sampler: random")
    res = sweep(tmp_path, text, "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    first, *rest = res.output.splitlines()
    assert first == f"warning: {warning}" and not any("warning" in line for line in rest)
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    filled = "take all" in warning  # two baselines, else one trial and its three duplicates
    assert [t.state.name for t in trials] == (["COMPLETE"] * 2 if filled else ["COMPLETE"] + ["PRUNED"] * 3)


def test_a_setting_searched_only_for_a_value_never_drawn_is_warned_of(tmp_path):
    from cnnbench.space import load_sweep, unsearched_warning

    path = tmp_path / "narrowed.yaml"  # vgg left out of a space whose depth is vgg's
    path.write_text("dataset: mnist\nspace:\n  arch: [two_conv]\n  depth: {choices: [1, 2], when: {arch: vgg}}\n")
    assert unsearched_warning(load_sweep(str(path))[0]) == (
        "space.depth is searched only when arch is vgg, which space.arch (two_conv) never is: depth is not searched")
    path.write_text("dataset: mnist\nspace:\n  arch: [two_conv, vgg]\n  depth: {choices: [1, 2], when: {arch: vgg}}\n")
    assert unsearched_warning(load_sweep(str(path))[0]) is None


def test_best_without_a_study_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["best"])
    assert res.exit_code == 2 and "no study in" in res.output and "cnnbench sweep" in res.output
    # Looking for a study in a storage file that is not there creates nothing.
    for args in (["--study", "nope"], ["--storage", "other.log"], ["--storage", "sqlite:///other.db", "--study", "a"]):
        res = CliRunner().invoke(main, ["best", *args])
        assert res.exit_code == 2 and "no study" in res.output, args
    assert not {"cnnbench-journal.log", "other.log", "other.db"} & {p.name for p in tmp_path.iterdir()}


def test_a_folder_given_as_the_sweep_file_is_named_a_folder_with_the_files_in_it(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text("dataset: mnist\n")
    (tmp_path / "mnist").mkdir()  # a folder named like a packaged sweep does not hide it
    for arg, out in (("sweeps", "error: sweeps is a folder, not a sweep file\n  fix: give one of its sweep files: "
                                "sweeps/mine.yaml\n"),
                     (".", "error: . is a folder, not a sweep file\n  fix: give the path of a .yaml sweep file\n")):
        res = CliRunner().invoke(main, ["sweep", arg])
        assert (res.exit_code, res.output) == (2, out)
    from cnnbench.space import find_sweep

    assert find_sweep("mnist").name == "mnist.yaml"
    assert not {"cnnbench-journal.log", "mlflow.db"} & {p.name for p in tmp_path.iterdir()}  # nothing made


def test_best_trial_of_a_study_without_trials_says_it_has_none(tmp_path):
    optuna.create_study(study_name="empty", storage=journal(), direction="maximize")
    res = CliRunner().invoke(main, ["best", "--trial", "0"])
    assert res.exit_code == 2 and "study 'empty' has no trial 0 (it has none yet)" in res.output


def test_sweep_by_dataset_name_uses_the_packaged_file(tmp_path, tiny_data):
    res = CliRunner().invoke(main, ["sweep", "mnits"])
    assert res.exit_code == 2 and "did you mean 'mnist'" in res.output
    from cnnbench.space import load_sweep

    sweep_def, _ = load_sweep("mnist", {"trials": 3})
    assert sweep_def.trials == 3 and sweep_def.dataset == "mnist" and "seed004" in sweep_def.baselines
    for name in ("cifar10", "seeds"):
        assert load_sweep(name)[0].study_name
    # `cnnbench sweep DATASET` works for every dataset `cnnbench list` shows: each has its sweep file, and it is valid.
    from cnnbench.data import DATASETS

    for name in DATASETS:
        assert load_sweep(name)[0].dataset == name



def test_the_sweep_file_docs_sweeps_md_shows_is_a_valid_one(tmp_path):
    # Its `when: {optimizer: sgd}` once named a parameter the space did not sample: copied, it was refused.
    from cnnbench.space import load_sweep

    doc = (Path(__file__).parents[1] / "docs" / "sweeps.md").read_text()
    path = tmp_path / "doc.yaml"
    path.write_text(doc.split("```yaml\n", 1)[1].split("```", 1)[0])
    sweep_def, _ = load_sweep(str(path))
    assert sweep_def.dataset == "mnist" and sweep_def.space["momentum"].when == {"optimizer": "sgd"}


BAD = [
    ("dataset: mnist\nspace: {lr: {low: 0.1, high: 0.01}}\n", "high': 0.01}: low (0.1) is greater than high (0.01); swap"),
    ("dataset: mnist\nspace:\n  lr: 0.01\n", "bad.yaml:3: space.lr = 0.01: one value is not a search dimension: put it "
     "under `fixed:`"),
    ("dataset: mnist\nspace: {arch: [resnett]}\n", "did you mean 'resnet'"),  # a bare list: its choices
    ("dataset: mnist\nbaselines: false\n", "baselines = False: Input should be a valid list\n  fix: give a YAML list"),
    ("dataset: mnist\nspace: {lr: {low: 0, high: 0.1, log: true}}\n", "log range needs low > 0"),
    # Infinite or NaN numbers: Optuna cannot sample between them, and training cannot use them.
    ("dataset: mnist\nspace: {lr: {low: 1e-3, high: .inf}}\n", "space.lr.high = inf: Input should be a finite"),
    ("dataset: mnist\nspace: {lr: {low: .nan, high: 1}}\n", "space.lr.low = nan: Input should be a finite number"),
    ("dataset: mnist\nspace: {lr: {choices: [0.1, .inf]}}\n", "a choice is inf; every number must be finite"),
    ("dataset: mnist\nfixed: {weight_decay: .nan}\n", "weight_decay = nan: Input should be a finite number"),
    ("dataset: mnist\ntimeout: .inf\n", "timeout = inf: Input should be a finite number"),
    # Seeds of 32 bits: grid and QMC seed numpy with the sweep's own, and raised a traceback in the first trial.
    ("dataset: mnist\nsampler: grid\nseed: -1\nspace: {arch: [vgg, two_conv]}\n",
     "seed = -1: Input should be greater than or equal to 0"),
    ("dataset: mnist\nseed: 4294967296\n", "seed = 4294967296: Input should be less than or equal to 4294967295"),
    # true/false for a number: pydantic took them as 1 and 0 (`epochs: true`, one epoch).
    ("dataset: mnist\ntrials: true\n", "bad.yaml:2: trials = True: a number is expected, not true or false"),
    ("dataset: mnist\nfixed: {batch_size: true}\n", "bad.yaml:2: batch_size = True: a number is expected"),
    ("dataset: mnist\nspace: {lr: {low: false, high: 1}}\n", "space.lr.low = False: a number is expected"),
    ("dataset: mnist\nspace: {batch_size: [true, 64]}\n", "batch_size = True: a number is expected"),
    # Not UTF-8 (UTF-16, as some editors save, or not text at all): a traceback before.
    ("dataset: mnist\n".encode("utf-16"), "bad.yaml: cannot read "),
    (bytes(range(128, 256)), "not UTF-8 text (byte b'\\x80' at offset 0)\n  fix: save it as UTF-8 YAML"),
    ("dataset: mnist\nspace: {arch: {choices: []}}\n", "choices is empty"),
    ("dataset: mnist\nspace: {arch: {choices: [resnett]}}\n", "did you mean 'resnet'"),
    ("dataset: mnist\nspace: {optimizer: {choices: [adam, adagrad]}}\n", "unknown optimizer 'adagrad'"),
    ("dataset: mnist\nspace: {learning_rate: {low: 0.1, high: 1}}\n",
     "'learning_rate' is not a training setting\n  fix: did you mean 'lr'?"),  # no spelling is near: no hint was
    ("dataset: mnist\ntrails: 5\n", "did you mean 'trials'"),
    ("dataset: mnist\ntrials: -1\n", "trials"),
    ("dataset: mnist\ntrials: many\n", "trials"),
    ("dataset: mnist\nsampler: bayes\n", "sampler"),
    ("dataset: mnist\npruner: asha\n", "pruner"),
    ("dataset: mnist\nobjective: accuracy\n", "unknown objective"),
    ("dataset: mnits\n", "bad.yaml:1: unknown dataset 'mnits'; valid: "),
    # A name misspelt under fixed failed every trial, once the study and its runs were made.
    ("dataset: mnist\nfixed:\n  width: 8\n  optimizer: sgdd\n",
     "bad.yaml:4: fixed.optimizer: unknown optimizer 'sgdd'"),
    ("dataset: mnist\nfixed:\n  width: 8\n  arch: two_cnov\n", "bad.yaml:4: fixed.arch: unknown architecture"),
    ("dataset: mnist\nfixed:\n  arch: vgg\n  width: 0\n", "bad.yaml:4: width = 0: "),  # was fixed's line, 2
    # Two choices that read as one value: Optuna drew it as two.
    ("dataset: mnist\nspace:\n  batch_size: [\"256\", 256]\n",
     "bad.yaml:3: space.batch_size: the choices '256' and 256 are one value, 256"),
    ("space: {}\n", "bad.yaml: the required setting 'dataset' is missing\n  fix: add a line `dataset: ...`"),
    ("", "the required setting 'dataset' is missing"),
    ("dataset: mnist\nspace: {lr: {low: 1e-3, high: 0.1, step: 0.5}}\n", "step (0.5) is wider than the range"),
    ("dataset: mnist\nspace: {lr: {low: 1e-3, high: 0.1, step: 0.02}}\n",
     "the range 0.001..0.1 is not a whole number of steps of 0.02; set high to 0.081 or 0.101"),
    ("dataset: mnist\nspace: {batch_size: {low: 32, high: 100, step: 32}}\n", "set high to 96 or 128"),
    ("dataset: mnist\nspace: {lr: {low: 0.1, high: 0.1}}\n", "one value is not a search dimension"),
    # A kernel size no architecture in the space builds with (each builds with another) is named up front.
    ("dataset: mnist\nspace:\n  kernel_size: [3, 99]\n", "bad.yaml:3: no architecture in the space can be built "
     "for mnist with kernel_size 99\n  fix: remove 99 from space.kernel_size"),
    ("dataset: mnist\nspace:\n  arch: [four_conv]\n  kernel_size: {low: 3, high: 9, step: 2}\n",
     "bad.yaml:4: no architecture in the space can be built for mnist with kernel_size 9\n"
     "  fix: lower space.kernel_size's high"),
    ("dataset: mnist\nspace: {arch: {choices: [four_conv]}, kernel_size: {choices: [7]}}\n", "cannot be built"),
    ("dataset: mnist\nspace: {optimizer: {choices: [adam, sgd]}, momentum: {low: 0.5, high: 0.9}}\n",
     "when: {optimizer: [sgd"),
    ("dataset: mnist\nspace: {momentum: {low: 0.5, high: 0.9, when: {optimizer: sgd}}}\n", "not sampled before"),
    ("dataset: mnist\nspace: {arch: {choices: [two_conv]}, depth: {choices: [1, 2]}}\n", "depth does not apply"),
    ("dataset: mnist\nspace: {lr: {choices: [0.1], low: 0.1, high: 1}}\n", "not both"),
    ("dataset: mnist\nspace: {lr: {low: 0.1}}\n", "both low and high"),
    ("dataset: mnist\nspace: {batch_size: {choices: [32, -4]}}\n", "batch_size"),
    ("dataset: mnist\nspace: {val_fraction: {low: 0.1, high: 0.2}}\n", "cannot be searched"),
    ("dataset: mnist\nfixed: {epochs: 3}\n", "set at the top"),
    # Without a validation split (and an objective that needs none) patience and plateau would do nothing.
    ("dataset: mnist\nobjective: params\nfixed:\n  val_fraction: 0\n  patience: 2\nspace: {arch: [vgg, two_conv]}\n",
     "bad.yaml:5: patience stops training on the validation accuracy, but val_fraction is 0"),
    ("dataset: mnist\nobjective: params\nfixed: {val_fraction: 0}\nspace:\n  scheduler: [cosine, plateau]\n",
     "bad.yaml:5: the plateau schedule lowers the rate"),
    ("dataset: mnist\nobjective: params\nfixed: {val_fraction: 0}\nspace:\n  patience: [1, 2]\n",
     "bad.yaml:5: patience stops training"),
    # A fixed setting's own error names its line, not an architecture to remove.
    ("dataset: mnist\nfixed:\n  augment: rotat\nspace: {arch: [vgg, two_conv]}\n",
     "bad.yaml:3: fixed.augment: unknown augmentation"),
    ("dataset: mnist\nfixed: {lr: -3}\n", "lr"),
    ("dataset: mnist\nbaselines: [seed009]\n", "unknown preset"),
    ("dataset: mnist\nspace: {kernel_size: {choices: sizes}}\n", "unknown choice set"),
    ("dataset: mnist\nlr: 1e-3\n", "unknown setting 'lr'"),
    ("dataset: mnist\nspace: {lr: {low: 1e-3, high: 1e-1, log: true, step: 0.1}}\n", "cannot have a step"),
    ("dataset: mnist\nspace: [lr]\n", "space"),
    ("dataset: mnist\n  bad: indent\n", "not valid YAML"),
    ("dataset: mnist\ndataset: cifar10\n", "appears twice"),
    ("- just\n- a list\n", "mapping"),
    ("dataset: mnist\nsampler: grid\nspace: {lr: {low: 0.1, high: 1}}\n", "grid sampler needs choices"),
    ("dataset: mnist\nstudy: ../../etc/evil\n", "study"),
    ("dataset: mnist\nstorage: ftp://host/db\n", "unsupported storage"),
    ("dataset: mnist\nstorage: 'postgres://bob:pw@db/optuna'\n", "bad.yaml:2: unsupported storage "
     "'postgres://***@db/optuna': SQLAlchemy names PostgreSQL postgresql://\n  fix: give postgresql://***@db/optuna"),
    ("dataset: mnist\nstorage: 'sqlite:///'\n", "is a database in memory, gone when the sweep ends"),
    ("dataset: mnist\nstorage: ''\n", "empty storage URL"),
    ("dataset: mnist\nfixed: {device: meta}\n", "bad.yaml:2: unknown device 'meta'"),
    # A setting both fixed and searched was searched; a condition on a value never drawn never held.
    ("dataset: mnist\nfixed: {arch: two_conv}\nspace: {arch: [two_conv, vgg]}\n",
     "bad.yaml:3: arch is both fixed and searched"),
    ("dataset: mnist\nspace:\n  optimizer: [sgd, adam]\n  momentum: {low: 0.8, high: 0.95, when: {optimizer: sgdd}}\n",
     "bad.yaml:4: space.momentum.when.optimizer: unknown optimizer 'sgdd'"),
    ("dataset: mnist\nfixed: {scheduler: multistep, milestones: [5, 0]}\n", "Input should be greater than 0"),
    ("dataset: mnist\nspace: {lr: {low: 1e-3, hihg: 0.1}}\n", "did you mean 'high'"),  # a nested key: its own level's
    ("dataset: mnist\ntracking: {plot: false}\n", "did you mean 'plots'"),
    # Nothing to judge: a Pareto study, or an objective trials do not report as they train.
    ("dataset: mnist\nobjective: [val_acc, params]\npruner: median\n", "bad.yaml:3: the median pruner judges"),
    ("dataset: mnist\nobjective: train_seconds\npruner: halving\n", "set pruner: none"),
    # An export's config.yaml, a training config, given as a sweep.
    ("dataset: mnist\narch: vgg\nlr: 0.1\nepochs: 2\n", "bad.yaml is a training config, not a sweep file\n"
     "  fix: train with it: cnnbench train --config "),
    # A net that takes no kernel size is not told to try smaller ones.
    ("dataset: mnist\nspace: {arch: {choices: [vgg, tv:vit_b_32]}}\n",
     "bad.yaml:2: architecture 'tv:vit_b_32' cannot take a 1x28x28 input: Wrong image height! Expected 224 but got "
     "28!\n  fix: remove 'tv:vit_b_32' from space.arch\n"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[f"bad{i:02d}" for i in range(len(BAD))])
def test_bad_sweep_files_fail_before_anything_is_created(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    res = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tmp_path / "nodata")])
    assert res.exit_code == 2, res.output
    assert expected in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 2
    assert not (tmp_path / DEFAULT_JOURNAL).exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()


def test_a_number_written_as_text_under_fixed_is_read_as_the_number(tmp_path):
    from cnnbench.space import load_sweep

    path = tmp_path / "quoted.yaml"  # "0.1" reached the data's split as text: a TypeError
    path.write_text('dataset: mnist\nfixed: {val_fraction: "0.2"}\n')
    assert load_sweep(str(path))[0].val_fraction == 0.2
    path.write_text('dataset: mnist\nfixed: {val_fraction: "0"}\n')  # and needs the validation it leaves out
    res = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tmp_path / "nodata")])
    assert res.exit_code == 2 and "the objective needs a validation split, but val_fraction is 0" in res.output


def test_a_fixed_setting_that_needs_a_searched_one_is_accepted(tmp_path):
    from cnnbench.space import load_sweep

    path = tmp_path / "nesterov.yaml"
    path.write_text("dataset: mnist\nfixed: {arch: vgg, optimizer: sgd, nesterov: true}\n"
                    "space: {momentum: {low: 0.8, high: 0.95}}\n")
    assert load_sweep(str(path))[0].fixed["nesterov"] is True


def test_a_bare_list_in_the_space_is_its_choices(tmp_path):
    from cnnbench.space import load_sweep

    (tmp_path / "short.yaml").write_text("dataset: mnist\nspace:\n  arch: [vgg, two_conv]\n"
                                         "  depth: {choices: [1, 2], when: {arch: vgg}}\n  batch_size: [128, 256]\n")
    (tmp_path / "long.yaml").write_text("dataset: mnist\nspace:\n  arch: {choices: [vgg, two_conv]}\n"
                                        "  depth: {choices: [1, 2], when: {arch: vgg}}\n"
                                        "  batch_size: {choices: [128, 256]}\n")
    short, long = (load_sweep(str(tmp_path / f"{n}.yaml"))[0] for n in ("short", "long"))
    assert short.space["arch"].values() == ["vgg", "two_conv"] and short.space["batch_size"].values() == [128, 256]
    assert short.identity() == long.identity()  # either spelling resumes the other's study


def test_the_shipped_mnist_sweep_pools_first_in_its_vgg_trials_only():
    from cnnbench.space import load_sweep, suggest, trial_config
    from cnnbench.train import check

    sweep_def, _ = load_sweep("mnist")
    common = {"kernel_size": 5, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
              "weight_decay": 1e-4, "batch_size": 128, "scheduler": "onecycle"}
    vgg = suggest(optuna.trial.FixedTrial({**common, "arch": "vgg", "depth": 2, "pool_first": True}), sweep_def)
    other = suggest(optuna.trial.FixedTrial({**common, "arch": "two_conv"}), sweep_def)
    assert vgg["pool_first"] is True and "pool_first" not in other
    for sampled in (vgg, other):
        check(trial_config(sweep_def, sampled))


def test_bad_value_names_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: mnist\ntrials: 5\nspace:\n  lr: {low: 0.5, high: 0.1}\n")
    res = CliRunner().invoke(main, ["sweep", str(path)])
    assert res.exit_code == 2 and f"{path}:4" in res.output


def test_a_bad_flag_is_blamed_on_the_flag_not_on_the_file_it_overrides(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("dataset: mnist\ntrials: 5\n")
    res = CliRunner().invoke(main, ["sweep", str(path), "--trials", "0"])
    assert res.exit_code == 2 and "--trials" in res.output, res.output
    assert f"{path}:" not in res.output


def test_best_export_against_an_unreachable_store_fails_at_once(swept, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("cnnbench.errors.PATIENCE_SECONDS", 3.0)  # were it waited for, not for long
    res = CliRunner().invoke(main, ["best", "--export", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "cannot fetch the weights of trial" in res.output and "MLFLOW_TRACKING_URI" in res.output
    assert "was unreachable for" not in res.output and not (tmp_path / "out").exists()

    # A sweep ending waits for the store instead, and says so when it gives up (exit 1, not a bad-input 2).
    from cnnbench.errors import Unavailable
    from cnnbench.sweep import trial_model

    trial = optuna.load_study(study_name="tiny", storage=journal()).best_trial
    with pytest.raises(Unavailable, match="was unreachable for 3 s"):
        trial_model(trial)


def test_best_export_in_a_folder_without_the_mlflow_store_says_so_and_creates_none(swept, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.replace(DEFAULT_JOURNAL, elsewhere / DEFAULT_JOURNAL)  # the study, without the sweep's mlflow.db beside it
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = CliRunner().invoke(main, ["best", "--export"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: no MLflow store at {elsewhere / 'mlflow.db'}, which holds trial ")
    assert "MLFLOW_TRACKING_URI" in res.output
    assert sorted(p.name for p in elsewhere.iterdir()) == [DEFAULT_JOURNAL]  # no empty mlflow.db, no exports/


def remove_for_good(run_id: str) -> None:
    """Remove a deleted run from the working directory's MLflow store as `mlflow gc` does, by running it."""
    store = "sqlite:///mlflow.db"
    subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", store, "--run-ids", run_id],
                   check=True, capture_output=True, env={**os.environ, "MLFLOW_TRACKING_URI": store})


def test_runs_deleted_in_mlflow_are_left_out_by_best_and_named_with_their_restore_command(swept, tmp_path):
    # `best --export` exported a run deleted in `mlflow ui` that `report` left out; once `mlflow gc` had removed it,
    # it failed with "check MLFLOW_TRACKING_URI", and listed it first still.
    client = MlflowClient()
    first = json.loads(CliRunner().invoke(main, ["best", "--json"]).stdout)
    best_run = first[0]["run_id"]
    client.delete_run(best_run)
    res = CliRunner().invoke(main, ["best", "--json"])
    assert res.exit_code == 0, res.output
    assert [row["trial"] for row in json.loads(res.stdout)] == [row["trial"] for row in first[1:]]
    assert res.stderr == (f"note: left out trial {first[0]['trial']}: its MLflow run {best_run} is deleted; "
                          f"`mlflow runs restore --run-id {best_run}` brings it back\n")
    res = CliRunner().invoke(main, ["best", "--export", "out"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["trial"] == first[1]["trial"]
    res = CliRunner().invoke(main, ["best", "--trial", str(first[0]["trial"])])  # asked for by number: shown
    assert res.exit_code == 0 and f"`mlflow runs restore --run-id {best_run}`" in res.stderr
    assert CliRunner().invoke(main, ["report", "--format", "md"]).exit_code == 0  # MLflow's search leaves it out
    report = (tmp_path / "report" / "report.md").read_text()
    assert "1 trial run(s) deleted in MLflow (in `mlflow ui`, say) are left out" in report
    assert best_run[:8] not in report

    remove_for_good(best_run)
    res = CliRunner().invoke(main, ["best", "--export", "gone", "--trial", str(first[0]["trial"])])
    assert res.exit_code == 2 and res.output.startswith(
        f"error: --trial: trial {first[0]['trial']}'s MLflow run {best_run} is no longer in the store: deleted, then "
        "removed by `mlflow gc`, and its weights with it\n"), res.output
    assert not (tmp_path / "gone").exists()

    experiment = client.get_experiment_by_name("tiny").experiment_id
    client.delete_experiment(experiment)
    restore = f"`mlflow experiments restore --experiment-id {experiment}`"
    res = CliRunner().invoke(main, ["best"])
    assert res.exit_code == 2 and res.output == (f"error: the MLflow experiment of study 'tiny' (id {experiment}) is "
                                                 f"deleted, and its trials' runs with it\n  fix: restore it: {restore}; "
                                                 "or show one trial with --trial N\n")
    res = sweep(tmp_path, TINY, "--trials", "5", "--data-dir", "no/such/folder")  # refused before the data
    assert res.exit_code == 2 and res.output.startswith("error: MLflow experiment 'tiny' (id "), res.output
    assert restore in res.output
    client.restore_experiment(experiment)
    client.rename_experiment(experiment, "renamed")  # in `mlflow ui`: the runs are looked up by id, not by its name
    res = CliRunner().invoke(main, ["best", "--json"])
    assert [row["trial"] for row in json.loads(res.stdout)] == [row["trial"] for row in first[1:]]
    assert res.stderr.startswith(f"note: left out trial {first[0]['trial']}: its MLflow run {best_run} is no longer")


def test_a_sweep_whose_mlflow_run_is_deleted_says_how_to_restore_it_and_one_removed_gets_a_new_one(swept, tmp_path,
                                                                                                    tiny_data):
    # A deleted sweep run stopped every later run of the sweep with MLflow's traceback, after its trials had run.
    client = MlflowClient()
    parent = optuna.load_study(study_name="tiny", storage=journal()).user_attrs["cnnbench.parent_run"]
    client.delete_run(parent)
    res = sweep(tmp_path, TINY, "--trials", "5", "--data-dir", str(tiny_data))
    assert res.exit_code == 2, res.output
    assert f"restore it: `mlflow runs restore --run-id {parent}`" in res.output
    assert len(trials_of("tiny")) == 4
    remove_for_good(parent)
    res = sweep(tmp_path, TINY, "--trials", "5", "--data-dir", str(tiny_data))
    assert res.exit_code == 0, res.output
    assert f"note: the sweep's MLflow run {parent} is no longer in the store (removed by `mlflow gc`)" in res.output
    study = optuna.load_study(study_name="tiny", storage=journal())
    new = study.user_attrs["cnnbench.parent_run"]
    assert new != parent and client.get_run(new).info.status == "FINISHED"
    last = client.get_run(study.trials[-1].user_attrs["mlflow_run_id"])
    assert last.data.tags["mlflow.parentRunId"] == new


def test_a_sweep_in_a_folder_whose_name_has_a_space_is_found_by_best_and_report(tmp_path, tiny_data, monkeypatch):
    folder = tmp_path / "my runs"  # MLflow's default store there is sqlite:///.../my%20runs/mlflow.db
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert sweep(folder, TINY, "--data-dir", str(tiny_data)).exit_code == 0
    res = CliRunner().invoke(main, ["best", "--export", "out"])
    assert res.exit_code == 0, res.output
    assert (folder / "out" / "model.pt2").is_file()
    res = CliRunner().invoke(main, ["report"])
    assert res.exit_code == 0, res.output
    assert "Nothing is recorded" not in res.output
    assert "tiny" in (folder / "report" / "report.md").read_text()


def test_best_export_without_the_onnx_extra_says_what_is_missing(swept, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as on an install without cnnbench[onnx]
    res = CliRunner().invoke(main, ["best", "--export", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert "no model.onnx in the export: onnxscript is not installed (pip install 'cnnbench[onnx]')" in res.output


def test_best_register_needs_export_and_a_trial_with_an_mlflow_model(swept, tmp_path, caplog):
    for args, flag in ((["--register", "m"], "--register"), (["--overwrite"], "--overwrite")):
        res = CliRunner().invoke(main, ["best", *args])
        assert res.exit_code == 2, res.output
        assert res.output.startswith(f"error: {flag}: given without --export"), res.output
    study = optuna.load_study(study_name="tiny", storage=journal())
    run_id = study.best_trial.user_attrs["mlflow_run_id"]
    res = CliRunner().invoke(main, ["best", "--export", str(tmp_path / "out"), "--register", "m", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    table = json.JSONDecoder().raw_decode(res.output[res.output.index("[\n"):])[0]  # after MLflow's own lines
    assert table[0]["registered"] == {"name": "m", "version": "1"}
    # MLflow 3 keeps the model apart from the run's artifacts: registered by its id, without a warning
    assert "has no artifacts at artifact path" not in caplog.text
    assert MlflowClient().get_model_version("m", "1").run_id == run_id

    MlflowClient().set_tag(run_id, "cnnbench.logged_model", "0")  # as with tracking.log_model: none
    res = CliRunner().invoke(main, ["best", "--export", str(tmp_path / "again"), "--register", "m"])
    assert res.exit_code != 0 and "has no MLflow model to register" in res.output, res.output
    assert not (tmp_path / "again").exists()  # refused before the export


def test_best_export_matches_the_reported_accuracy_with_plain_torch(swept, tmp_path, tiny_data):
    res = CliRunner().invoke(main, ["best", "--export", str(tmp_path / "out"), "--register", "tiny-best"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert {"model.safetensors", "model.pt2", "model.onnx", "config.yaml", "metrics.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    study = optuna.load_study(study_name="tiny", storage=journal())
    reported = study.best_trial.user_attrs["test_acc"]
    run_id = study.best_trial.user_attrs["mlflow_run_id"]
    precision = MlflowClient().get_run(run_id).data.tags["cnnbench.precision"]
    assert json.loads((out / "metrics.json").read_text())["precision"] == precision
    card = (out / "README.md").read_text()
    assert (f"in {precision} autocast" in card) == (precision != "fp32")
    params = json.loads((out / "metrics.json").read_text())["params"]
    assert isinstance(params, int) and f"| params | {params:,} |" in card  # 315,146 as people read it
    # where to see the run: MLflow's UI over the sweep's local store, not the store's file URI with a fragment
    assert (f"http://127.0.0.1:5000/#/experiments/{MlflowClient().get_run(run_id).info.experiment_id}/runs/{run_id}"
            f" (with `mlflow ui --backend-store-uri sqlite:///") in card, card
    code = (
        "import sys, json, torch\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "from conftest import _patterns\n"
        "prep = json.load(open(sys.argv[1] + '/preprocess.json'))\n"
        "m = torch.export.load(sys.argv[1] + '/model.pt2').module()\n"
        "x, y = _patterns(100, 28, 1, 2)\n"
        "x = (torch.tensor(x).float() / 255 - prep['mean'][0]) / prep['std'][0]\n"
        "acc = (m(x).argmax(1) == torch.tensor(y).long()).float().mean().item()\n"
        "assert 'cnnbench' not in sys.modules\n"
        "print(acc)\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code, str(out), str(tiny_data), str(Path(__file__).parent)],
                          capture_output=True, text=True, check=True)
    assert float(done.stdout.strip()) == pytest.approx(reported, abs=0.0005)
    assert MlflowClient().get_registered_model("tiny-best").name == "tiny-best"
    assert "registered it in MLflow's model registry as 'tiny-best', version 1" in res.output

    from PIL import Image

    from cnnbench import data

    test = data.load("mnist", tiny_data).test
    files = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(test.x[i, 0].numpy()).save(path)
        files.append(str(path))
    res = CliRunner().invoke(main, ["predict", str(out), *files, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    results = json.loads(res.output)
    assert [r["file"] for r in results] == files
    assert all(0 <= r["probability"] <= 1 and r["label"] == str(r["index"]) for r in results)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    res = CliRunner().invoke(main, ["predict", str(out), str(bad)])
    assert res.exit_code == 2 and "not an image" in res.output


def test_two_workers_share_one_study_and_its_exact_budget(tmp_path, tiny_data):
    res = sweep(tmp_path, TINY, "--data-dir", str(tiny_data), "--workers", "2", "--trials", "5")
    assert res.exit_code == 0, res.output
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert len(trials) == 5 and all(t.state.is_finished() for t in trials)
    drawn = [t.params["lr"] for t in trials if t.params]
    assert len(drawn) == 4 and len(set(drawn)) == 4  # the workers' samplers do not draw the same points
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    assert all(r.info.status != "RUNNING" for r in runs)


def test_sigterm_ends_the_run_killed_and_exits_143(tmp_path, tiny_data):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "slow.yaml"
    path.write_text(textwrap.dedent(TINY).replace("epochs: 2", "epochs: 200").replace("baselines: [seed004]",
                                                                                      "baselines: []"))
    proc = subprocess.Popen([sys.executable, "-m", "cnnbench", "sweep", str(path), "--data-dir", str(tiny_data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    # The first epoch's checkpoint: the trial's run exists by then. (An MLflow client polling the store meanwhile
    # made its tables at the moment the sweep did, and one of the two failed in MLflow's migrations.)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (ckpt := trial_checkpoint(tmp_path, "tiny", 0)).exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "to resume" in err
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert runs and all(r.info.status == "KILLED" for r in runs)
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].system_attrs["fixed_params"] == trials[0].params
    assert ckpt.exists()


def trial_checkpoint(folder: Path, study: str, number: int) -> Path:
    """Where trial ``number`` of the one study named ``study`` run in ``folder`` keeps its checkpoint (under its
    sweep run's id), or where it would."""
    found = sorted((folder / "cnnbench-checkpoints" / study).glob(f"*/trial-{number}.ckpt"))
    return found[0] if found else folder / "cnnbench-checkpoints" / study / "-" / f"trial-{number}.ckpt"


SLOW = """
dataset: mnist
study: tiny
trials: 1
epochs: 6
sampler: random
pruner: none
fixed: {batch_size: 4, device: cpu, arch: two_conv, width: 4, optimizer: adam, val_fraction: 0.2}
space:
  lr: {choices: [3e-3, 1e-2]}
tracking: {log_model: none, plots: false}
"""


def kill_mid_trial(folder: Path, tiny_data: Path) -> tuple[list[str], Path]:
    """Start the SLOW sweep in ``folder``, SIGKILL it once trial 0 has a checkpoint; return its command and the
    checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    path = folder / "slow.yaml"
    path.write_text(textwrap.dedent(SLOW))
    command = [sys.executable, "-m", "cnnbench", "sweep", str(path), "--data-dir", str(tiny_data)]
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (ckpt := trial_checkpoint(folder, "tiny", 0)).exists():
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return command, ckpt


def test_a_killed_worker_s_trial_is_failed_and_retried_from_its_checkpoint(tmp_path, tiny_data):
    import subprocess

    import torch

    command, ckpt = kill_mid_trial(tmp_path, tiny_data)
    before = torch.load(ckpt, weights_only=True)["history"]

    res = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 1 and states.count("FAIL") == 1 and "RUNNING" not in states
    failed = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed.number)
    assert retry.params == failed.params and retry.state.name == "COMPLETE"
    assert failed.user_attrs["reason"].startswith("worker ") and failed.user_attrs["reason"].endswith("died")

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert all(r.info.status != "RUNNING" for r in runs.values())
    assert runs[failed.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    # The retry resumed from the checkpoint, and its run records the epochs trained before it too, as they were.
    seconds = {m.step: m.value for m in client.get_metric_history(retry.user_attrs["mlflow_run_id"], "epoch_seconds")}
    assert sorted(seconds) == list(range(1, 7))
    assert [seconds[m["epoch"]] for m in before] == [m["epoch_seconds"] for m in before], "trained again"
    finished_runs = [r for r in runs.values() if r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_id for r in finished_runs) == sorted(
        t.user_attrs["mlflow_run_id"] for t in trials if t.state.name == "COMPLETE")
    assert not ckpt.exists()


def test_a_study_begun_afresh_beside_a_killed_one_of_its_name_never_resumes_its_checkpoint(tmp_path, tiny_data):
    # A sweep killed mid-trial keeps the trial's checkpoint for its retry. Its journal moved aside, the same
    # command begins a new study of the same name in this folder: its trial 0 used to find the old trial 0's
    # checkpoint, and failed on its other settings (or, with the same ones, resumed another study's run).
    import subprocess

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    import torch

    command, old = kill_mid_trial(tmp_path, tiny_data)
    first = torch.load(old, weights_only=True)["history"][0]
    (tmp_path / DEFAULT_JOURNAL).rename(tmp_path / "aside.log")

    res = subprocess.run([*command, "--seed", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    trial = optuna.load_study(study_name="tiny", storage=journal()).trials[0]
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("reason")
    seconds = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        trial.user_attrs["mlflow_run_id"], "epoch_seconds")
    assert [m.step for m in seconds] == list(range(1, 7))
    assert seconds[0].value != first["epoch_seconds"], "it resumed another study's checkpoint"
    assert old.exists()  # the first study's, for its retry
    res = subprocess.run([*command, "--storage", "aside.log"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(
        str(tmp_path / "aside.log")))).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and not old.exists()


def test_a_study_leaves_the_live_runs_of_another_study_of_its_name_alone(tmp_path):
    # Two people sweep `mnist` in their own folders (two journal files) into one MLflow server: one
    # experiment. The second one's start used to fail the first one's running trial as "no trial records
    # this run", since it looked at every run of the experiment.
    import time

    from cnnbench.sweep import PARENT_ATTR, reconcile
    from cnnbench.tracking import Tracker

    tracker, client = Tracker("team"), MlflowClient()
    studies = []
    for name in ("a", "b"):
        study = optuna.create_study(study_name="team")
        study.set_user_attr(PARENT_ATTR, tracker.start(f"sweep-team-{name}", tags={"cnnbench.role": "sweep"}))
        studies.append(study)
    a, b = studies
    long_ago = int((time.time() - 3600) * 1000)  # older than any heartbeat
    live = client.create_run(tracker.experiment_id, start_time=long_ago, run_name="trial-0",
                             tags={"mlflow.parentRunId": a.user_attrs[PARENT_ATTR]}).info.run_id
    trial = a.ask()
    trial.set_user_attr("mlflow_run_id", live)
    lost = client.create_run(tracker.experiment_id, start_time=long_ago, run_name="trial-1",
                             tags={"mlflow.parentRunId": a.user_attrs[PARENT_ATTR]}).info.run_id

    assert reconcile(b, tracker) == []
    assert client.get_run(live).info.status == client.get_run(lost).info.status == "RUNNING"
    assert reconcile(a, tracker) == [lost]  # its own run that no trial records is still failed
    assert client.get_run(live).info.status == "RUNNING" and client.get_run(lost).info.status == "FAILED"


def test_credentials_in_urls_are_never_shown(tmp_path, tiny_data):
    from cnnbench.tracking import redact

    assert redact("postgresql://alice:s3cret@db:5432/optuna") == "postgresql://***@db:5432/optuna"
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    res = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tiny_data),
                                    "--storage", "postgresql://alice:s3cret@127.0.0.1:1/none"])
    assert res.exit_code == 2 and "s3cret" not in res.output and "***@127.0.0.1" in res.output


def test_a_sweep_whose_trials_keep_failing_stops_with_the_reason(tmp_path, tiny_data, monkeypatch):
    from cnnbench import sweep as sweeps

    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(sweeps, "fit", broken_fit)
    res = sweep(tmp_path, TINY.replace("baselines: [seed004]", "baselines: []"), "--data-dir", str(tiny_data))
    assert res.exit_code == 1, res.output
    assert "5 trials in a row failed" in res.output and "out of memory, say" in res.output
    assert [line.startswith(f"trial {i} ") for i, line in enumerate(  # the fifth's line was left out
        line for line in res.output.splitlines() if "failed: RuntimeError: out of memory, say" in line)] == [True] * 5
    trials = optuna.load_study(study_name="tiny", storage=journal()).get_trials()
    assert [t.state.name for t in trials] == ["FAIL"] * 5
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 5 and all(r.info.status == "FAILED" for r in children)
    assert all("out of memory, say" in r.data.tags["cnnbench.reason"] for r in children)


def test_study_figures_of_baselines_alone_leave_out_importances_without_a_word(tmp_path):
    # A sweep stopped by a short --timeout after its baselines: no sampled trial to weigh.
    import logging

    from cnnbench.sweep import _study_plots

    study = optuna.create_study(direction="maximize")
    for i, value in enumerate((0.98, 0.97)):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"baseline": f"seed00{i}"},
                                                  intermediate_values={1: value}))
    logged, said = [], []

    class Tracker:
        def log_artifacts(self, run_id, folder, path=None):
            logged.extend(sorted(p.name for p in Path(folder).iterdir()))

        def run_data(self, run_id):
            return SimpleNamespace(tags={})

        def set_tags(self, run_id, tags):
            pass

    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("optuna").addHandler(handler)  # Optuna's own logger does not propagate
    try:
        _study_plots(study, Tracker(), "parent")
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert "optimization_history.png" in logged and "param_importances.png" not in logged
    assert said == []


def test_the_importance_figure_leaves_out_a_parameter_that_never_varied(monkeypatch):
    from optuna.visualization import matplotlib as ovm

    from cnnbench.sweep import _study_plots

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.suggest_categorical("pool_first", [True])  # one choice in the space, as in sweeps/mnist.yaml
        study.tell(trial, 0.9 + lr)
    asked, logged = [], []
    real = ovm.plot_param_importances
    monkeypatch.setattr(ovm, "plot_param_importances", lambda *a, **k: asked.append(k.get("params")) or real(*a, **k))

    class Tracker:
        def log_artifacts(self, run_id, folder, path=None):
            logged.extend(sorted(p.name for p in Path(folder).iterdir()))

        def run_data(self, run_id):
            return SimpleNamespace(tags={})

        def set_tags(self, run_id, tags):
            pass

    _study_plots(study, Tracker(), "parent")
    assert "param_importances.png" in logged and asked == [["lr"]]


def test_a_sweep_of_one_s_own_images_exports_a_winner_that_predicts_without_them(tmp_path):
    import shutil

    from conftest import forget_folders, write_folder

    from cnnbench import data

    write_folder(tmp_path / "my bugs", channels=3, size=32)
    res = sweep(tmp_path, """
        dataset: folder:my bugs
        trials: 2
        epochs: 1
        sampler: random
        pruner: none
        fixed: {batch_size: 32, device: cpu, width: 8}
        space:
          arch: {choices: [two_conv, vgg]}
    """)
    assert res.exit_code == 0, res.output
    assert "study 'my-bugs'" in res.output and "2 complete" in res.output
    res = CliRunner().invoke(main, ["best", "--export", "my bugs/winner"])  # it would be a class of them
    assert res.exit_code == 2 and f"lies in {tmp_path / 'my bugs'}, the folder of images" in res.output, res.output
    assert not (tmp_path / "my bugs" / "winner").exists()
    res = CliRunner().invoke(main, ["best", "--export"])
    assert res.exit_code == 0, res.output
    (export_dir,) = (tmp_path / "exports").iterdir()
    assert export_dir.name.startswith("my-bugs-trial")
    card = (export_dir / "README.md").read_text()
    assert f"your images in {tmp_path / 'my bugs'}, 3x32x32, 3 classes, 120 train / 30 test" in card
    digest = data.load("folder:my bugs").digest  # the images its accuracies were measured on, as the run says
    assert json.loads((export_dir / "metrics.json").read_text())["data_digest"] == digest
    assert f"| data_digest | {digest} |" in card and "`data_digest` names the images and labels" in card
    res = CliRunner().invoke(main, ["predict", str(export_dir), "my bugs"])  # its test and training images apart
    assert res.exit_code == 0, res.output
    assert [line.split(" of ", 1)[1] for line in res.output.splitlines()[-2:]] == [
        "30 test images right, by the class folders they are in",
        "120 training images right, by the class folders they are in"]
    image = sorted((tmp_path / "my bugs" / "test" / "cat").iterdir())[0]
    shutil.copy(image, tmp_path / "cat.png")
    shutil.rmtree(tmp_path / "my bugs")  # an export needs none of its dataset
    forget_folders()  # as a new command starts
    res = CliRunner().invoke(main, ["best", "--export", "--overwrite"])  # exporting again needs the images
    assert res.exit_code == 2 and "net is built for the classes and size of the images it was trained on, in " \
        f"{tmp_path / 'my bugs'}: " in res.output and "fix: put them back where the sweep read them" in res.output
    res = CliRunner().invoke(main, ["predict", str(export_dir), "cat.png"])
    assert res.exit_code == 0 and res.output.split()[:2] == ["cat.png", "cat"], res.output
    res = CliRunner().invoke(main, ["report", "--dataset", "folder:my bugs", "--format", "md"])  # as the file said
    assert res.exit_code == 0, res.output
    assert f"## Dataset: folder:{tmp_path / 'my bugs'}" in (tmp_path / "report" / "report.md").read_text()


def test_a_folder_of_one_s_images_is_swept_by_name_with_the_sweep_for_them(tmp_path):
    from conftest import write_folder

    from cnnbench.space import load_sweep
    from cnnbench.sweep import IDENTITY_ATTR

    write_folder(tmp_path / "bugs", n_train=60, n_test=15)
    packaged, sources = load_sweep("folder:bugs")
    assert packaged.dataset == f"folder:{tmp_path / 'bugs'}" and sources["dataset"] == ""
    assert sources["space"].startswith(str(Path(__file__).parents[1] / "cnnbench" / "sweeps" / "images.yaml:"))
    res = CliRunner().invoke(main, ["sweep", "folder:bugs", "--trials", "2", "--epochs", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("sweeping your images with ") and res.output.splitlines()[0].endswith(
        f"{os.sep}images.yaml (copy it to sweeps/images.yaml to change it)")
    assert "study 'bugs' (journal file ./cnnbench-journal.log): 0 of 2 trials done;" in res.output
    study = optuna.load_study(study_name="bugs", storage=journal())
    identity = study.user_attrs[IDENTITY_ATTR]
    assert identity["dataset"] == f"folder:{tmp_path / 'bugs'}" and identity["epochs"] == 1
    assert identity["space"] == {k: v.model_dump(exclude_defaults=True) for k, v in packaged.space.items()}
    assert all(t.params["augment"] in ("none", "flip", "crop", "crop_flip") for t in study.trials)
    res = CliRunner().invoke(main, ["sweep", "folder:bugs", "--trials", "3", "--epochs", "1"])  # resumed
    assert res.exit_code == 0 and "): 2 of 3 trials done;" in res.output, res.output
    assert len(optuna.load_study(study_name="bugs", storage=journal()).trials) == 3
    (tmp_path / "sweeps").mkdir()  # a copy of one's own is the sweep for one's images from then on
    (tmp_path / "sweeps" / "images.yaml").write_text("dataset: folder:images\ntrials: 1\nepochs: 1\n"
                                                     "space: {lr: {low: 0.01, high: 0.1}}\n")
    mine, _ = load_sweep("folder:bugs")
    assert mine.dataset == packaged.dataset and list(mine.space) == ["lr"] and mine.trials == 1
    res = CliRunner().invoke(main, ["sweep", "folder:bugs", "--study", "mine"])
    assert res.exit_code == 0 and res.output.splitlines()[0] == "sweeping your images with sweeps/images.yaml"
    res = CliRunner().invoke(main, ["sweep", "folder:nowhere", "--trials", "2"])  # before any study or run
    assert res.exit_code == 2 and res.output.startswith(f"error: folder:{tmp_path / 'nowhere'}: no such folder")
    assert sorted(optuna.get_all_study_names(journal())) == ["bugs", "mine"]


def test_a_study_of_one_s_own_images_resumes_only_on_the_images_it_began_on(tmp_path):
    import shutil

    from conftest import forget_folders, write_folder
    from PIL import Image

    from cnnbench import data
    from cnnbench.storage import DATA_ATTR

    root = write_folder(tmp_path / "bugs")
    text = """
        dataset: folder:bugs
        trials: 1
        epochs: 1
        sampler: random
        pruner: none
        baselines: []
        fixed: {batch_size: 32, device: cpu, width: 8}
        space:
          arch: {choices: [two_conv]}
          lr: {low: 0.001, high: 0.1, log: true}
    """

    def again(*args):  # as a new command: nothing listed, read or measured yet
        forget_folders()
        data._load_tensors.cache_clear()
        return sweep(tmp_path, text, *args)

    res = again()
    assert res.exit_code == 0, res.output
    began = optuna.load_study(study_name="bugs", storage=journal()).user_attrs[DATA_ATTR]
    assert began["train"] == 120 and began["test"] == 30 and began["classes"] == ["ant", "bee", "cat"]
    assert sum(began["per_class"]) == 150
    client = MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name == "bugs"]
    runs = {r.data.tags.get("cnnbench.role", "trial"): r for r in client.search_runs([experiment.experiment_id])}
    (given,) = runs["sweep"].inputs.dataset_inputs  # MLflow's Datasets column
    assert (given.dataset.name, given.dataset.digest, given.dataset.source) == \
        (f"folder:{root}", began["digest"], str(root))
    assert json.loads(given.dataset.profile) == {"train": 108, "val": 12, "test": 30, "shape": [1, 28, 28],
                                                 "classes": 3}
    assert runs["trial"].data.tags["cnnbench.data"] == began["digest"]

    ants = sorted((root / "train" / "ant").iterdir())
    n_ant, n_bee = (len(list(root.glob(f"*/{name}/*.png"))) for name in ("ant", "bee"))  # train and test
    shutil.copy(ants[0], root / "train" / "ant" / "extra.png")
    res = again("--trials", "2")
    assert res.exit_code == 2, res.output
    assert res.output.splitlines()[0] == (
        f"error: study 'bugs' in journal file ./cnnbench-journal.log was started on other images than "
        f"folder:{root} holds now (ant {n_ant} images then, {n_ant + 1} now): its trials would not compare with "
        "theirs")
    assert "fix: give --study NAME to start a study of the images as they are now, or put them back as they were" \
        in res.output
    assert len(trials_of("bugs")) == 1  # nothing trained

    res = again("--study", "more-bugs")  # a study of the images as they are now
    assert res.exit_code == 0 and "1 complete" in res.output, res.output
    (root / "train" / "ant" / "extra.png").unlink()
    res = again("--trials", "2")  # put back as they were, the images resume the study
    assert res.exit_code == 0 and "2 of 2 trials done" not in res.output and len(trials_of("bugs")) == 2, res.output

    shutil.move(ants[1], root / "train" / "bee" / "from-ant.png")  # misfiled
    res = again("--trials", "3")
    assert res.exit_code == 2 and f"(ant {n_ant} images then, {n_ant - 1} now; bee {n_bee} images then, " \
        f"{n_bee + 1} now)" in res.output, res.output
    shutil.move(root / "train" / "bee" / "from-ant.png", ants[1])

    keep = ants[2].read_bytes()
    image = Image.open(ants[2])
    image.putpixel((0, 0), 255 - image.getpixel((0, 0)))  # one pixel of one image
    image.save(ants[2])
    res = again("--trials", "3")
    assert res.exit_code == 2 and "(as many images in each class, but not the same ones)" in res.output, res.output
    ants[2].write_bytes(keep)

    for part in ("train", "test"):
        (root / part / "cat").rename(root / part / "cow")
    res = again("--trials", "3")
    assert res.exit_code == 2 and "(class cat gone; class cow new)" in res.output, res.output
    for part in ("train", "test"):
        (root / part / "cow").rename(root / part / "cat")

    study = optuna.load_study(study_name="bugs", storage=journal())
    study.set_user_attr(DATA_ATTR, None)  # a study begun before cnnbench recorded its data takes it now
    res = again("--trials", "3")
    assert res.exit_code == 0 and len(trials_of("bugs")) == 3, res.output
    assert optuna.load_study(study_name="bugs", storage=journal()).user_attrs[DATA_ATTR] == began
