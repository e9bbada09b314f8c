"""Studies in every kind of storage, and every sampler and pruner, on tiny data."""

import contextlib
import logging
import os
import textwrap
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from cnnbench.cli import main
from cnnbench.errors import ConfigError
from cnnbench.storage import local_file, open_storage

SMALL = """
dataset: mnist
study: small
trials: 3
epochs: 2
sampler: {sampler}
pruner: {pruner}
objective: {objective}
fixed: {{batch_size: 32, device: cpu, arch: two_conv, optimizer: adam, val_fraction: 0.2}}
space:
  lr: {lr}
  width: {{choices: [4, 8]}}
tracking: {{log_model: none, plots: false}}
"""


def sweep(tmp_path, tiny_data, *args, sampler="tpe", pruner="median", objective="val_acc"):
    path = tmp_path / "small.yaml"
    path.write_text(textwrap.dedent(SMALL.format(sampler=sampler, pruner=pruner, objective=objective, lr=_lr(sampler))))
    return CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tiny_data), *args],
                              catch_exceptions=False)


def _lr(sampler: str) -> str:
    # A range, so that no trial draws an earlier one's settings (it would be pruned as its duplicate); the grid
    # tries each combination of choices once.
    return "{choices: [3e-3, 1e-2]}" if sampler == "grid" else "{low: 3e-3, high: 1e-2, log: true}"


def trials_in(url):
    return optuna.load_study(study_name="small", storage=open_storage(url)).get_trials()


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc", "grid"])
def test_every_sampler_runs_a_study(tmp_path, tiny_data, sampler):
    res = sweep(tmp_path, tiny_data, sampler=sampler)
    assert res.exit_code == 0, res.output
    trials = trials_in(None)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(set(t.params) == {"lr", "width"} for t in trials)


RANGES = """
dataset: mnist
study: ranges
trials: 14
sampler: {sampler}
space:
  arch: {{choices: [two_conv, vgg]}}
  lr: {{low: 1e-3, high: 0.3, log: true}}
  weight_decay: {{low: 1e-6, high: 1e-3, log: true}}
  optimizer: {{choices: [sgd]}}
  momentum: {{low: 0.8, high: 0.95}}
  depth: {{choices: [1, 2], when: {{arch: vgg}}}}
"""


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_every_sampler_draws_from_ranges_past_its_startup_trials(tmp_path, monkeypatch, sampler):
    # The studies above search choices only, which the model-based samplers draw at random; here each
    # sampler fits its model (GP's, CMA-ES's: the packages they need) on a quick stand-in objective.
    from cnnbench.space import load_sweep, suggest
    from cnnbench.sweep import make_sampler

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ranges.yaml").write_text(textwrap.dedent(RANGES.format(sampler=sampler)))
    sweep_def, _ = load_sweep("ranges.yaml")
    study = optuna.create_study(direction="maximize")
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("optuna").addHandler(handler)  # Optuna's own logger does not propagate
    try:
        for draw in range(sweep_def.trials):
            study.sampler = make_sampler(sweep_def, draw)
            trial = study.ask()
            values = suggest(trial, sweep_def)
            study.tell(trial, -(values["lr"] - 0.05) ** 2 - values["momentum"] + (values["arch"] == "vgg"))
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    # A conditional setting (depth for vgg) is drawn apart from the model by design: no warning says so.
    assert not [m for m in said if "sampled independently" in m]
    assert len(study.trials) == sweep_def.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE and 1e-3 <= t.params["lr"] <= 0.3 for t in study.trials)


@pytest.mark.parametrize("pruner", ["halving", "hyperband", "none"])
def test_every_pruner_runs_a_study(tmp_path, tiny_data, pruner):
    res = sweep(tmp_path, tiny_data, pruner=pruner)
    assert res.exit_code == 0, res.output
    trials = trials_in(None)
    assert all(t.state.is_finished() for t in trials)
    # Steps count half epochs; without a pruner nothing is judged at half an epoch, so nothing is evaluated there.
    reported = [1, 2, 4] if pruner != "none" else [2, 4]
    assert all(sorted(t.intermediate_values) == reported for t in trials if t.state.name == "COMPLETE")


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_a_pareto_study_has_two_objectives(tmp_path, tiny_data, sampler):
    res = sweep(tmp_path, tiny_data, sampler=sampler, objective="[val_acc, params]", pruner="none")
    assert res.exit_code == 0, res.output
    trials = trials_in(None)
    assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["params"] for t in trials)
    study = optuna.load_study(study_name="small", storage=open_storage(None))
    assert study.best_trials
    res = CliRunner().invoke(main, ["best", "--json"], catch_exceptions=False)
    assert res.exit_code == 0


@pytest.mark.parametrize("content", [b"notes, not a journal\n", bytes(range(256)) * 4])
def test_a_damaged_journal_is_refused_and_left_as_it_was(tmp_path, tiny_data, content):
    # Optuna reads past a last line it cannot decode, so a one-line file that is no journal would be appended to.
    journal_file = tmp_path / "cnnbench-journal.log"
    journal_file.write_bytes(content)
    (tmp_path / "small.yaml").write_text(textwrap.dedent(SMALL.format(sampler="tpe", pruner="none", lr=_lr("tpe"),
                                                                      objective="val_acc")))
    for args in (["sweep", str(tmp_path / "small.yaml"), "--data-dir", str(tiny_data)], ["best"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        assert res.output.startswith("error: cannot open storage journal file ./cnnbench-journal.log: ")
        assert "is not an Optuna journal, or it is damaged" in res.output
    assert journal_file.read_bytes() == content


def test_a_journal_line_with_half_a_record_says_where_and_the_command_that_mends_it(tmp_path, tiny_data):
    # Left by Optuna's own writer on a full disk: the message said "Expecting ',' delimiter: line 1 column 31" and
    # "move it aside to start afresh", which loses the study.
    import subprocess

    study = optuna.create_study(study_name="small", storage=open_storage(None))
    for value in range(3):
        study.set_user_attr(f"a{value}", value)
    journal_file = tmp_path / "cnnbench-journal.log"
    whole = journal_file.read_bytes()
    lines = whole.splitlines(keepends=True)
    lines[2] = lines[1][:30] + lines[2]
    journal_file.write_bytes(b"".join(lines))
    (tmp_path / "small.yaml").write_text(textwrap.dedent(SMALL.format(sampler="tpe", pruner="none", lr=_lr("tpe"),
                                                                      objective="val_acc")))
    for args in (["sweep", str(tmp_path / "small.yaml"), "--data-dir", str(tiny_data)], ["best"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        first, fix = res.output.splitlines()
        assert first == ("error: cannot open storage journal file ./cnnbench-journal.log: its line 3 starts with half "
                         "a record, cut short (by a full disk, say) and run into the next one, so Optuna reads none "
                         "of it")
        assert fix.startswith("  fix: sed -i.bak '3s/^.\\{30\\}//' cnnbench-journal.log cuts that half off")
    subprocess.run(fix.removeprefix("  fix: ").split(" cuts ")[0], shell=True, check=True, cwd=tmp_path)
    assert journal_file.read_bytes() == whole and (tmp_path / "cnnbench-journal.log.bak").exists()
    assert optuna.load_study(study_name="small", storage=open_storage(None)).user_attrs == {"a0": 0, "a1": 1, "a2": 2}


def test_a_sqlite_storage_that_is_no_database_is_refused_before_the_data(tmp_path, tiny_data, monkeypatch):
    import cnnbench.data

    (tmp_path / "optuna.db").write_text("not a database\n")
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the storage was checked"))
    res = sweep(tmp_path, tiny_data, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}")
    assert res.exit_code == 2 and f"{tmp_path / 'optuna.db'} is not a SQLite database" in res.output, res.output
    assert (tmp_path / "optuna.db").read_text() == "not a database\n" and not (tmp_path / "mlflow.db").exists()


def _tables(path):
    import sqlite3

    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_the_mlflow_store_and_the_study_storage_are_never_one_database(tmp_path, tiny_data, monkeypatch):
    # `--storage sqlite:///mlflow.db` made Optuna's tables in MLflow's store: MLflow then failed on every command
    # in that folder with an alembic traceback (and named as the MLflow store, an Optuna database got MLflow's).
    own = "fix: give the study a file of its own: --storage sqlite:///optuna.db, or leave --storage out"
    res = sweep(tmp_path, tiny_data, "--storage", "sqlite:///mlflow.db")
    assert res.exit_code == 2 and res.output.startswith(
        f"error: --storage: sqlite:///mlflow.db is the MLflow store's file too (sqlite:///{tmp_path}/mlflow.db): "
        "Optuna and MLflow each need a database of their own\n") and own in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["small.yaml"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///cnnbench-journal.log")  # the default storage's file
    res = sweep(tmp_path, tiny_data)
    assert res.exit_code == 2 and res.output.startswith(
        "error: MLFLOW_TRACKING_URI: journal file ./cnnbench-journal.log is the MLflow store's file too "
        "(sqlite:///cnnbench-journal.log)") and "fix: point MLFLOW_TRACKING_URI at" in res.output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    assert sweep(tmp_path, tiny_data, "--storage", "sqlite:///optuna.db").exit_code == 0
    stores = {name: _tables(tmp_path / name) for name in ("mlflow.db", "optuna.db")}
    res = CliRunner().invoke(main, ["best", "--storage", "sqlite:///mlflow.db"])
    assert res.exit_code == 2 and res.output.startswith(
        "error: cannot open storage sqlite:///mlflow.db: mlflow.db is an MLflow store, not an Optuna storage\n")
    assert own in res.output
    res = CliRunner().invoke(main, ["report", "--storage", "sqlite:///mlflow.db"])
    assert res.exit_code == 2 and res.output.startswith(
        "error: --storage: mlflow.db is an MLflow store, not an Optuna storage\n")
    assert not (tmp_path / "report").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///optuna.db")
    wrong = ("optuna.db is an Optuna storage, not an MLflow store\n"
             "  fix: point MLFLOW_TRACKING_URI at an MLflow store of")
    for args, code in ((["report"], 1), (["best", "--storage", "sqlite:///optuna.db", "--export"], 1),
                       (["sweep", str(tmp_path / "small.yaml"), "--storage", "sqlite:///other.db"], 2)):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == code and wrong in res.output, (args, res.output)
    assert {name: _tables(tmp_path / name) for name in stores} == stores
    assert not (tmp_path / "exports").exists() and not (tmp_path / "other.db").exists()
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as db:  # another program's: neither writes there
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT)")
        db.commit()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///app.db")
    res = CliRunner().invoke(main, ["report"])
    assert res.exit_code == 1 and "app.db is a database of other tables (users), not an MLflow store" in res.output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    res = CliRunner().invoke(main, ["best", "--storage", "sqlite:///app.db"])
    assert res.exit_code == 2 and "app.db is a database of other tables (users), not an Optuna storage" in res.output
    assert _tables(tmp_path / "app.db") == ["sqlite_sequence", "users"]


def test_a_folder_store_mlflow_no_longer_opens_is_one_line_before_anything(tmp_path, tiny_data, monkeypatch):
    # MLFLOW_TRACKING_URI=./mlruns (MLflow 2's default) failed with MLflow's paragraph, cut to 200 characters, after
    # the study was made and the data loaded, with "check that the server is up".
    from mlflow import environment_variables

    import cnnbench.data

    if not hasattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("MLflow before 3.13 opens folder stores")
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the stores were read"))
    for uri in ("./mlruns", f"file://{tmp_path}/mlruns"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for args in (["report"], ["sweep", str(tmp_path / "small.yaml")]):
            res = sweep(tmp_path, tiny_data) if args[0] == "sweep" else CliRunner().invoke(main, args)
            assert res.exit_code == 2 and res.output.startswith(
                f"error: MLFLOW_TRACKING_URI: the MLflow store {uri} is a folder, which MLflow "), res.output
            assert "fix: unset it (runs then go to ./mlflow.db) or give sqlite:///FILE" in res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["small.yaml"]  # no study, no store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own way to open one: reading creates none
    res = CliRunner().invoke(main, ["report", "--format", "md"])
    assert res.exit_code == 0 and "Nothing is recorded yet" in res.output and not (tmp_path / "mlruns").exists()


def test_a_tracking_store_of_no_kind_or_a_server_down_is_refused_before_the_data_or_the_study(tmp_path, tiny_data,
                                                                                                 monkeypatch):
    # Both made the study (and queued its baselines) before MLflow was first asked; foo:// then exited 1 with
    # MLflow's list of schemes cut at 200 characters.
    import cnnbench.data

    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the stores were read"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    res = sweep(tmp_path, tiny_data)
    assert res.exit_code == 2 and res.output.startswith(
        "error: MLFLOW_TRACKING_URI: the MLflow store foo://bar is of no kind MLflow knows\n"), res.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    res = sweep(tmp_path, tiny_data)
    assert res.exit_code == 1 and res.output.startswith("error: cannot reach the MLflow store http://127.0.0.1:9: ")
    assert "fix: check MLFLOW_TRACKING_URI and that the server is up" in res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["small.yaml"]  # no study, no lock


def test_a_file_that_is_no_mlflow_store_is_named_in_one_line(tmp_path, tiny_data, monkeypatch):
    import cnnbench.data

    (tmp_path / "mlflow.db").write_text("not a database\n")
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the stores were checked"))
    res = sweep(tmp_path, tiny_data)
    assert res.exit_code == 2, res.output
    assert res.output == (f"error: cannot open the MLflow store sqlite:///{tmp_path / 'mlflow.db'}: "
                          f"{tmp_path / 'mlflow.db'} is not a SQLite database\n"
                          "  fix: move it aside to start afresh, or set MLFLOW_TRACKING_URI\n")
    assert not (tmp_path / "cnnbench-journal.log").exists()
    res = CliRunner().invoke(main, ["report"])
    assert res.exit_code == 1 and res.output.startswith("error: cannot read the MLflow store "), res.output
    assert (tmp_path / "mlflow.db").read_text() == "not a database\n"


@pytest.mark.parametrize("revision, first, fix", [
    ("0584bdc529eb", "was made by an older MLflow: its schema is 0584bdc529eb, MLflow {version} reads ",
     "back it up, then run `mlflow db upgrade sqlite:///{db}`; cnnbench left it as it was"),
    ("ffffffffffff", "was made by a newer MLflow than this one ({version}): its schema ffffffffffff is unknown here",
     "upgrade MLflow to the version that made it"),
], ids=["older", "newer"])
def test_an_mlflow_store_of_another_mlflow_s_schema_says_which_and_what_to_run(tmp_path, tiny_data, monkeypatch,
                                                                               revision, first, fix):
    # An MLflow upgrade leaves ./mlflow.db at the old schema; MLflow's paragraph was cut at 200 characters, after
    # the data was loaded and the study touched, with "check MLFLOW_TRACKING_URI and that the server is up".
    import sqlite3
    import subprocess
    import sys

    import mlflow

    import cnnbench.data

    db = tmp_path / "mlflow.db"
    subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.set_tracking_uri('sqlite:///{db}'); "
                    "mlflow.create_experiment('mnist')"], check=True)  # another process: MLflow keeps its engines
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    before = db.read_bytes()
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the store was read"))
    store = f"sqlite:///{db}"
    for args in (["sweep", str(tmp_path / "small.yaml")], ["report"], ["best"]):
        res = sweep(tmp_path, tiny_data) if args[0] == "sweep" else CliRunner().invoke(main, args)
        if args == ["best"]:  # no study: `best` reads Optuna's storage alone
            assert res.exit_code == 2 and "no study" in res.output, res.output
            continue
        lines = res.output.splitlines()
        assert res.exit_code == 2 and len(lines) == 2, res.output
        assert lines[0].startswith(f"error: the MLflow store {store} " + first.format(version=mlflow.__version__))
        assert lines[1].startswith("  fix: " + fix.format(db=db)), res.output
    assert db.read_bytes() == before and not (tmp_path / "cnnbench-journal.log").exists()


@pytest.mark.parametrize("place", ["storage", "store", "artifacts", "checkpoints", "lock", "read-only"])
def test_a_sweep_that_could_not_write_its_files_says_which_before_the_data(tmp_path, tiny_data, monkeypatch, place):
    # Run from a read-only folder, a sweep loaded its data, then stopped on a traceback from the study's lock file
    # (exit 1); with only ./mlflow.db there, it retried "unable to open database file" for minutes.
    import tempfile

    import cnnbench.data

    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the check"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    args, what = [], {"storage": f"the study's storage ({blocker}/s.log)",
                      "store": f"the MLflow store (sqlite:///{blocker}/m.db)",
                      "artifacts": f"the runs' artifacts ({tmp_path / 'mlruns'})", "lock": "the study's lock file",
                      "checkpoints": "the trials' checkpoints (./cnnbench-checkpoints)",
                      "read-only": "the study's storage (journal file ./cnnbench-journal.log)"}[place]
    why = f"{blocker} is a file"
    if place == "storage":
        args = ["--storage", f"{blocker}/s.log"]
    elif place == "store":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/m.db")
    elif place == "lock":  # a server's study is locked in CNNBENCH_LOCK_DIR
        args = ["--storage", "postgresql://nobody@127.0.0.1:1/none"]
        monkeypatch.setenv("CNNBENCH_LOCK_DIR", str(blocker))
    elif place == "read-only":
        def refuse(*a, **k):
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        why = f"cannot write in {tmp_path}: Read-only file system"
    else:
        blocker.rename(tmp_path / {"artifacts": "mlruns", "checkpoints": "cnnbench-checkpoints"}[place])
        why = f"{tmp_path / {'artifacts': 'mlruns', 'checkpoints': 'cnnbench-checkpoints'}[place]} is a file"
    before = sorted(p.name for p in tmp_path.iterdir())
    res = sweep(tmp_path, tiny_data, *args)
    lines = res.output.splitlines()
    assert res.exit_code == 2 and len(lines) == 2, res.output
    assert lines[0] == f"error: {why}, for {what}" and lines[1].endswith("run the sweep from a folder you can write")
    if place in ("artifacts", "checkpoints"):  # ./mlruns and the checkpoints go where the sweep runs, whatever store
        assert lines[1] == "  fix: run the sweep from a folder you can write"
    assert sorted(p.name for p in tmp_path.iterdir()) == before + (["small.yaml"] if "small.yaml" not in before
                                                                   else [])


def test_an_experiment_s_own_artifact_folder_that_cannot_be_written_says_to_start_another(tmp_path, monkeypatch):
    import subprocess
    import sys

    from cnnbench.space import load_sweep
    from cnnbench.sweep import check_writable

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the experiment's artifact folder was")
    subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.set_tracking_uri('sqlite:///{tmp_path}/mlflow.db'); "
                    f"mlflow.create_experiment('small', artifact_location='{blocker}/runs')"], check=True)
    path = tmp_path / "small.yaml"
    path.write_text(textwrap.dedent(SMALL.format(sampler="tpe", pruner="none", lr=_lr("tpe"), objective="val_acc")))
    with pytest.raises(ConfigError) as info:
        check_writable(load_sweep(str(path))[0])
    assert str(info.value) == (f"{blocker} is a file, for the runs' artifacts ({blocker}/runs)\n  fix: give --study "
                               "NAME for a new experiment (its artifacts in ./mlruns), or point MLFLOW_TRACKING_URI at "
                               "another store")


def test_a_sweep_tracked_on_a_server_checks_only_its_own_files(tmp_path, monkeypatch):
    # An MLflow server keeps the runs and their artifacts: the check of ./mlruns failed on its missing folder name
    # ("'NoneType' object has no attribute 'absolute'") and every sweep against a server stopped there.
    from cnnbench.space import load_sweep
    from cnnbench.sweep import check_writable

    path = tmp_path / "small.yaml"
    path.write_text(textwrap.dedent(SMALL.format(sampler="tpe", pruner="none", lr=_lr("tpe"), objective="val_acc")))
    (tmp_path / "mlruns").write_text("not the server's artifacts")  # in the way of a local store only
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    for storage in (None, "postgresql://nobody@127.0.0.1:1/none"):
        check_writable(load_sweep(str(path), {"storage": storage} if storage else {})[0])


def test_a_journal_append_cut_short_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    # Optuna's own backend left part of the record: the next append glued a record to it, a line no reader decodes,
    # and the study could not be read again (every command: "Expecting ',' delimiter").
    import errno

    path = tmp_path / "j.log"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.set_user_attr("kept", 1)
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd, data):
        if len(data) > 8:
            return real(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        study.set_user_attr("lost", 2)
    monkeypatch.setattr(os, "write", real)
    assert path.read_bytes() == before
    study.set_user_attr("after", 3)
    fresh = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert fresh.user_attrs == {"kept": 1, "after": 3}


def test_a_full_disk_stops_the_sweep_in_one_line_and_the_next_run_resumes(tmp_path, tiny_data, monkeypatch):
    # The trial's checkpoint failed as "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos",
    # each trial after it failed the same way, and the MLflow store's "database or disk is full" was waited on for
    # ten minutes as "unreachable", with MLflow's tracebacks on stderr.
    import errno

    import mlflow

    import cnnbench.train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    room = cnnbench.train.write_whole
    monkeypatch.setattr(cnnbench.train, "write_whole", full)
    res = sweep(tmp_path, tiny_data)
    lines = res.output.splitlines()
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert lines[-2:] == ["error: no space left on the disk: [Errno 28] No space left on device",
                          "  fix: free some space, then run the same `cnnbench sweep` command again to resume"]
    url = str(tmp_path / "cnnbench-journal.log")
    trials = trials_in(url)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]  # the sweep stopped at the first: it is retried
    assert trials[0].user_attrs["reason"] == "no space left on the disk: [Errno 28] No space left on device"
    run = mlflow.get_run(trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["cnnbench.reason"] == trials[0].user_attrs["reason"]
    monkeypatch.setattr(cnnbench.train, "write_whole", room)  # space freed
    res = sweep(tmp_path, tiny_data)
    assert res.exit_code == 0, res.output
    trials = trials_in(url)
    assert trials[1].params == trials[0].params and trials[1].state.name in ("COMPLETE", "PRUNED")
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3


def test_a_worker_stopped_by_a_full_disk_says_so_in_one_line(monkeypatch, capsys):
    # A worker of --workers N printed multiprocessing's traceback of torch's "unexpected pos" error.
    import errno

    import cnnbench.errors
    import cnnbench.sweep

    def work(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(cnnbench.sweep, "work", work)
    monkeypatch.setattr(cnnbench.errors, "install_signal_handlers", lambda: None)  # SIGTERM stays pytest's
    with pytest.raises(SystemExit) as info:
        cnnbench.sweep._worker_main(None, None, None, 1, os.getpid())
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: no space left on the disk: [Errno 28] No space left on device\n"


def test_a_full_disk_is_not_waited_on_as_an_unreachable_store(capsys):
    import sqlite3

    import sqlalchemy.exc

    from cnnbench.errors import outlast
    from cnnbench.storage import unavailable

    calls = []

    def write():
        calls.append(1)
        raise sqlalchemy.exc.OperationalError("UPDATE runs", {}, sqlite3.OperationalError("database or disk is full"))

    with pytest.raises(sqlalchemy.exc.OperationalError):
        outlast(write, what="the store", transient=unavailable, patience=30)
    assert len(calls) == 1 and "unreachable" not in capsys.readouterr().err


def test_sqlite_storage(tmp_path, tiny_data):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = sweep(tmp_path, tiny_data, "--storage", url)
    assert res.exit_code == 0, res.output
    assert len(trials_in(url)) == 3
    res = CliRunner().invoke(main, ["best", "--storage", url, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_a_sqlite_url_names_the_file_sqlalchemy_opens():
    from sqlalchemy.engine import make_url

    # SQLAlchemy 2.1 decodes percent escapes (/tmp/my runs/mlflow.db); 2.0, the newest on Python 3.10, does not
    for url in ("sqlite:////tmp/my%20runs/mlflow.db", "sqlite:///runs/optuna.db?timeout=20", "sqlite:///a%25b.db",
                "sqlite:///plain.db"):
        assert local_file(url) == Path(make_url(url).database)
    assert local_file("sqlite:///:memory:") is None and local_file("postgresql://h/db") is None


@pytest.fixture
def postgres_url():
    import psycopg

    name = f"cnnbench_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgresql_storage(tmp_path, tiny_data, postgres_url):
    import sqlalchemy

    # `best` on a database without a study made Optuna's tables in it
    res = CliRunner().invoke(main, ["best", "--storage", postgres_url, "--study", "small"])
    assert res.exit_code == 2 and "no study 'small'" in res.output, res.output
    engine = sqlalchemy.create_engine(postgres_url)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()
    res = sweep(tmp_path, tiny_data, "--storage", postgres_url)
    assert res.exit_code == 0, res.output
    assert len(trials_in(postgres_url)) == 3
    res = sweep(tmp_path, tiny_data, "--storage", postgres_url, "--trials", "4")
    assert res.exit_code == 0 and len(trials_in(postgres_url)) == 4
    another_definition_is_refused_before_the_data(tmp_path, postgres_url)


def another_definition_is_refused_before_the_data(tmp_path, url):
    # On a server's storage a changed sweep file was refused only once the data had loaded (or downloaded).
    res = sweep(tmp_path, tmp_path / "no-data", "--storage", url, objective="val_loss")
    assert res.exit_code == 2 and "error: study 'small' in " in res.output, res.output
    assert "was started with another definition: objective" in res.output, res.output


@pytest.fixture
def redis_url():
    import redis

    prefix = f"cnnbench-test-{uuid.uuid4().hex[:10]}"
    yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def test_redis_storage(tmp_path, tiny_data, redis_url):
    res = sweep(tmp_path, tiny_data, "--storage", redis_url)
    assert res.exit_code == 0, res.output
    assert len(trials_in(redis_url)) == 3
    another_definition_is_refused_before_the_data(tmp_path, redis_url)


def test_opening_a_storage_warns_of_nothing(tmp_path, redis_url):
    # `best` and `report` open storages outside the sweep's warning filters: Optuna marks the redis
    # backend and an RDB storage's heartbeats experimental, which says nothing a user can act on.
    for url in (redis_url, f"sqlite:///{tmp_path / 'x.db'}", str(tmp_path / "x.log")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            open_storage(url)
        # (only Optuna's: a collected connection of an earlier test may warn here too)
        assert [str(w.message) for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)] == [], url


def test_a_redis_database_the_server_lacks_is_a_clear_error(tmp_path, tiny_data):
    res = sweep(tmp_path, tiny_data, "--storage", f"redis://127.0.0.1:6379/99?prefix=cnnbench-test-{uuid.uuid4().hex}")
    assert res.exit_code == 2 and res.output.startswith(
        "error: cannot open storage redis://127.0.0.1:6379/99?prefix=cnnbench-test-"), res.output  # was a traceback
    assert "DB index is out of range\n  fix: check the URL\n" in res.output
    assert not os.path.exists(tmp_path / "mlflow.db")


def test_unreachable_database_is_a_clear_error(tmp_path, tiny_data):
    res = sweep(tmp_path, tiny_data, "--storage", "postgresql://postgres@127.0.0.1:1/nothing")
    assert res.exit_code == 2 and "cannot open storage" in res.output
    assert not os.path.exists(tmp_path / "mlflow.db")


@pytest.mark.parametrize("url,expected", [
    # A driver not installed: Optuna's "Failed to import DB access module" after the data was loaded (with the
    # hint to check that the database is up), or a traceback from the study's lock.
    ("postgresql+pg8000://postgres@127.0.0.1/test", "cannot open storage postgresql+pg8000://***@127.0.0.1/test: "
     "its driver, the Python module 'pg8000', is not installed\n  fix: pip install the package that provides"),
    ("postgresql+nodriver://127.0.0.1/test", "not a database URL: postgresql+nodriver://127.0.0.1/test"),
    ("redis://127.0.0.1:1", "the Python module 'redis', is not installed\n  fix: pip install 'cnnbench[redis]'"),
])
def test_a_storage_whose_driver_is_missing_is_one_line_before_the_data(tmp_path, tiny_data, monkeypatch, url,
                                                                      expected):
    import importlib.util

    import cnnbench.data

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else find_spec(name, *a))
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the storage check"))
    res = sweep(tmp_path, tiny_data, "--storage", url)
    assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "mlflow.db").exists()
    for command in (["best"], ["report"]):
        res = CliRunner().invoke(main, [*command, "--storage", url])
        assert res.exit_code == 2 and expected.split("\n")[0].removeprefix("cannot open ") in res.output, res.output


def test_importances_leave_the_baselines_out_and_tell_what_mattered():
    from cnnbench.storage import param_importances

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for name in ("seed004", "seed002"):  # baselines: enqueued presets, no parameters sampled
        study.enqueue_trial({}, user_attrs={"baseline": name})
        trial = study.ask()
        study.tell(trial, 0.5)
    assert param_importances(study) == {}  # nothing sampled yet
    for _ in range(30):
        trial = study.ask()
        x, noise = trial.suggest_float("x", 0, 1), trial.suggest_float("noise", 0, 1)
        trial.suggest_categorical("pool_first", [True])  # a single choice: never varies, so given no importance
        study.tell(trial, x + 0.01 * noise)
    importances = param_importances(study)
    assert set(importances) == {"x", "noise"} and sum(importances.values()) == pytest.approx(1)
    assert importances["x"] > 0.9
    assert param_importances(study) == importances  # seeded: the same on every read


def test_reading_importances_says_nothing_on_the_terminal_and_leaves_optunas_verbosity_alone():
    from cnnbench.storage import sampled_study

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, value=0.5,
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("optuna")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's own default
    logger.addHandler(handler)
    try:
        copy = sampled_study(study)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        logger.removeHandler(handler)
        optuna.logging.set_verbosity(before)
    assert len(copy.trials) == 1
    assert [r.getMessage() for r in records] == []



def test_a_new_mlflow_store_waits_for_a_program_making_it_under_another_spelling_of_its_url(tmp_path):
    # `mlflow ui` in this folder makes the store as sqlite:///mlflow.db under MLflow's lock for that text; a sweep
    # given the absolute URL once made the same tables at the same moment, and one of the two died in a migration.
    import fcntl
    import hashlib
    import subprocess
    import sys
    import tempfile
    import time

    digest = hashlib.md5(b"sqlite:///mlflow.db", usedforsecurity=False).hexdigest()
    code = "from cnnbench.tracking import Tracker; print(Tracker('spelt').experiment_id)"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with open(f"{tempfile.gettempdir()}/db_init_lock-{digest}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as MLflow holds it while it makes the tables
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(8)  # the import of MLflow alone takes seconds
        assert proc.poll() is None and not (tmp_path / "mlflow.db").exists()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip().splitlines()[-1] == "1", out


def test_a_command_stopped_while_the_store_s_tables_are_made_leaves_no_half_made_store(tmp_path, monkeypatch):
    # A Ctrl-C in the second it takes left a file of some tables, which every later command refused as a database
    # of other tables, or failed on as a migration half done.
    import mlflow.store.db.utils as db

    from cnnbench.tracking import Tracker

    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    monkeypatch.chdir(folder)
    made = db._upgrade_db

    def cut(engine):
        raise KeyboardInterrupt  # the first tables are made; the migrations are not

    monkeypatch.setattr(db, "_upgrade_db", cut)
    with pytest.raises(KeyboardInterrupt):
        Tracker("cut")
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(db, "_upgrade_db", made)
    assert Tracker("cut").experiment_id == "1" and [p.name for p in folder.iterdir()] == ["mlflow.db"]
