"""The report, built from a tiny sweep recorded once on MNIST and CIFAR-10, checked against MLflow's own records."""

from __future__ import annotations

import csv
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cnnbench import report
from cnnbench.cli import main
from cnnbench.errors import ConfigError

# With seed 0 the random sampler gives one trial four_conv with kernel 7, which cannot be built: a pruned run.
MNIST = """
dataset: mnist
study: rep-mnist
trials: 4
epochs: 2
sampler: random
seed: 0
pruner: none
baselines: [seed004]
fixed: {val_fraction: 0.2, batch_size: 32, device: cpu, width: 4}
space:
  arch: {choices: [two_conv, four_conv]}
  kernel_size: {choices: [3, 7]}
  optimizer: {choices: [adam, sgd]}
tracking: {log_model: none, plots: false}
"""
CIFAR = """
dataset: cifar10
study: rep-cifar
trials: 4
epochs: 1
sampler: random
pruner: none
baselines: [seed003]
fixed: {val_fraction: 0.2, batch_size: 32, device: cpu, arch: two_conv, width: 4, lr: 3e-3}
space:
  optimizer: {choices: [adam, sgd]}
tracking: {log_model: none, plots: false}
"""
FAILED_REASON = "RuntimeError: out of memory (simulated crash)"


class Recorded:
    """Where the sweeps were recorded, and the report built from them."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.out = root / "report"
        self.paths: dict = {}
        self.messages: list[str] = []


@pytest.fixture(scope="module")
def recorded(tiny_data, tmp_path_factory) -> Recorded:
    rec = Recorded(tmp_path_factory.mktemp("recorded"))
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse isolation is per test
        from cnnbench import data

        mp.chdir(rec.root)
        mp.setenv("MLFLOW_TRACKING_URI", rec.uri)
        mp.setenv("CNNBENCH_CACHE_DIR", str(rec.root / "cache"))
        data._load_tensors.cache_clear()
        for name, text in (("mnist", MNIST), ("cifar", CIFAR)):
            path = rec.root / f"{name}.yaml"
            path.write_text(textwrap.dedent(text))
            res = CliRunner().invoke(main, ["sweep", str(path), "--data-dir", str(tiny_data)], catch_exceptions=False)
            assert res.exit_code == 0, res.output
        data._load_tensors.cache_clear()
        _record_a_crashed_trial("rep-mnist")
        rec.paths = report.build(out_dir=rec.out, echo=rec.messages.append)
    return rec


def _record_a_crashed_trial(study: str) -> None:
    # What a trial leaves behind when training raises: a FAILED run tagged FAIL (no final metrics).
    from cnnbench.tracking import Tracker

    tracker = Tracker(study)
    parent = [r for r in tracker.runs() if r.data.tags.get("cnnbench.role") == "sweep"][0].info.run_id
    run = tracker.start("trial-99", parent=parent, params={"arch": "four_conv", "optimizer": "adam", "lr": 0.01},
                        tags={"cnnbench.study": study, "cnnbench.trial": 99, "cnnbench.dataset": "mnist",
                              "cnnbench.baseline": "", "cnnbench.state": "FAIL", "cnnbench.reason": FAILED_REASON})
    tracker.log_metrics(run, {"val_acc": 0.1, "train_loss": 2.3}, step=1)
    tracker.end(run, "FAILED")


@pytest.fixture
def store(recorded, monkeypatch) -> Recorded:
    """The recorded store, as the current MLflow store and working directory of the test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", recorded.uri)
    monkeypatch.chdir(recorded.root)
    return recorded


def mlflow_trials(study: str) -> list:
    client = MlflowClient()
    exp = client.get_experiment_by_name(study)
    return [r for r in client.search_runs([exp.experiment_id]) if "cnnbench.trial" in r.data.tags]


def expected_order(runs: list) -> list:
    """Complete runs best first: validation accuracy, then the earlier run (as Optuna's best trial)."""
    complete = [r for r in runs if r.data.tags["cnnbench.state"] == "COMPLETE"]
    return sorted(complete, key=lambda r: (-r.data.metrics["best_val_acc"], r.info.start_time,
                                           int(r.data.tags["cnnbench.trial"])))


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


class Page(HTMLParser):
    """Parses the report: checks tags nest, collects URLs, text, and tables by (h2, h3) heading."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self, text: str):
        super().__init__()
        self.stack, self.errors, self.urls, self.tags = [], [], [], []
        self.text, self.headings, self.tables = [], {"h2": "", "h3": ""}, {}
        self._row = self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [(tag, k, v) for k, v in attrs if k in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag in ("h2", "h3"):
            self._heading = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "table":
            self.tables.setdefault((self.headings["h2"], self.headings["h3"]), []).append([])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()
        if tag in ("h2", "h3"):
            self.headings[tag] = "".join(self._heading).strip()
            if tag == "h2":
                self.headings["h3"] = ""
            self._heading = None
        elif tag in ("td", "th"):
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables[(self.headings["h2"], self.headings["h3"])][-1].append(self._row)

    def handle_data(self, data):
        self.text.append(data)
        if getattr(self, "_heading", None) is not None:
            self._heading.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def page(recorded: Recorded) -> Page:
    return Page(recorded.paths["html"].read_text())


def test_the_html_is_valid_self_contained_and_embeds_its_figures(store):
    doc = page(store)
    assert doc.errors == [] and doc.stack == []
    assert doc.tags[0] == "html" and "script" not in doc.tags and "link" not in doc.tags
    resources = [v for tag, k, v in doc.urls if k == "src"]
    assert len(resources) == 6 and all(v.startswith("data:image/png;base64,") for v in resources)
    assert all(v.startswith(("data:", "#")) for _, _, v in doc.urls), doc.urls
    assert "http" not in store.paths["html"].read_text().split("<style>")[1].split("</style>")[0]


def test_the_html_names_both_datasets_and_the_leaderboard_mlflow_reports(store):
    doc = page(store)
    text = "".join(doc.text)
    for dataset, study in (("mnist", "rep-mnist"), ("cifar10", "rep-cifar")):
        best = expected_order(mlflow_trials(study))
        header, *rows = doc.tables[(f"Dataset: {dataset}", "Leaderboard")][0]
        assert len(rows) == len(best)
        for row, run in zip(rows, best):
            cells = dict(zip(header, row))
            assert cells["run"] == run.info.run_id[:8]
            assert cells["test acc"] == pct(run.data.metrics["test_acc"])
            assert cells["val acc"] == pct(run.data.metrics["best_val_acc"])
            assert cells["params"] == f"{int(run.data.metrics['params']):,}"
            assert cells["arch"] == run.data.params["arch"] and cells["optimizer"] == run.data.params["optimizer"]
        winner = best[0]
        assert f"{dataset}: " in text and f"won with {pct(winner.data.metrics['test_acc'])} test accuracy" in text


def test_pruned_and_failed_runs_are_counted_and_kept_out_of_the_leaderboard(store):
    runs = mlflow_trials("rep-mnist")
    states = {s: [r for r in runs if r.data.tags["cnnbench.state"] == s] for s in ("COMPLETE", "PRUNED", "FAIL")}
    assert states["PRUNED"] and states["FAIL"], "the fixture must record a pruned and a failed run"
    assert all(r.data.tags["cnnbench.reason"].startswith("unbuildable") for r in states["PRUNED"])
    doc = page(store)
    tables = doc.tables[("Dataset: mnist", "Runs by state")]
    header, *rows = tables[0]
    counts = dict(zip(header, rows[0]))
    assert counts["study"] == "rep-mnist"
    assert (counts["complete"], counts["pruned"], counts["failed"], counts["total"]) == (
        str(len(states["COMPLETE"])), str(len(states["PRUNED"])), str(len(states["FAIL"])), str(len(runs)))
    reasons = [dict(zip(tables[1][0], r)) for r in tables[1][1:]]
    assert {"state": "failed", "reason": FAILED_REASON.split(" (")[0], "runs": "1"} in reasons
    [unbuildable] = [r["reason"] for r in reasons if r["reason"].startswith("unbuildable")]  # long: cut, and says so
    assert len(unbuildable) == 90 and unbuildable.endswith("…")
    board = read_csv(store.out / "csv" / "leaderboard.csv")
    left_out = {r.info.run_id for r in states["PRUNED"] + states["FAIL"]}
    assert not left_out & {row["run_id"] for row in board}
    shown = {row[-1] for d in ("mnist", "cifar10") for row in doc.tables[(f"Dataset: {d}", "Leaderboard")][0][1:]}
    assert not {rid[:8] for rid in left_out} & shown


def test_reasons_group_with_their_kin():
    # Pruned at one epoch with any value: one reason; a duplicate of any trial, by any sampler: one reason.
    from types import SimpleNamespace

    import pandas as pd

    said = ["pruned at epoch 2 (val_acc 0.1625)", "pruned at epoch 2 (val_acc 0.2000)",
            "duplicate of trial 3 (complete, val_acc 0.9912), with the same settings and seed: not trained again",
            "duplicate of trial 7 (pruned), with the same settings and seed: not trained again",
            "duplicate of trial 1: the grid's points differ only in settings this trial does not use"]
    table = report._Report._reasons(SimpleNamespace(trials=pd.DataFrame({"state": "PRUNED", "reason": said})))
    assert dict(zip(table["reason"], table["runs"])) == {"duplicate of an earlier trial": "3", "pruned at epoch 2": "2"}


def test_the_csvs_match_the_recorded_runs(store):
    runs = mlflow_trials("rep-mnist") + mlflow_trials("rep-cifar")
    by_id = {r.info.run_id: r for r in runs}
    table = read_csv(store.out / "csv" / "runs.csv")
    assert sorted(row["run_id"] for row in table) == sorted(by_id)
    assert any(row["host"] and row["cpu"] for row in table)
    for row in table:
        run = by_id[row["run_id"]]
        assert row["state"] == run.data.tags["cnnbench.state"] and row["status"] == run.info.status
        assert row["dataset"] == run.data.tags["cnnbench.dataset"] and row["trial"] == run.data.tags["cnnbench.trial"]
        assert row["arch"] == run.data.params["arch"]
        # the split and the seed, which the docs' "every config field" left out
        given = [run.data.params.get(k) for k in ("val_fraction", "seed")]  # none for a net that could not be built
        assert [row["val_fraction"] and float(row["val_fraction"]), row["seed"]] == [
            float(given[0]) if given[0] else "", given[1] or ""]
        assert [row[k] for k in ("precision", "host", "cpu", "gpu")] == [
            run.data.tags.get(f"cnnbench.{k}", "") for k in ("precision", "host", "cpu", "gpu")]
        if "test_acc" in run.data.metrics:
            assert float(row["test_acc"]) == pytest.approx(run.data.metrics["test_acc"])
    board = read_csv(store.out / "csv" / "leaderboard.csv")
    assert board and all(row["seed"] == by_id[row["run_id"]].data.params["seed"] for row in board)
    states = read_csv(store.out / "csv" / "states.csv")
    for row in states:
        expected = sum(r.data.tags["cnnbench.state"] == row["state"] and r.data.tags["cnnbench.study"] == row["study"]
                       for r in runs)
        assert int(row["runs"]) == expected
    assert sum(int(row["runs"]) for row in states) == len(runs)

    board = read_csv(store.out / "csv" / "leaderboard.csv")
    for dataset, study in (("mnist", "rep-mnist"), ("cifar10", "rep-cifar")):
        rows = [row for row in board if row["dataset"] == dataset]
        assert [row["run_id"] for row in rows] == [r.info.run_id for r in expected_order(mlflow_trials(study))]
        assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
        assert [float(row["params"]) for row in rows] == [by_id[row["run_id"]].data.metrics["params"] for row in rows]
        for row in rows:  # a Pareto run: no run at most as large is more accurate
            if row["pareto_params"] == "True":
                assert not any(float(o["params"]) <= float(row["params"]) and float(o["test_acc"]) >
                               float(row["test_acc"]) for o in rows)
    baselines = read_csv(store.out / "csv" / "baselines.csv")
    assert sorted((b["dataset"], b["baseline"]) for b in baselines) == [("cifar10", "seed003"), ("mnist", "seed004")]


def test_choices_are_ranked_side_by_side_across_datasets(store):
    side = read_csv(store.out / "csv" / "transfer.csv")
    optimizers = {(row["dataset"], row["value"]): int(float(row["rank"]))
                  for row in side if row["choice"] == "optimizer"}
    for dataset, study in (("mnist", "rep-mnist"), ("cifar10", "rep-cifar")):
        order = list(dict.fromkeys(r.data.params["optimizer"] for r in expected_order(mlflow_trials(study))))
        assert [optimizers[(dataset, o)] for o in order] == list(range(1, len(order) + 1))
    pairs = read_csv(store.out / "csv" / "transfer_spearman.csv")
    optimizer = next(p for p in pairs if p["choice"] == "optimizer")
    assert {optimizer["dataset_a"], optimizer["dataset_b"]} == {"mnist", "cifar10"}
    assert optimizer["shared"] == "2"  # adam and sgd ran on both
    text = "".join(page(store).text)
    assert "Across datasets" in text and "Spearman" in text


def test_the_markdown_links_its_figures_and_the_history_comes_from_the_study(store):
    md = store.paths["md"].read_text()
    assert [p.parent.name for p in store.paths["figures"]] == ["figures"] * 6
    for path in store.paths["figures"]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](figures/{path.name})" in md
    assert "## Dataset: mnist" in md and "## Dataset: cifar10" in md
    assert "Source of the history: study rep-mnist: Optuna study" in md  # the journal is in the working dir
    assert store.messages == []


def test_a_report_written_again_over_an_earlier_one_leaves_none_of_its_figures(store, tmp_path):
    out = tmp_path / "r"
    both = report.build(out_dir=out, formats=["md"], echo=lambda m: None)["figures"]
    (out / "figures" / "mine.png").write_bytes(b"a file of the user's")
    one = report.build(datasets=["cifar10"], out_dir=out, formats=["md"], echo=lambda m: None)["figures"]
    assert {p.name for p in one} == {"cifar10-history.png", "cifar10-tradeoffs.png", "cifar10-curves.png"}
    assert {p.name for p in both} > {p.name for p in one}
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted([*(p.name for p in one), "mine.png"])


def test_without_the_optuna_storage_the_history_comes_from_mlflow(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sweeps' journal file is not here
    messages = []
    paths = report.build(out_dir=tmp_path / "r", formats=["md"], echo=messages.append)
    md = paths["md"].read_text()
    assert "Source of the history: study rep-mnist: MLflow run order" in md
    assert any("rep-mnist" in m and "MLflow run order" in m for m in messages)


def test_two_studies_of_one_name_sharing_the_mlflow_store_are_told_apart(tiny_data, tmp_path, monkeypatch):
    # Two folders, each with its own journal file, sweeping into one MLflow store: one experiment, two trial 0s.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    sweep_file = tmp_path / "cifar.yaml"
    sweep_file.write_text(textwrap.dedent(CIFAR).replace("trials: 4", "trials: 2").replace("[seed003]", "[]"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        res = CliRunner().invoke(main, ["sweep", str(sweep_file), "--data-dir", str(tiny_data)])
        assert res.exit_code == 0, res.output
        assert ("warning: MLflow experiment 'rep-cifar' already records another study of this name" in res.output) \
            == (folder == "b"), res.output
    parents = {r.info.run_id: r.info.start_time for r in MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("rep-cifar").experiment_id]) if "cnnbench.trial" not in r.data.tags}
    first, second = sorted(parents, key=parents.get)

    messages = []
    report.build(out_dir=tmp_path / "r", formats=["csv", "md"], echo=messages.append)  # from folder b
    runs = read_csv(tmp_path / "r" / "csv" / "runs.csv")
    by_sweep = {r.info.run_id: r.data.tags["mlflow.parentRunId"] for r in mlflow_trials("rep-cifar")}
    assert sorted((row["study"], row["trial"]) for row in runs) == [
        ("rep-cifar", "0"), ("rep-cifar", "1"), ("rep-cifar (2)", "0"), ("rep-cifar (2)", "1")]
    assert all(by_sweep[row["run_id"]] == {"rep-cifar": first, "rep-cifar (2)": second}[row["study"]] for row in runs)
    text = (tmp_path / "r" / "report.md").read_text()
    best = read_csv(tmp_path / "r" / "csv" / "leaderboard.csv")[0]
    # Where trial numbers repeat across studies, each trial is named with its study.
    assert f"| study {best['study']}, trial {best['trial']} |" in text  # the best run per architecture and optimizer
    # Folder b's journal holds the second study: its history comes from it, the first one's from MLflow.
    assert "Source of the history: study rep-cifar: MLflow run order; study rep-cifar (2): Optuna study." in text
    assert any("2 studies of this name recorded into its MLflow experiment" in m for m in messages)
    assert any(m.startswith("study 'rep-cifar': the study 'rep-cifar' in ./cnnbench-journal.log is "
                            "another one of this name") for m in messages), messages


def test_one_dataset_is_reported_and_says_there_is_nothing_to_compare(store, tmp_path):
    messages = []
    paths = report.build(datasets=["cifar10"], out_dir=tmp_path / "r", echo=messages.append)
    text = "".join(Page(paths["html"].read_text()).text)
    assert "Dataset: cifar10" in text and "Dataset: mnist" not in text and "Across datasets" not in text
    # The store holds mnist too: the option left it out, and no sweep is wanted to compare them.
    said = ("Only one dataset (cifar10) is in this report, so there is no cross-dataset comparison; the store also "
            "holds runs on mnist: leave out or widen --dataset to compare them.")
    assert said in text and messages[-1] == said
    assert {row["dataset"] for row in read_csv(tmp_path / "r" / "csv" / "runs.csv")} == {"cifar10"}
    paths = report.build(experiments=["rep-mnist"], out_dir=tmp_path / "m", formats=["csv"], echo=messages.append)
    assert set(paths) == {"csv"} and not (tmp_path / "m" / "report.html").exists()
    assert {row["study"] for row in read_csv(tmp_path / "m" / "csv" / "runs.csv")} == {"rep-mnist"}
    assert messages[-1].endswith("the store also holds runs on cifar10: leave out or widen --experiment to compare "
                                 "them.")


def test_an_empty_store_gives_a_report_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    messages = []
    paths = report.build(out_dir=tmp_path / "r", echo=messages.append)
    text = "".join(Page(paths["html"].read_text()).text)
    assert f"{report.EMPTY} in the MLflow store sqlite:///{tmp_path / 'empty.db'}" in text
    assert "cnnbench sweep" in text and "Leaderboard" not in text
    assert len(messages) == 1 and messages[0].startswith(report.EMPTY)
    assert read_csv(paths["csv"][0]) == [] and paths["csv"][0].read_text().startswith("dataset,study,trial")
    assert report.EMPTY in paths["md"].read_text()
    report.build(datasets=["cifar10"], out_dir=tmp_path / "c", echo=messages.append)
    assert "Run `cnnbench sweep cifar10` to record one" in messages[-1]
    report.build(datasets=["folder:pets"], out_dir=tmp_path / "f", echo=messages.append)  # no images here: none needed
    assert f"Run a sweep file that says `dataset: folder:{tmp_path / 'pets'}` to record one" in messages[-1]


def _hand_runs(study: str, runs: list[tuple]) -> dict[str, str]:
    """Record a sweep run and, under it, a trial run per (name, params, state, metrics, reason) as a sweep
    does (a name starting with "seed" is a baseline); return their run ids by name."""
    from cnnbench.tracking import Tracker

    tracker = Tracker(study)
    parent = tracker.start(f"sweep-{study}", tags={"cnnbench.study": study, "cnnbench.role": "sweep"})
    ids = {}
    for name, params, state, metrics, reason in runs:
        number = len(ids)
        ids[name] = run = tracker.start(f"trial-{number}", parent=parent, params={"dataset": "mnist", **params}, tags={
            "cnnbench.study": study, "cnnbench.trial": number, "cnnbench.dataset": "mnist",
            "cnnbench.baseline": name if name.startswith("seed") else "", "cnnbench.state": state,
            "cnnbench.reason": reason})
        tracker.log_metrics(run, {"val_acc": metrics.get("best_val_acc", metrics.get("val_acc")), "train_loss": 1.0},
                            step=1)
        tracker.log_metrics(run, {k: v for k, v in metrics.items() if k != "val_acc"})
        tracker.end(run, {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[state])
    return ids


def test_runs_rank_by_validation_accuracy_and_the_verdict_weighs_the_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # The winner's schedule takes no decay settings, the baseline's step schedule does; a sweep logs them for both.
    schedules = {"b": {"scheduler": "onecycle", "step_size": 1, "gamma": 0.1},
                 "seed004": {"scheduler": "step", "step_size": 1, "gamma": 0.7}}
    ids = _hand_runs("hand", [
        (name, {"arch": arch, "optimizer": optimizer, "lr": 0.01, **schedules.get(name, {})}, state, metrics, reason)
        for name, arch, optimizer, state, metrics, reason in [
            ("a", "two_conv", "adam", "COMPLETE",
             {"best_val_acc": 0.90, "test_acc": 0.95, "params": 1000, "train_seconds": 10}, ""),
            ("b", "vgg", "adam", "COMPLETE",
             {"best_val_acc": 0.95, "test_acc": 0.93, "params": 8000, "train_seconds": 20}, ""),
            ("c", "vgg", "sgd", "COMPLETE",
             {"best_val_acc": 0.95, "test_acc": 0.94, "params": 5000, "train_seconds": 5}, ""),
            ("seed004", "two_conv", "adam", "COMPLETE",
             {"best_val_acc": 0.92, "test_acc": 0.92, "params": 300_000, "train_seconds": 30}, ""),
            ("pruned", "vgg", "sgd", "PRUNED", {"val_acc": 0.99}, "pruned at epoch 1"),
            ("failed", "vgg", "sgd", "FAIL", {}, "RuntimeError: boom"),
            ("cut", "vgg", "sgd", "FAIL", {"val_acc": 0.5}, "interrupted"),  # Ctrl-C: failed, counted apart
        ]])

    paths = report.build(out_dir=tmp_path / "r", echo=lambda _: None)
    board = read_csv(tmp_path / "r" / "csv" / "leaderboard.csv")
    # Validation first; b and c tie, and the earlier run ranks first, as in Optuna's best trial (whatever their test
    # accuracy); the pruned run's high val_acc counts for nothing.
    assert [row["run_id"] for row in board] == [ids["b"], ids["c"], ids["seed004"], ids["a"]]
    assert {row["run_id"] for row in board if row["pareto_params"] == "True"} == {ids["a"]}
    assert {row["run_id"] for row in board if row["pareto_seconds"] == "True"} == {ids["a"], ids["c"]}
    text = "".join(Page(paths["html"].read_text()).text)
    assert ("mnist: vgg (optimizer adam, scheduler onecycle) won with 93.00% test accuracy (study hand, trial 1), "
            "+1.00 points over the best seed baseline, seed004 (92.00%), at a cost of 8,000 parameters (0.027× the "
            "baseline's 300,000) and 20.0 s of training (0.67× the baseline's 30.0 s).") in text
    assert "Runs: 4 complete, 1 pruned, 1 failed, 1 interrupted." in text
    assert "Only one dataset (mnist) is recorded, so there is no cross-dataset comparison; sweep another" in text
    assert {(row["state"], row["runs"]) for row in read_csv(tmp_path / "r" / "csv" / "states.csv")} == {
        ("COMPLETE", "4"), ("PRUNED", "1"), ("FAIL", "1"), ("INTERRUPTED", "1")}
    assert "Source of the history: study hand: MLflow run order" in text
    # Decay settings show only where the run's schedule uses them (c and a logged no schedule).
    assert [(row["scheduler"], row["step_size"], row["gamma"]) for row in board] == [
        ("onecycle", "", ""), ("", "", ""), ("step", "1", "0.7"), ("", "", "")]


def test_the_tuned_best_is_weighed_only_against_baselines_trained_on_its_budget(tmp_path, monkeypatch):
    # Two studies of one dataset: the winner trained 3 epochs, the only baseline 1 (another study). A gain over it
    # would credit the tuning with what two more epochs gave.
    net, done = {"arch": "two_conv", "optimizer": "adam", "val_fraction": 0.1}, {"params": 1000, "train_seconds": 10}
    short = [("seed004", {**net, "epochs": 1}, "COMPLETE", {"best_val_acc": 0.90, "test_acc": 0.90, **done}, ""),
             ("x", {**net, "epochs": 1}, "COMPLETE", {"best_val_acc": 0.91, "test_acc": 0.91, **done}, "")]
    long = [("y", {**net, "epochs": 3}, "COMPLETE", {"best_val_acc": 0.97, "test_acc": 0.97, **done}, "")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _hand_runs("short", short)
    _hand_runs("long", long)

    paths = report.build(out_dir=tmp_path / "r", echo=lambda _: None)
    text = "".join(Page(paths["html"].read_text()).text)
    assert ("won with 97.00% test accuracy (study long, trial 0), with 1,000 parameters and 10.0 s of training. No "
            "seed baseline was trained on its budget (3 epochs, validation share 0.1), so no gain over one is given; "
            "the seed baselines below trained on others.") in text
    assert "tuned best, study long, trial 0" in text and "seed004, study short, trial 0" in text
    assert [row["tuned_best_test_acc"] for row in read_csv(tmp_path / "r" / "csv" / "baselines.csv")] == [""]

    # The study of the winner ran the baseline too, on its own budget.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'both.db'}")
    _hand_runs("short", short)
    _hand_runs("long", long + [("seed004", {**net, "epochs": 3}, "COMPLETE",
                                {"best_val_acc": 0.95, "test_acc": 0.95, "params": 300_000, "train_seconds": 30}, "")])
    paths = report.build(out_dir=tmp_path / "r", echo=lambda _: None)
    text = "".join(Page(paths["html"].read_text()).text)
    assert "(study long, trial 0), +2.00 points over the best seed baseline, seed004 (95.00%), at a cost" in text
    assert "seed004, study long, trial 1" in text and "seed004, study short, trial 0" in text
    baselines = read_csv(tmp_path / "r" / "csv" / "baselines.csv")
    assert [(row["study"], row["epochs"], row["tuned_best_test_acc"]) for row in baselines] == [
        ("long", "3", "0.97"), ("short", "1", "")]


@pytest.mark.parametrize("kwargs,expected", [
    ({"formats": ["html", "pdf"]}, "unknown report format 'pdf'; valid: html, md, csv"),
    ({"datasets": ["mnits"]}, "did you mean 'mnist'"),
    ({"experiments": ["rep-mnsit"]}, "did you mean 'rep-mnist'"),
    ({"storage": "nowhere.log"}, "no Optuna storage at nowhere.log"),
], ids=["format", "dataset", "experiment", "storage"])
def test_bad_arguments_fail_before_anything_is_written(store, tmp_path, kwargs, expected):
    with pytest.raises(ConfigError) as err:
        report.build(out_dir=tmp_path / "r", **kwargs)
    assert err.value.exit_code == 2 and expected in str(err.value)
    assert not (tmp_path / "r").exists()


def test_an_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "r").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        report.build(out_dir=tmp_path / "r")


class HandStore:
    """An MLflow store of trial runs made by hand, and the figures a report on it draws."""

    def __init__(self, tmp_path: Path, monkeypatch):
        from cnnbench.tracking import Tracker

        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        self.drawn: list = []
        png = report._png
        monkeypatch.setattr(report, "_png", lambda fig: self.drawn.append(fig) or png(fig))
        self.tracker = Tracker("hand")
        self.out = tmp_path / "r"

    def record(self, state: str = "COMPLETE", value: float = 0.9, **params) -> None:
        number = len(self.tracker.runs())
        run = self.tracker.start(f"trial-{number}", params={"dataset": "mnist", "arch": "two_conv", **params}, tags={
            "cnnbench.study": "hand", "cnnbench.trial": number, "cnnbench.dataset": "mnist", "cnnbench.state": state})
        self.tracker.log_metrics(run, {"val_acc": value, "train_loss": 0.6}, step=1)
        if state == "COMPLETE":
            self.tracker.log_metrics(run, {"best_val_acc": value, "test_acc": value, "params": 10, "train_seconds": 1})
        self.tracker.end(run, "FINISHED" if state == "COMPLETE" else "KILLED")

    def figure(self, suptitle: str) -> tuple:
        """Build the report; return the figure whose title holds ``suptitle`` and its legend's labels."""
        self.drawn.clear()
        report.build(out_dir=self.out, formats=["md"], echo=lambda _: None)
        fig = next(f for f in self.drawn if suptitle in f.get_suptitle())
        return fig, [t.get_text() for t in fig.legends[0].get_texts()]


def test_the_training_loss_panel_names_the_runs_label_smoothing(tmp_path, monkeypatch):
    store = HandStore(tmp_path, monkeypatch)
    store.record(value=0.90, label_smoothing=0.1)
    store.record(value=0.91, label_smoothing=0.1)
    fig, labels = store.figure("learning curves")
    assert fig.axes[1].get_title() == "training loss (label smoothing 0.1)"
    assert not any("smoothing" in label for label in labels)
    store.record(value=0.92, label_smoothing=0.0)  # runs that differ: each one's in the legend
    fig, labels = store.figure("learning curves")
    assert fig.axes[1].get_title() == "training loss"
    assert labels[0].endswith(", label smoothing 0)") and labels[1].endswith("0.1)")


def test_the_history_spans_the_complete_trials_and_puts_pruned_outliers_on_its_edge(tmp_path, monkeypatch):
    store = HandStore(tmp_path, monkeypatch)
    for state, value in [("COMPLETE", 0.98), ("PRUNED", 0.50), ("COMPLETE", 0.99)]:
        store.record(state, value)
    fig, legend = store.figure("optimization history")
    assert fig.axes[0].get_ylim()[0] < 50 and "pruned (last value)" in legend  # two complete trials: every value
    for state, value in [("PRUNED", 0.985), ("PRUNED", 0.999), ("COMPLETE", 0.982)]:
        store.record(state, value)
    fig, legend = store.figure("optimization history")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 50 < low < 98 and 99 < high < 99.9  # the complete trials' 98-99%, not the pruned 50%
    points = {tuple(p) for c in ax.collections for p in c.get_offsets().tolist()}
    assert (1, low) in points and (4, high) in points and (3, 98.5) in points  # below, above, inside
    assert {"pruned (last value)", "pruned, below the axis", "pruned, above the axis"} <= set(legend)


def test_a_history_of_one_trial_has_one_tick_at_its_number(tmp_path, monkeypatch):
    store = HandStore(tmp_path, monkeypatch)
    store.record("COMPLETE", 0.98)
    fig, _ = store.figure("optimization history")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert [t for t in ax.get_xticks() if low <= t <= high] == [0]  # not -0.04, -0.02, 0.00, ...


def test_a_flat_history_keeps_near_its_value_and_no_accuracy_axis_passes_100(tmp_path, monkeypatch):
    store = HandStore(tmp_path, monkeypatch)
    for _ in range(2):  # equal values: matplotlib alone would pad by 5% of the value, to 93-103%
        store.record("COMPLETE", 0.9832)
    fig, _ = store.figure("optimization history")
    low, high = fig.axes[0].get_ylim()
    assert 97.8 < low < 98.32 < high < 98.9
    store.record("COMPLETE", 0.9995)
    fig, _ = store.figure("optimization history")
    low, high = fig.axes[0].get_ylim()
    assert low < 98.32 and high == 100
    for title in ("against size and training time", "learning curves"):  # one complete run: one accuracy
        store = HandStore(tmp_path / title, monkeypatch)
        store.record("COMPLETE", 0.9832)
        fig, _ = store.figure(title)
        low, high = fig.axes[0].get_ylim()
        assert 97.8 < low < 98.32 < high < 98.9, title
