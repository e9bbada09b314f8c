"""Reports: what the recorded sweeps found, per dataset and across datasets, as HTML, Markdown and CSV.

Everything comes from the MLflow runs (one search over the chosen experiments; metric histories only for
the few best runs) and, where its storage is found, each Optuna study. Nothing is trained, and neither
store is written to.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import pandas as pd

from cnnbench.config import FIELDS, SCHEDULE_SETTINGS, TrainConfig
from cnnbench.errors import ConfigError, StudyError, UnknownNameError, listed
from cnnbench.paths import FOLDER, dataset_name, unwritable, write_whole
from cnnbench.plots import PALETTE
from cnnbench.storage import INTERRUPTED, local_file, read_study
from cnnbench.tracking import cnnbench_experiments, deleted_trial_runs, metric_histories, search_runs

#: The formats :func:`build` writes.
FORMATS = ("html", "md", "csv")
#: Rows of each leaderboard.
TOP = 10
#: How many of the best runs of a dataset get learning curves.
CURVES = 5
#: The choices ranked side by side across datasets.
CHOICES = ("arch", "optimizer", "scheduler")
#: Trial states, as the ``cnnbench.state`` tag spells them, and INTERRUPTED: a FAIL whose reason is that the
#: command was stopped (Ctrl-C, SIGTERM), counted apart as the sweep's summary counts it.
STATES = ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING")
EMPTY = "Nothing is recorded yet"

_STATUS_STATE = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING",
                 "SCHEDULED": "RUNNING"}
_STATE_WORD = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "INTERRUPTED": "interrupted",
               "RUNNING": "running"}
# States the verdict's count of runs names only where some run is in them.
_SHOWN_IF_ANY = ("INTERRUPTED", "RUNNING")
# Config fields that say where or how a run was computed rather than what was trained.
_PLUMBING = {"dataset", "device", "precision", "compile", "eval_batch_size", "seed", "val_fraction"}
_CONFIG = [f for f in FIELDS if f not in _PLUMBING]
# What a run trained on and with beside its config: its data split and its seed (the CSVs give them too).
_TRAINED = [*_CONFIG, "val_fraction", "seed"]
_METRICS = ("test_acc", "test_loss", "best_val_acc", "val_acc", "half_epoch_val_acc", "params", "train_seconds",
            "best_epoch")
# Colours for categories: the palette without yellow (faint on white) and black (kept for marks).
_COLOURS = [c for c in PALETTE if c not in ("#F0E442", "#000000")]
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
_GREY = "#8C8C8C"
_OBJECTIVES = {"val_acc": ("validation accuracy (%)", 100.0), "val_loss": ("validation loss", 1.0),
               "params": ("parameters (count)", 1.0), "train_seconds": ("training time (s)", 1.0)}
_DASH = "–"
# Report figures are read on screen beside text: larger and sharper than the per-run artifacts.
_DPI = 110
_RC = {"font.size": 10.5, "axes.titlesize": 11.5, "figure.titlesize": 13, "legend.fontsize": 10,
       "legend.title_fontsize": 10, "axes.spines.top": False, "axes.spines.right": False}


class _Link(NamedTuple):
    """A table cell that points at an MLflow run."""

    text: str
    href: str | None
    title: str


def build(experiments: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
          out_dir: str | Path = "report", formats: Iterable[str] = FORMATS, *, storage: str | None = None,
          top: int = TOP, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the report of the recorded sweeps into ``out_dir``; return the written paths by format.

    ``experiments`` (MLflow experiment names) defaults to every cnnbench experiment in the tracking store,
    ``datasets`` to every dataset recorded there; ``storage`` is the Optuna storage of the studies (default:
    the one each sweep recorded, where it can be read from here). The result maps ``"html"`` and ``"md"`` to
    the report files, ``"csv"`` to the list of tables and ``"figures"`` to the Markdown's image files, for
    the formats asked. An empty store gives a report that says nothing is recorded.

    Raises :class:`ConfigError` for an unknown format, dataset or experiment and a missing storage file,
    before anything is written; :class:`CnnbenchError` when the tracking store cannot be read.
    """
    formats = _check_formats(formats)
    wanted = _check_datasets(datasets)
    out = _check_out(out_dir)
    if storage is not None:
        _check_storage(storage)
    if int(top) < 1:
        raise ConfigError(f"the leaderboard needs at least 1 row, got {top}", source="--top")
    known = cnnbench_experiments()
    names = _check_experiments(experiments, known)

    runs = search_runs(names) if names else pd.DataFrame()
    trials = _trials(runs)
    everywhere = trials["dataset"]
    if wanted:
        trials = trials[trials["dataset"].isin(wanted)]
    if trials["dataset"].nunique() == 1 and experiments and (others := [n for n in known if n not in names]):
        everywhere = pd.concat([everywhere, _trials(search_runs(others))["dataset"]])  # where the others are
    elsewhere = [d for d in dict.fromkeys(everywhere) if d not in set(trials["dataset"])]
    order = wanted or _by_first_run(trials)
    studies, notes = _studies(trials, runs, storage)
    if names and (deleted := [d for d in deleted_trial_runs([known[n] for n in names]) if not wanted or d in wanted]):
        notes.append(f"{len(deleted):,} trial run(s) deleted in MLflow (in `mlflow ui`, say) are left out, as "
                     "`cnnbench best` leaves them out: `mlflow runs restore --run-id ID` brings one back.")
    sets = [_analyse(name, trials[trials["dataset"] == name]) for name in order]
    drawn = bool({"html", "md"} & set(formats))  # figures and their curves only for a format that shows them
    curves = _curves(sets) if drawn else pd.DataFrame(columns=["run_id", "key", "step", "value"])

    import matplotlib

    with matplotlib.rc_context(_RC):
        report = _Report(sets, studies, notes, curves, names, int(top), drawn, elsewhere,
                         [flag for flag, given in (("--experiment", experiments), ("--dataset", datasets)) if given])
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    if "html" in formats:
        written["html"] = write_whole(out / "report.html", _html(report.doc))
    if "md" in formats:
        written["md"], written["figures"] = _markdown(report.doc, out)
    if "csv" in formats:
        written["csv"] = _csv(report, trials, out / "csv")
    for message in report.messages:
        echo(message)
    return written


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    chosen = (formats,) if isinstance(formats, str) else tuple(formats)
    for name in chosen:
        if name not in FORMATS:
            raise ConfigError(f"unknown report format {name!r}; valid: {', '.join(FORMATS)}", source="--format",
                              hint=_close(name, FORMATS))
    if not chosen:
        raise ConfigError(f"no report format asked for; valid: {', '.join(FORMATS)}", source="--format")
    return tuple(dict.fromkeys(chosen))


def _check_datasets(datasets: Iterable[str] | None) -> list[str]:
    if not datasets:
        return []
    from cnnbench.data import DATASETS

    # A folder of one's images, as its runs record it; its images need not be here to report on them.
    chosen = list(dict.fromkeys(map(dataset_name, [datasets] if isinstance(datasets, str) else datasets)))
    for name in chosen:
        try:
            if not name.startswith(FOLDER):
                DATASETS.get(name)
        except UnknownNameError as err:  # it lists the valid names and the closest one
            err.source = "--dataset"
            raise
    return chosen


def _check_out(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the report folder {str(out)!r} is a file", hint="give another folder with --out")
    if why := unwritable(out):
        raise ConfigError(f"cannot write the report to {str(out)!r}: {why}", source="--out",
                          hint="give another folder with --out")
    return out


def _check_storage(url: str) -> None:
    from cnnbench.storage import check_url, damaged, describe

    check_url(url)
    hint = "give the --storage the sweeps used, or leave it out to use the one each recorded"
    path = local_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"no Optuna storage at {describe(url)}", source="--storage", hint=hint)
    if found := damaged(url):  # the MLflow store's file, say: not read as a study's, nor written to
        raise ConfigError(found[0], source="--storage", hint=hint)


def _check_experiments(experiments: Iterable[str] | None, known: dict[str, str]) -> list[str]:
    if not experiments:
        return list(known)
    chosen = [experiments] if isinstance(experiments, str) else list(dict.fromkeys(experiments))
    for name in chosen:
        if name not in known:
            from cnnbench.tracking import redact, tracking_uri

            there = ", ".join(known) or "none"
            raise ConfigError(f"no cnnbench experiment {name!r} in the MLflow store {redact(tracking_uri())}; "
                              f"there: {there}", source="--experiment",
                              hint=_close(name, known) or ("run `cnnbench sweep DATASET` first" if not known else
                                                           "check MLFLOW_TRACKING_URI"))
    return chosen


def _close(name: str, valid: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else None


#: The trial runs' tags that say what ran them (empty for runs recorded before they were tagged).
_MACHINE = ("precision", "host", "cpu", "gpu")


def _trials(runs: pd.DataFrame) -> pd.DataFrame:
    """Return one row per trial run: its study, dataset, state, what ran it, config fields (typed) and final metrics."""
    columns = ["study", "study_name", "sweep_run", "dataset", "trial", "baseline", "state", "status", "reason",
               *_MACHINE, "run_id", "experiment_id", "start_time", *_TRAINED, *_METRICS]
    if runs.empty or "tags.cnnbench.trial" not in runs:
        return pd.DataFrame(columns=columns)
    runs = runs[runs["tags.cnnbench.trial"].notna()]

    def col(name: str, default: Any = None) -> pd.Series:
        return runs[name] if name in runs else pd.Series(default, index=runs.index, dtype=object)

    status = col("status").astype(str)
    tag = col("tags.cnnbench.state")
    # A run whose process died keeps the RUNNING tag; its status says how MLflow closed it.
    state = tag.where(tag.isin(STATES[:3]) | (status == "RUNNING"), status.map(_STATUS_STATE)).fillna("RUNNING")
    reason = col("tags.cnnbench.reason").fillna("").astype(str)
    state = state.where((state != "FAIL") | (reason != INTERRUPTED), "INTERRUPTED")
    frame = pd.DataFrame({
        "study": col("tags.cnnbench.study").astype(str), "dataset": col("tags.cnnbench.dataset").fillna(
            col("params.dataset")).astype(str),
        "trial": pd.to_numeric(col("tags.cnnbench.trial"), errors="coerce").astype("Int64"),
        "baseline": col("tags.cnnbench.baseline").fillna("").astype(str), "state": state.astype(str),
        "status": status, "reason": reason,
        **{name: col(f"tags.cnnbench.{name}").fillna("").astype(str) for name in _MACHINE},
        "run_id": col("run_id").astype(str), "experiment_id": col("experiment_id").astype(str),
        "start_time": col("start_time"), "sweep_run": col("tags.mlflow.parentRunId").fillna("").astype(str),
    })
    for name in _TRAINED:
        frame[name] = _typed(name, col(f"params.{name}"))
    for name in _METRICS:
        frame[name] = pd.to_numeric(col(f"metrics.{name}"), errors="coerce").astype(float)
    for name in ("params", "best_epoch"):
        frame[name] = frame[name].round().astype("Int64")
    return _tell_apart(frame.sort_values(["start_time", "trial"], kind="stable").reset_index(drop=True))


def _tell_apart(trials: pd.DataFrame) -> pd.DataFrame:
    """Label apart the studies of one name whose trials recorded into one experiment (each under its own sweep run).

    A study's MLflow experiment is named after it, so two studies of one name in different storages (two folders'
    journal files sharing a tracking server, or a journal moved aside and begun afresh) record side by side, each
    with a trial 0. The first to start keeps its name as ``study``, the later ones become "NAME (2)", "NAME (3)", in
    the order they started; ``study_name`` keeps the name.
    """
    trials.insert(1, "study_name", trials["study"])
    for name, runs in trials.groupby("study_name", sort=False):
        sweeps = list(dict.fromkeys(runs["sweep_run"]))  # the trials are in the order they started
        for k, sweep_run in enumerate(sweeps[1:], start=2):
            trials.loc[(trials["study_name"] == name) & (trials["sweep_run"] == sweep_run), "study"] = f"{name} ({k})"
    return trials


def _typed(name: str, values: pd.Series) -> pd.Series:
    """MLflow params are strings: read each config field back as its TrainConfig type."""
    annotation = str(TrainConfig.model_fields[name].annotation)
    if "list" in annotation or not ("int" in annotation or "float" in annotation or "bool" in annotation):
        return values.astype(object).where(values.notna(), None)
    if "bool" in annotation:
        return values.map({"True": True, "False": False}).astype("boolean")
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers.round().astype("Int64") if "int" in annotation else numbers


def _by_first_run(trials: pd.DataFrame) -> list[str]:
    # Datasets in the order they were first swept.
    return list(dict.fromkeys(trials["dataset"]))


@dataclass
class _Dataset:
    """One dataset's trial runs, and its complete runs ranked best first."""

    name: str
    trials: pd.DataFrame
    ranked: pd.DataFrame
    columns: list[str]
    score: str

    @property
    def counts(self) -> dict[str, int]:
        found = self.trials["state"].value_counts()
        return {s: int(found.get(s, 0)) for s in STATES}

    @property
    def winner(self) -> pd.Series | None:
        return self.ranked.iloc[0] if len(self.ranked) else None

    def best(self, baseline: bool) -> pd.Series | None:
        rows = self.ranked[(self.ranked["baseline"] != "") == baseline]
        return rows.iloc[0] if len(rows) else None

    def baseline_for(self, row: pd.Series) -> pd.Series | None:
        """The best complete seed baseline trained on ``row``'s budget (:func:`_budget`), the one to measure it
        against; ``None`` where none was."""
        same = pd.Series([_budget(r) == _budget(row) for _, r in self.ranked.iterrows()], index=self.ranked.index,
                         dtype=bool)
        rows = self.ranked[(self.ranked["baseline"] != "") & same]
        return rows.iloc[0] if len(rows) else None


def _budget(row: pd.Series) -> tuple[str, str]:
    """What a run was given to train: its epochs and the share of the training images held out for validation.
    A sweep runs its baselines on its own; runs of other budgets (other studies) are not compared."""
    return _value(row["epochs"]), _value(row["val_fraction"])


def _budget_text(row: pd.Series) -> str:
    epochs, held = _budget(row)
    return f"{epochs} epoch{'s' * (epochs != '1')}, validation share {held}"


def _schedule_settings_used(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with each decay setting (``step_size``, ``gamma``, ...) blank where the run's schedule
    ignores it, so that a one-cycle winner is not described by the step schedule's defaults."""
    runs = runs.copy()
    for name in {setting for used in SCHEDULE_SETTINGS.values() for setting in used}:
        used = runs["scheduler"].map(lambda schedule: name in SCHEDULE_SETTINGS.get(schedule, ())).astype(bool)
        runs[name] = runs[name].astype(object).where(used, None)
    return runs


def _analyse(name: str, trials: pd.DataFrame) -> _Dataset:
    """Rank the complete runs of one dataset and find the config fields that tell them apart."""
    complete = _schedule_settings_used(trials[(trials["state"] == "COMPLETE") & trials["test_acc"].notna()])
    # The sweeps optimise validation accuracy; ranking on it keeps the test accuracy an honest estimate. Ties go
    # to the earlier run, as in Optuna's best trial: the one `cnnbench best --export` exports.
    score = "best_val_acc" if len(complete) and complete["best_val_acc"].notna().all() else "test_acc"
    ranked = complete.sort_values(score, ascending=False, kind="stable").reset_index(drop=True)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    ranked["pareto_params"] = _pareto(ranked, "params")
    ranked["pareto_seconds"] = _pareto(ranked, "train_seconds")
    shown = ranked if len(ranked) else trials
    columns = [c for c in _CONFIG if c in ("arch", "optimizer") or
               shown[c].astype(str).nunique(dropna=False) > 1]
    return _Dataset(name, trials, ranked, columns, score)


def _pareto(ranked: pd.DataFrame, cost: str) -> pd.Series:
    """Which runs no other run beats on both test accuracy (higher) and ``cost`` (lower)."""
    flags = pd.Series(False, index=ranked.index)
    best = -1.0
    for i, acc in ranked.dropna(subset=[cost]).sort_values([cost, "test_acc"], ascending=[True, False])[
            "test_acc"].items():
        if acc > best:
            flags[i], best = True, acc
    return flags


def _curves(sets: list[_Dataset]) -> pd.DataFrame:
    """Return the per-epoch metrics of the best few runs of every dataset (one history call per run and key)."""
    ids = [rid for ds in sets for rid in ds.ranked["run_id"].head(CURVES)]
    if not ids:
        return pd.DataFrame(columns=["run_id", "key", "step", "value"])
    return metric_histories(ids, ("val_acc", "train_acc", "train_loss"))


def _studies(trials: pd.DataFrame, runs: pd.DataFrame, storage: str | None) -> tuple[dict[str, Any], list[str]]:
    """Return the readable Optuna study of each study name (or None) and notes on those that were not."""
    from cnnbench.storage import DEFAULT_JOURNAL, describe

    tags = {}
    if not runs.empty and "tags.cnnbench.role" in runs and "tags.cnnbench.storage" in runs:
        parents = runs[runs["tags.cnnbench.role"] == "sweep"]
        tags = dict(zip(parents["run_id"], parents["tags.cnnbench.storage"]))
    found, notes = {}, []
    studies = trials.drop_duplicates("study")
    for label, name, sweep_run in zip(studies["study"], studies["study_name"], studies["sweep_run"]):
        others = trials.loc[trials["study_name"] == name, "study"].unique()
        if label == name and len(others) > 1:
            notes.append(f"study {name!r}: {len(others)} studies of this name recorded into its MLflow experiment, "
                         f"each under its own sweep run (from other storages, or a storage begun afresh); they are "
                         f"shown as {', '.join(repr(o) for o in others)}, in the order they started")
        tag = tags.get(sweep_run)
        url = storage if storage is not None else _recorded_storage(tag, DEFAULT_JOURNAL)
        record, why = None, None
        if url is None:
            why = f"its Optuna storage ({tag}) is a server, read only when named with --storage"
        else:
            try:
                record = read_study(url, name)
            except StudyError as err:
                why = err.message
            else:
                if record is None:
                    why = f"it is not in {describe(url)}, seen from {Path.cwd()}"
                elif sweep_run and record.parent_run and record.parent_run != sweep_run:
                    record, why = None, f"the study {name!r} in {describe(url)} is another one of this name"
        if why:
            notes.append(f"study {label!r}: {why}; its history comes from MLflow run order, without importances")
        found[label] = record
    return found, notes


def _recorded_storage(tag: Any, default: str) -> str | None:
    """The storage a sweep recorded in its ``cnnbench.storage`` tag, if it is a file this process may read."""
    if not isinstance(tag, str) or not tag:
        return default
    if tag.startswith("journal file "):
        return tag.removeprefix("journal file ")
    if tag.endswith(".log") or tag.startswith(("journal:", "sqlite:///")):
        return tag
    return None  # a server: its credentials are not recorded, so it is opened only when named with --storage


@dataclass
class _Doc:
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        self.blocks.append(("h", level, text, anchor))

    def para(self, text: str, cls: str = "") -> None:
        self.blocks.append(("p", text, cls))

    def items(self, texts: Sequence[str], cls: str = "") -> None:
        self.blocks.append(("ul", list(texts), cls))

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(("table", frame, caption))

    def figure(self, name: str, png: bytes, alt: str, caption: str) -> None:
        self.blocks.append(("figure", name, png, alt, caption))


class _Report:
    """Lays out the whole report from the analysed datasets."""

    def __init__(self, sets: list[_Dataset], studies: dict[str, Any], notes: list[str], curves: pd.DataFrame,
                 experiments: list[str], top: int, drawn: bool, elsewhere: Sequence[str] = (),
                 narrowed_by: Sequence[str] = ()):
        from cnnbench.tracking import redact, tracking_uri

        self.sets, self.studies, self.notes, self.curves, self.top = sets, studies, notes, curves, top
        self.drawn, self.elsewhere, self.narrowed_by = drawn, list(elsewhere), list(narrowed_by)
        self.uri = redact(tracking_uri())
        self.messages: list[str] = []
        archs = sorted({a for ds in sets for a in ds.trials["arch"].dropna().astype(str)})
        self.style = {a: (_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)]) for i, a in enumerate(archs)}
        self.doc = _Doc()
        self._layout(experiments)

    def _layout(self, experiments: list[str]) -> None:
        doc = self.doc
        doc.heading(1, "cnnbench report")
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        recorded = [ds for ds in self.sets if len(ds.trials)]
        n_runs = sum(len(ds.trials) for ds in self.sets)
        doc.para(f"Built {when} from the MLflow store `{self.uri}`: {len(experiments)} experiment(s) "
                 f"({', '.join(experiments) or 'none'}), {n_runs:,} trial run(s) on "
                 f"{len(recorded)} dataset(s).", "meta")
        if not n_runs:
            what = (f"for {', '.join(ds.name for ds in self.sets)} " if self.sets else "")
            only = self.sets[0].name if len(self.sets) == 1 else None
            sweep = ("`cnnbench sweep DATASET` (e.g. `cnnbench sweep mnist`)" if only is None
                     else f"a sweep file that says `dataset: {only}`" if only.startswith(FOLDER)
                     else f"`cnnbench sweep {only}`")
            message = (f"{EMPTY} {what}in the MLflow store {self.uri}: no cnnbench trial run. Run {sweep} to record "
                       f"one, then `cnnbench report` again.")
            doc.para(message, "empty")
            self.messages.append(message)
            return
        doc.items([f"[{ds.name}](#{_slug(ds.name)})" for ds in self.sets]
                  + (["[Across datasets](#across-datasets)"] if len(recorded) > 1 else []), "toc")
        doc.heading(2, "Verdict", "verdict")
        doc.para("Each dataset's winner is its complete run with the best validation accuracy (what the sweeps "
                 "optimise); the accuracies quoted are on the test set, which no sweep sees while tuning.", "note")
        for ds in self.sets:
            doc.para(self._verdict(ds), "verdict")
        if len(recorded) < 2:
            only = recorded[0].name if recorded else "none"
            if self.elsewhere and self.narrowed_by:
                message = (f"Only one dataset ({only}) is in this report, so there is no cross-dataset comparison; the "
                           f"store also holds runs on {listed(self.elsewhere)}: leave out or widen "
                           f"{' and '.join(self.narrowed_by)} to compare them.")
            else:
                message = (f"Only one dataset ({only}) is recorded, so there is no cross-dataset comparison; sweep "
                           f"another (e.g. `cnnbench sweep {'cifar10' if only != 'cifar10' else 'mnist'}`) to see what "
                           "transfers.")
            doc.para(message, "note")
            self.messages.append(message)
        for ds in self.sets:
            self._dataset(ds)
        if len(recorded) > 1:
            self._transfer([ds for ds in recorded if len(ds.ranked)])
        if self.notes:
            doc.heading(2, "Notes", "notes")
            doc.items(self.notes)
            self.messages.extend(self.notes)

    def _verdict(self, ds: _Dataset) -> str:
        counts = self._counts_text(ds)
        if not len(ds.trials):
            return f"**{ds.name}**: nothing recorded."
        win = ds.winner
        if win is None:
            return f"**{ds.name}**: no run has completed yet ({counts}); see its runs below."
        text = (f"**{ds.name}**: **{self._describe(ds, win)}** won with **{_pct(win['test_acc'])}** test accuracy "
                f"({self._who(win)})")
        base, tuned = ds.baseline_for(win), ds.best(baseline=False)
        if win["baseline"]:
            text += ": no tuned trial beat this seed baseline"
            if tuned is not None:
                text += (f"; the best tuned trial ({self._who(tuned)}) reached {_pct(tuned['test_acc'])} "
                         f"({_points(tuned['test_acc'] - win['test_acc'])}) with {self._describe(ds, tuned)}.")
            else:
                text += "."
        elif base is not None:
            text += (f", {_points(win['test_acc'] - base['test_acc'])} over the best seed baseline, "
                     f"{base['baseline']} ({_pct(base['test_acc'])}), at a cost of {_count(win['params'])} parameters "
                     f"({_ratio(win['params'], base['params'])} the baseline's {_count(base['params'])}) and "
                     f"{_secs(win['train_seconds'])} s of training "
                     f"({_ratio(win['train_seconds'], base['train_seconds'])} the baseline's "
                     f"{_secs(base['train_seconds'])} s).")
        elif ds.best(baseline=True) is not None:
            text += (f", with {_count(win['params'])} parameters and {_secs(win['train_seconds'])} s of training. "
                     f"No seed baseline was trained on its budget ({_budget_text(win)}), so no gain over one is "
                     f"given; the seed baselines below trained on others.")
        else:
            tried = ds.trials[ds.trials["baseline"] != ""]
            missing = (f"No seed baseline completed on {ds.name} ("
                       + ", ".join(f"{b} {_STATE_WORD[s]}" for b, s in zip(tried["baseline"], tried["state"])) + ")"
                       if len(tried) else
                       f"No seed baseline was recorded for {ds.name} (list one under `baselines:` in the sweep file)")
            text += (f", with {_count(win['params'])} parameters and {_secs(win['train_seconds'])} s of training. "
                     f"{missing}.")
        for extra in (self._importance(ds), self._fronts(ds)):
            if extra:
                text += f" {extra}"
        return f"{text} Runs: {counts}."

    def _fronts(self, ds: _Dataset) -> str:
        """Name the Pareto front of each study of several objectives among the dataset's runs."""
        texts = []
        for study in dict.fromkeys(ds.trials["study"]):
            record = self.studies.get(study)
            if record is not None and record.front:
                *rest, last = [str(n) for n in record.front]
                listed, plural = (f"{', '.join(rest)} and {last}", "s") if rest else (last, "")
                texts.append(f"Study {study} weighs {' against '.join(record.objectives)}: its Pareto front, the "
                             f"trial{plural} no other beats on all of them, is trial{plural} {listed}.")
        return " ".join(texts)

    def _importance(self, ds: _Dataset) -> str:
        for study in dict.fromkeys(ds.ranked["study"]):
            record = self.studies.get(study)
            if record is not None and record.importances:
                name, value = max(record.importances.items(), key=lambda kv: kv[1])
                return f"The parameter that mattered most was {name} (importance {value:.2f} in study {study})."
        return ""

    def _dataset(self, ds: _Dataset) -> None:
        doc = self.doc
        doc.heading(2, f"Dataset: {ds.name}", _slug(ds.name))
        if not len(ds.trials):
            doc.para(f"Nothing is recorded for {ds.name}.", "empty")
            return
        doc.heading(3, "Runs by state")
        doc.table(self._states(ds),
                  "Pruned, failed and interrupted runs are counted here and left out of every ranking below.")
        reasons = self._reasons(ds)
        if len(reasons):
            doc.table(reasons, "Why runs were pruned or failed (the most common reasons).")
        if not len(ds.ranked):
            doc.para("No run has completed yet, so there is no leaderboard.", "empty")
            return
        doc.heading(3, "Leaderboard")
        doc.table(self._leaderboard(ds),
                  f"The {min(self.top, len(ds.ranked))} best of {len(ds.ranked):,} complete runs, ranked by "
                  f"{'validation' if ds.score == 'best_val_acc' else 'test'} accuracy. {_DASH} = not set "
                  f"(the architecture's or optimizer's default) or not used by the run's schedule. "
                  f"Run: MLflow run id.")
        doc.heading(3, "Best per architecture and per optimizer")
        for choice in ("arch", "optimizer"):
            doc.table(self._display_choices(ds, choice), f"Best complete run per {choice}.")
        if self.drawn:
            doc.heading(3, "Accuracy against size and training time")
            doc.figure(f"{_slug(ds.name)}-tradeoffs", self._tradeoff_figure(ds),
                       f"{ds.name}: test accuracy against parameters and training time",
                       "Each point is a complete run (colour and shape: architecture; star: seed baseline; ring: "
                       "the winner). The dashed line is the Pareto front: no run is both more accurate and cheaper "
                       "than a run on it.")
            top = ds.ranked.head(CURVES)
            doc.heading(3, f"Learning curves of the top {len(top)}")
            one = len(self.curves) and self.curves[self.curves["run_id"].isin(top["run_id"])]["step"].max() <= 1
            doc.figure(f"{_slug(ds.name)}-curves", self._curves_figure(ds, top),
                       f"{ds.name}: learning curves of the best runs",
                       "Per-epoch metrics of the best complete runs, as logged to MLflow."
                       + (" These runs trained one epoch each, so each curve is a single point." if one else ""))
            doc.heading(3, "Optimization history and parameter importances")
            self._history(ds)
        doc.heading(3, "Seed baselines beside the tuned best")
        self._baselines(ds)

    def _states(self, ds: _Dataset) -> pd.DataFrame:
        table = (ds.trials.groupby("study", sort=False)["state"].value_counts().unstack(fill_value=0)
                 .reindex(columns=list(STATES), fill_value=0))
        if not table["INTERRUPTED"].any():
            table = table.drop(columns="INTERRUPTED")
        table["total"] = table.sum(axis=1)
        table = table.reset_index().rename(columns=_STATE_WORD)
        if len(table) > 1:
            totals = table.drop(columns="study").sum()
            table.loc[len(table)] = {"study": "all", **totals.to_dict()}
        return table.map(lambda v: f"{v:,}" if isinstance(v, (int,)) or hasattr(v, "dtype") else v)

    @staticmethod
    def _reasons(ds: _Dataset) -> pd.DataFrame:
        bad = ds.trials[ds.trials["state"].isin(("PRUNED", "FAIL"))]
        if not len(bad):
            return pd.DataFrame()
        # "pruned at epoch 2 (val_acc 0.1625)" and its kin group under "pruned at epoch 2"; "duplicate of trial 3
        # (complete, ...), ..." and the duplicates of other trials under "duplicate of an earlier trial".
        reason = (bad["reason"].str.replace(r"\s*\([^()]*\)$", "", regex=True)
                  .str.replace(r"^duplicate of trial \d+\b.*", "duplicate of an earlier trial", regex=True)
                  .map(lambda r: r if len(r) <= 90 else r[:89] + "…").replace("", "(none)"))
        table = (pd.DataFrame({"state": bad["state"].map(_STATE_WORD), "reason": reason})
                 .value_counts().rename("runs").reset_index().head(8))
        table["runs"] = table["runs"].map("{:,}".format)
        return table

    def _leaderboard(self, ds: _Dataset) -> pd.DataFrame:
        rows = ds.ranked.head(self.top)
        shown = pd.DataFrame({"#": rows["rank"].astype(str)})
        if self._several(ds):
            shown["study"] = rows["study"]
        shown["trial"] = [self._trial(r) for _, r in rows.iterrows()]
        for column in ds.columns:
            shown[column] = rows[column].map(_value)
        if ds.score == "best_val_acc":
            shown["val acc"] = rows["best_val_acc"].map(_pct)
        shown["test acc"] = rows["test_acc"].map(_pct)
        shown["params"] = rows["params"].map(_count)
        shown["train time (s)"] = rows["train_seconds"].map(_secs)
        shown["run"] = [self._link(r) for _, r in rows.iterrows()]
        return shown

    def choices(self, ds: _Dataset, choice: str) -> pd.DataFrame:
        """The best complete run per value of ``choice`` (e.g. per architecture), best first."""
        if choice not in ds.ranked or not len(ds.ranked):
            return pd.DataFrame()
        ranked = ds.ranked.assign(**{choice: ds.ranked[choice].map(_value)})
        groups = ranked.groupby(choice, sort=False)
        best = groups.head(1).set_index(choice)
        best["runs"] = groups.size()
        best["median_test_acc"] = groups["test_acc"].median()
        best = best.reset_index()
        best.insert(0, "choice_rank", range(1, len(best) + 1))
        return best

    def _display_choices(self, ds: _Dataset, choice: str) -> pd.DataFrame:
        best = self.choices(ds, choice)
        shown = pd.DataFrame({"#": best["choice_rank"].astype(str), choice: best[choice],
                              "complete runs": best["runs"].map("{:,}".format)})
        if ds.score == "best_val_acc":
            shown["best val acc"] = best["best_val_acc"].map(_pct)
        shown["best test acc"] = best["test_acc"].map(_pct)
        shown["median test acc"] = best["median_test_acc"].map(_pct)
        shown["params"] = best["params"].map(_count)
        shown["train time (s)"] = best["train_seconds"].map(_secs)
        shown["best run"] = [self._which(ds, r) for _, r in best.iterrows()]
        return shown

    def _history(self, ds: _Dataset) -> None:
        studies = list(dict.fromkeys(ds.trials["study"]))
        histories = [(name, *self._study_history(ds, name)) for name in studies]
        histories = [h for h in histories if h[1]["value"].notna().any()]
        if not histories:
            self.doc.para("No trial has a value yet, so there is no history to draw.", "empty")
            return
        sources = "; ".join(f"study {name}: {source}" for name, _, _, source in histories)
        importances = any(imp for _, _, imp, _ in histories)
        read = all(source == "Optuna study" for _, _, _, source in histories)
        self.doc.figure(f"{_slug(ds.name)}-history", self._history_figure(ds, histories),
                        f"{ds.name}: optimization history" + (" and parameter importances" if importances else ""),
                        "Each complete trial's objective in the order the trials ran, with the best so far; pruned "
                        "trials at their last reported value. "
                        + ("Importances: how much of the objective's variance each parameter explains (fANOVA, "
                           "over the study's complete trials that sampled their parameters: baselines left out). "
                           if importances else
                           "Parameter importances need at least two complete trials that sampled their parameters. "
                           if read else
                           "Parameter importances need the Optuna study, which is not readable here (see Notes). ")
                        + f"Source of the history: {sources}.")

    def _study_history(self, ds: _Dataset, name: str) -> tuple[pd.DataFrame, dict, str]:
        record = self.studies.get(name)
        if record is not None:
            label, scale = _OBJECTIVES.get(record.objective, (record.objective, 1.0))
            frame = record.trials.assign(value=record.trials["value"] * scale)
            return frame.assign(direction=record.direction, label=label), record.importances, "Optuna study"
        runs = ds.trials[ds.trials["study"] == name]
        # Without the study, the objective is the validation accuracy each run logged, in run order.
        value = runs["best_val_acc"].where(runs["state"] == "COMPLETE", runs["val_acc"].fillna(
            runs["half_epoch_val_acc"]))  # a trial stopped at half an epoch logged no epoch's
        frame = pd.DataFrame({"trial": runs["trial"].astype(float), "state": runs["state"], "value": value * 100,
                              "baseline": runs["baseline"], "direction": "maximize",
                              "label": _OBJECTIVES["val_acc"][0]})
        return frame, {}, "MLflow run order"

    def _baselines(self, ds: _Dataset) -> None:
        base = ds.ranked[ds.ranked["baseline"] != ""]
        tuned = ds.best(baseline=False)
        others = ds.trials[(ds.trials["baseline"] != "") & (ds.trials["state"] != "COMPLETE")]
        if not len(base):
            self.doc.para(f"No seed baseline completed on {ds.name}. List presets under `baselines:` in the sweep "
                          f"file (see `cnnbench list presets`) to compare the tuned result with them.", "note")
        else:
            rows = pd.concat([tuned.to_frame().T, base]) if tuned is not None else base
            study = (lambda r: f"study {r['study']}, ") if self._several(ds) else (lambda r: "")
            shown = pd.DataFrame({"recipe": [f"{r['baseline'] or 'tuned best'}, {study(r)}trial {r['trial']}"
                                             for _, r in rows.iterrows()]})
            columns = ds.columns + ["val_fraction"] * (rows["val_fraction"].map(_value).nunique() > 1)
            for column in columns:
                shown[column] = rows[column].map(_value).values
            shown["test acc"] = rows["test_acc"].map(_pct).values
            caption = "The seed projects' recipes, each run by its sweep on that sweep's data and epochs"
            if tuned is not None:
                shown["baseline − tuned"] = [_points(r["test_acc"] - tuned["test_acc"])
                                             if r["baseline"] and _budget(r) == _budget(tuned) else _DASH
                                             for _, r in rows.iterrows()]
                caption += (", beside the best tuned trial; baseline − tuned: the difference in test accuracy, for a "
                            "baseline trained on the tuned trial's budget (as many epochs, as much held out for "
                            "validation)")
            shown["params"] = rows["params"].map(_count).values
            shown["train time (s)"] = rows["train_seconds"].map(_secs).values
            shown["run"] = [self._link(r) for _, r in rows.iterrows()]
            self.doc.table(shown, caption + ".")
        if len(others):
            states = ", ".join(f"{b} ({_STATE_WORD[s]})" for b, s in zip(others["baseline"], others["state"]))
            self.doc.para(f"Baselines that did not complete: {states}.", "note")

    def _transfer(self, sets: list[_Dataset]) -> None:
        doc = self.doc
        doc.heading(2, "Across datasets", "across-datasets")
        names = [ds.name for ds in sets]
        doc.para("The same choices ranked on each dataset by their best complete run (1 = best), side by side. "
                 "Spearman's rank correlation says whether the order carries over: near 1 it transfers, near 0 it "
                 "does not, near −1 it reverses.")
        for choice in CHOICES:
            side, rho = self.transfer(sets, choice)
            if side.empty:
                continue
            doc.heading(3, {"arch": "Architectures", "optimizer": "Optimizers", "scheduler": "Schedulers"}[choice])
            shown = pd.DataFrame({choice: side[choice]})
            for name in names:
                shown[f"{name} rank"] = side[f"{name}_rank"].map(lambda v: _DASH if pd.isna(v) else str(int(v)))
                shown[f"{name} best test acc"] = side[f"{name}_test_acc"].map(_pct)
            doc.table(shown)
            doc.para(" ".join(_rho_text(choice, a, b, r, n) for (a, b), (r, n) in rho.items()), "verdict")

    def transfer(self, sets: list[_Dataset], choice: str) -> tuple[pd.DataFrame, dict]:
        """Rank ``choice``'s values on each dataset; return them side by side and Spearman's rho per pair."""
        side = None
        for ds in sets:
            best = self.choices(ds, choice)
            if best.empty:
                continue
            part = best[[choice, "choice_rank", "test_acc"]].rename(
                columns={"choice_rank": f"{ds.name}_rank", "test_acc": f"{ds.name}_test_acc"})
            side = part if side is None else side.merge(part, on=choice, how="outer")
        if side is None:
            return pd.DataFrame(), {}
        names = [ds.name for ds in sets if f"{ds.name}_rank" in side]
        side = side.astype({f"{n}_rank": "Int64" for n in names})  # the outer merge made them floats
        side = side.sort_values([f"{n}_rank" for n in names], na_position="last").reset_index(drop=True)
        rho = {}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = side[[f"{a}_rank", f"{b}_rank"]].dropna()
                value = shared.corr(method="spearman").iloc[0, 1] if len(shared) >= 2 else float("nan")
                rho[(a, b)] = (value, len(shared))
        return side, rho

    def _tradeoff_figure(self, ds: _Dataset) -> bytes:
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter

        ranked = ds.ranked
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True, layout="constrained")
        size = 60 if len(ranked) < 50 else 30 if len(ranked) < 300 else 12
        for ax, (cost, flag, label) in zip(axes, (("params", "pareto_params", "parameters (count, log scale)"),
                                                 ("train_seconds", "pareto_seconds", "training time (s, log scale)"))):
            rows = ranked[ranked[cost].notna()]
            for arch, group in rows.groupby("arch", sort=True):
                colour, marker = self.style.get(str(arch), (_GREY, "o"))
                plain = group[group["baseline"] == ""]
                ax.scatter(plain[cost], 100 * plain["test_acc"], s=size, color=colour, marker=marker, alpha=0.75,
                           linewidths=0, zorder=2)
                base = group[group["baseline"] != ""]
                ax.scatter(base[cost], 100 * base["test_acc"], s=170, color=colour, marker="*", edgecolors="black",
                           linewidths=0.8, zorder=4)
            front = rows[rows[flag]].sort_values(cost)
            if len(front):
                xs = list(front[cost]) + [rows[cost].max()]
                ys = list(100 * front["test_acc"]) + [100 * front["test_acc"].iloc[-1]]
                ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1.2, zorder=3)
            win = ranked.iloc[[0]]
            if pd.notna(win[cost].iloc[0]):
                ax.scatter(win[cost], 100 * win["test_acc"], s=300, facecolors="none", edgecolors="black",
                           linewidths=1.6, zorder=5)
            if len(rows) and (rows[cost] > 0).all():
                ax.set_xscale("log")
                # 10k, 1M and 3, 30 read at a glance where 10^4 and 3x10^0 do not; the narrower the axis, the
                # more of its minor ticks are labelled (9 only on the narrowest: it crowds the power of ten).
                low, high = ax.get_xlim()
                span = math.log10(high / low)
                ax.xaxis.set_major_formatter(FuncFormatter(_log_tick(cost == "params", "123456789")))
                ax.xaxis.set_minor_formatter(FuncFormatter(_log_tick(
                    cost == "params", "23456789" if span < 0.6 else "2345678" if span < 1 else "25" if span < 2
                    else "")))
            ax.set_xlabel(label)
            ax.set_title("against " + ("model size" if cost == "params" else "training time"))
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test accuracy (%)")
        self._tidy_range(axes[0], 100 * ranked["test_acc"].dropna(), "test accuracy (%)")
        handles = [Line2D([], [], linestyle="", marker=m, color=c, markersize=7, label=a)
                   for a, (c, m) in self.style.items() if a in set(ranked["arch"].astype(str))]
        if (ranked["baseline"] != "").any():
            handles.append(Line2D([], [], linestyle="", marker="*", markersize=12, markerfacecolor="white",
                                  markeredgecolor="black", label="seed baseline"))
        handles += [Line2D([], [], linestyle="", marker="o", markersize=13, markerfacecolor="none",
                           markeredgecolor="black", label="winner (#1)"),
                    Line2D([], [], color="black", linestyle="--", label="Pareto front")]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False,
                   title="architecture and marks")
        fig.suptitle(f"{ds.name}: test accuracy of {len(ranked):,} complete runs against size and training time")
        return _png(fig)

    def _curves_figure(self, ds: _Dataset, top: pd.DataFrame) -> bytes:
        import matplotlib.pyplot as plt

        curves = self.curves[self.curves["run_id"].isin(top["run_id"])] if len(self.curves) else self.curves
        has_val = len(curves) and (curves["key"] == "val_acc").any()
        acc_key = "val_acc" if has_val else "train_acc"
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
        styles = ("-", "--", "-.", ":", (0, (5, 1)))
        # Label smoothing lifts a training loss's floor (about 0.5 at 0.1 on ten classes): the panel says which.
        smoothing = top["label_smoothing"].fillna(0.0) if "label_smoothing" in top else pd.Series(0.0, index=top.index)
        per_run = smoothing.nunique() > 1
        for i, (_, row) in enumerate(top.iterrows()):
            mine = curves[curves["run_id"] == row["run_id"]] if len(curves) else curves
            label = f"#{row['rank']} {self._which(ds, row)}: {row['arch']} ({_pct(row['test_acc'])} test"
            label += f", label smoothing {smoothing[row.name]:g})" if per_run else ")"
            for ax, key, scale in ((ax_acc, acc_key, 100), (ax_loss, "train_loss", 1)):
                points = mine[mine["key"] == key].sort_values("step") if len(mine) else mine
                ax.plot(points["step"] if len(points) else [], (points["value"] * scale) if len(points) else [],
                        marker="o", markersize=4, linestyle=styles[i % len(styles)], linewidth=1.8,
                        color=_COLOURS[i % len(_COLOURS)], label=label if ax is ax_acc else None)
        ax_acc.set(xlabel="epoch", ylabel=f"{'validation' if has_val else 'training'} accuracy (%)",
                   title=f"{'validation' if has_val else 'training'} accuracy")
        ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss" + (
            "" if per_run or not smoothing.any() else f" (label smoothing {smoothing.iloc[0]:g})"))
        accs = curves[curves["key"] == acc_key]["value"] if len(curves) else pd.Series(dtype=float)
        self._tidy_range(ax_acc, 100 * accs, "accuracy (%)")
        epochs = sorted(curves["step"].unique()) if len(curves) else []
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            if 0 < len(epochs) <= 15:
                ax.set_xticks(epochs)  # whole epochs only, also for a one-epoch sweep
        losses = curves[curves["key"] == "train_loss"]["value"] if len(curves) else pd.Series(dtype=float)
        if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 30:
            ax_loss.set_yscale("log")  # one diverging run must not flatten the others
            ax_loss.set_ylabel("training loss (cross-entropy, log scale)")
        # As many columns as fit the figure's width (about 150 characters of legend text), at most 3.
        longest = max(map(len, ax_acc.get_legend_handles_labels()[1]), default=0)
        columns = max(1, min(len(top), 3, 150 // (longest + 6)))
        fig.legend(loc="outside lower center", ncol=columns, frameon=False,
                   title="rank, study and trial, architecture" if self._several(ds) else "rank, trial, architecture")
        fig.suptitle(f"{ds.name}: learning curves of the {len(top)} best runs")
        return _png(fig)

    def _history_figure(self, ds: _Dataset, histories: list[tuple]) -> bytes:
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        wide = any(imp for _, _, imp, _ in histories)
        rows = len(histories)
        fig, axes = plt.subplots(rows, 2 if wide else 1, figsize=(11, 3.7 * rows + 0.6), squeeze=False,
                                 layout="constrained", width_ratios=[3, 2] if wide else None)
        marks: dict[str, int] = {}  # how many points each legend marker stands for
        for (name, frame, importances, source), row_axes in zip(histories, axes):
            ax = row_axes[0]
            frame = frame.sort_values("trial")
            complete = frame[frame["state"] == "COMPLETE"].dropna(subset=["value"])
            pruned = frame[frame["state"] == "PRUNED"].dropna(subset=["value"])
            maximise = len(complete) > 0 and complete["direction"].iloc[0] == "maximize"
            # Where pruned trials' early values (75% against the complete ones' 99%) would squash the complete
            # trials flat, the axis spans theirs, and values beyond it sit on its edge as triangles.
            low, high = self._history_range(complete["value"], pruned["value"])
            inside = pruned["value"].between(low, high)
            marks["x"] = marks.get("x", 0) + int(inside.sum())
            ax.scatter(pruned["trial"][inside], pruned["value"][inside], marker="x", s=18, color=_GREY, linewidths=1,
                       zorder=2)
            for edge, marker, beyond in ((low, "v", pruned[pruned["value"] < low]),
                                         (high, "^", pruned[pruned["value"] > high])):
                ax.scatter(beyond["trial"], [edge] * len(beyond), marker=marker, s=22, color=_GREY, linewidths=0,
                           zorder=2, clip_on=False)
                marks[marker] = marks.get(marker, 0) + len(beyond)
            if math.isfinite(low):
                ax.set_ylim(low, high)
            plain = complete[complete["baseline"] == ""]
            ax.scatter(plain["trial"], plain["value"], s=32, color=PALETTE[0], zorder=3, edgecolors="white",
                       linewidths=0.6)
            marks["o"] = marks.get("o", 0) + len(plain)
            base = complete[complete["baseline"] != ""]
            ax.scatter(base["trial"], base["value"], s=120, marker="*", color=PALETTE[0], edgecolors="black",
                       linewidths=0.8, zorder=4)
            if len(complete):
                so_far = complete["value"].cummax() if maximise else complete["value"].cummin()
                xs = list(complete["trial"]) + [frame["trial"].max()]
                # Under the points: each new best is a trial at the step's corner, which the line would hide.
                ax.step(xs, list(so_far) + [so_far.iloc[-1]], where="post", color=PALETTE[3], linewidth=2,
                        zorder=2.5)
            self._tidy_range(ax, pd.concat([complete["value"], pruned["value"]]), frame["label"].iloc[0])
            stopped = [f"{n} {_STATE_WORD[s]}" for s in ("FAIL", "INTERRUPTED")
                       if (n := int((frame["state"] == s).sum()))]
            ax.set(xlabel="trial number", ylabel=frame["label"].iloc[0],
                   title=", ".join([f"study {name}: history ({source})", *stopped]))
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # trial 0 alone: no tick at 0.02
            if frame["trial"].nunique() == 1:
                ax.set_xlim(frame["trial"].iloc[0] - 0.5, frame["trial"].iloc[0] + 0.5)
            if wide:
                self._importance_axes(row_axes[1], importances, name)
        shown = pd.concat([frame for _, frame, _, _ in histories])
        handles = []
        if marks.get("o"):
            handles.append(Line2D([], [], linestyle="", marker="o", color=PALETTE[0], label="complete trial"))
        if (shown["baseline"] != "").any():
            handles.append(Line2D([], [], linestyle="", marker="*", markersize=11, color=PALETTE[0],
                                  markeredgecolor="black", label="seed baseline"))
        if marks.get("x"):
            handles.append(Line2D([], [], linestyle="", marker="x", color=_GREY, label="pruned (last value)"))
        for marker, side in (("v", "below"), ("^", "above")):
            if marks.get(marker):
                handles.append(Line2D([], [], linestyle="", marker=marker, color=_GREY,
                                      label=f"pruned, {side} the axis"))
        handles.append(Line2D([], [], color=PALETTE[3], linewidth=2, label="best so far"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        fig.suptitle(f"{ds.name}: optimization history" + (" and parameter importances" if wide else ""))
        return _png(fig)

    @staticmethod
    def _tidy_range(ax, values: pd.Series, label: str) -> None:
        """Keep a panel's y axis to what its values can be: a narrow band around one value (matplotlib pads it
        by 5% of the value: 93-103% around 98%), and no accuracy above 100%."""
        if len(values) and values.max() == values.min():
            value = float(values.iloc[0])
            pad = max(abs(value) * 0.005, 0.01)
            ax.set_ylim(value - pad, value + pad)
        low, high = ax.get_ylim()
        if "accuracy" in label and high > 100 and not (values > 100).any():
            ax.set_ylim(low, 100)

    @staticmethod
    def _history_range(complete: pd.Series, pruned: pd.Series) -> tuple[float, float]:
        """Return the y range of a history panel: the complete trials' values with a margin where pruned values
        beyond them would take more than half the axis, else (-inf, inf), every value."""
        if len(complete) < 3:  # too few to say where the search lies
            return -math.inf, math.inf
        low, high = float(complete.min()), float(complete.max())
        pad = 0.08 * (high - low) or max(abs(high) * 0.01, 0.01)
        every = pd.concat([complete, pruned])
        if float(every.max()) - float(every.min()) <= 2 * (high - low + 2 * pad):
            return -math.inf, math.inf
        return low - pad, high + pad

    @staticmethod
    def _importance_axes(ax, importances: dict[str, float], study: str) -> None:
        if not importances:
            ax.axis("off")
            ax.text(0.5, 0.5, f"no importances for study {study}\n(its Optuna study is not readable here,\n"
                              "or too few complete trials sampled their parameters)", ha="center", va="center",
                    fontsize=9, color=_GREY, transform=ax.transAxes)
            return
        items = sorted(importances.items(), key=lambda kv: kv[1])[-10:]
        names, values = [k for k, _ in items], [v for _, v in items]
        ax.barh(names, values, color=PALETTE[0])
        for y, v in enumerate(values):
            ax.text(v + max(values) * 0.02, y, f"{v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.2 or 1)
        ax.set_ylim(len(names) - 0.5 - max(len(names), 4), len(names) - 0.5)  # a bar or two: their height, at the top
        ax.set(xlabel="importance (share of the objective's variation)", title=f"study {study}: parameter importances")
        ax.grid(alpha=0.3, axis="x")

    def _describe(self, ds: _Dataset, row: pd.Series) -> str:
        parts = [f"{c} {_value(row[c])}" for c in ds.columns if c != "arch" and _value(row[c]) != _DASH]
        return f"{row['arch']}" + (f" ({', '.join(parts)})" if parts else "")

    @staticmethod
    def _trial(row: pd.Series) -> str:
        return f"trial {row['trial']}" + (f" ({row['baseline']})" if row["baseline"] else "")

    def _who(self, row: pd.Series) -> str:
        return f"study {row['study']}, {self._trial(row)}"

    @staticmethod
    def _several(ds: _Dataset) -> bool:
        """Whether the dataset's ranked runs come from several studies, whose trial numbers repeat."""
        return ds.ranked["study"].nunique() > 1

    def _which(self, ds: _Dataset, row: pd.Series) -> str:
        """The run's trial, with its study where the dataset's runs come from several."""
        return self._who(row) if self._several(ds) else self._trial(row)

    def _link(self, row: pd.Series) -> _Link:
        path = f"#/experiments/{row['experiment_id']}/runs/{row['run_id']}"
        href = self.uri.rstrip("/") + "/" + path if self.uri.startswith(("http://", "https://")) else None
        return _Link(str(row["run_id"])[:8], href, f"MLflow run {row['run_id']} (experiment {row['experiment_id']})")

    @staticmethod
    def _counts_text(ds: _Dataset) -> str:
        counts = ds.counts
        return ", ".join(f"{counts[s]:,} {_STATE_WORD[s]}" for s in STATES if counts[s] or s not in _SHOWN_IF_ANY)


def _rho_text(choice: str, a: str, b: str, rho: float, n: int) -> str:
    what = {"arch": "architectures", "optimizer": "optimizers", "scheduler": "schedulers"}[choice]
    if n < 2:
        return f"{a} and {b} share fewer than two {what}, so there is nothing to correlate."
    if pd.isna(rho):
        return f"{a} vs {b}: Spearman's ρ is undefined over the {n} shared {what} (a ranking without ties needed)."
    if n < 3:
        meaning = "too few shared choices to judge"
    else:
        meaning = ("the ranking largely transfers" if rho >= 0.7 else "the ranking partly transfers" if rho >= 0.3
                   else "the ranking reverses" if rho <= -0.3 else "the ranking does not carry over")
        meaning += " (few choices: read with care)" if n < 5 else ""
    return f"{a} vs {b}: Spearman's ρ = {rho:.2f} over {n} {what} tried on both: {meaning}."


def _pct(value: Any) -> str:
    """An accuracy (a fraction) as the report shows it: a percentage with two decimals."""
    return _DASH if pd.isna(value) else f"{100 * float(value):.2f}%"


def _points(delta: float) -> str:
    return f"{100 * delta:+.2f} points"


def _count(value: Any) -> str:
    return _DASH if pd.isna(value) else f"{int(value):,}"


def _secs(value: Any) -> str:
    return _DASH if pd.isna(value) else f"{float(value):.1f}"


def _ratio(a: Any, b: Any) -> str:
    return f"{float(a) / float(b):.2g}×" if pd.notna(a) and pd.notna(b) and float(b) > 0 else "? ×"


def _value(value: Any) -> str:
    """A config value as a table cell: integers plain, other numbers to 3 significant digits."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return _DASH
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.3g}"
    return str(value)


def _log_tick(suffixed: bool, leads: str) -> Callable[[float, Any], str]:
    """A log-axis tick label, as 20k or 0.5, for values whose leading digit is in ``leads``; others bare."""

    def label(value: float, _: Any) -> str:
        if value <= 0 or f"{value:.0e}"[0] not in leads:
            return ""
        for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if suffixed and value >= size:
                return f"{value / size:g}{suffix}"
        return f"{value:g}"

    return label


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()


_CSS = """
body{margin:0;background:#fff;color:#1a1a1a;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,
sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 24px 60px}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:22px;margin:36px 0 8px;padding-top:10px;border-top:2px solid #0072B2}
h3{font-size:17px;margin:24px 0 6px}
p.meta{color:#555;margin-top:0}p.note{color:#444;font-size:14px}p.empty{font-size:17px;background:#fff7e0;
padding:12px 16px;border-left:4px solid #E69F00}
p.verdict{background:#eef5fb;border-left:4px solid #0072B2;padding:10px 14px;margin:10px 0}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f2f2f2;padding:1px 4px;
border-radius:3px}
.scroll{overflow-x:auto;margin:6px 0 4px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;text-align:left;border-bottom:1px solid #e3e3e3;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}
th{background:#f4f4f4;border-bottom:2px solid #ccc}tbody tr:nth-child(even){background:#fafafa}
caption{caption-side:bottom;text-align:left;color:#555;font-size:13px;padding-top:4px;white-space:normal}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #e3e3e3}
figcaption{color:#555;font-size:13px;max-width:960px}
ul.toc{columns:3;padding-left:18px}
"""


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, keeping its few Markdown marks: **bold**, `code`, [text](#anchor)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\((#[a-z0-9-]+)\)", r'<a href="\2">\1</a>', out)


def _cell_html(value: Any) -> str:
    if isinstance(value, _Link):
        title = html.escape(value.title)
        if value.href:
            return f'<a href="{html.escape(value.href)}" title="{title}">{html.escape(value.text)}</a>'
        return f'<code title="{title}">{html.escape(value.text)}</code>'
    return html.escape(str(value))


def _html(doc: _Doc) -> str:
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>cnnbench report</title>\n'
             f"<style>{_CSS}</style>\n</head>\n<body>\n<main>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            _, level, text, anchor = block
            ident = f' id="{anchor}"' if anchor else ""
            parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        elif kind == "p":
            _, text, cls = block
            parts.append(f'<p class="{cls}">{_inline(text)}</p>' if cls else f"<p>{_inline(text)}</p>")
        elif kind == "ul":
            _, texts, cls = block
            parts.append((f'<ul class="{cls}">' if cls else "<ul>") + "".join(f"<li>{_inline(t)}</li>" for t in texts)
                         + "</ul>")
        elif kind == "table":
            _, frame, caption = block
            if frame.empty:
                continue
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
            body = "".join("<tr>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>"
                           for row in frame.itertuples(index=False))
            cap = f"<caption>{_inline(caption)}</caption>" if caption else ""
            parts.append(f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        elif kind == "figure":
            _, name, png, alt, caption = block
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
                         f"<figcaption>{_inline(caption)}</figcaption></figure>")
    parts.append("</main>\n</body>\n</html>\n")
    return "\n".join(parts)


def _cell_md(value: Any) -> str:
    if isinstance(value, _Link):
        text = f"`{value.text}`"
        return f"[{text}]({value.href})" if value.href else text
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(doc: _Doc, out: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md`` and its figures; remove the figures an earlier report.md here linked and this one
    does not (another dataset's, say), so the folder holds one report. Return the file and its figures."""
    lines: list[str] = []
    figures: list[Path] = []
    earlier = _linked_figures(out)
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            _, level, text, anchor = block
            lines += [f'{"#" * level} {text}' + (f' <a id="{anchor}"></a>' if anchor else ""), ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {t}" for t in block[1]] + [""]
        elif kind == "table":
            _, frame, caption = block
            if frame.empty:
                continue
            lines.append("| " + " | ".join(_cell_md(c) for c in frame.columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in frame.columns) + "|")
            lines += ["| " + " | ".join(_cell_md(v) for v in row) + " |" for row in frame.itertuples(index=False)]
            lines += ["", f"*{caption}*", ""] if caption else [""]
        elif kind == "figure":
            _, name, png, alt, caption = block
            path = out / "figures" / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_whole(path, png)
            figures.append(path)
            lines += [f"![{alt}](figures/{name}.png)", "", f"*{caption}*", ""]
    written = write_whole(out / "report.md", "\n".join(lines))
    for path in earlier - set(figures):
        path.unlink(missing_ok=True)
    return written, figures


def _linked_figures(out: Path) -> set[Path]:
    """Return the figures ``out/report.md`` links, if a report was written there (only files cnnbench wrote)."""
    try:
        text = (out / "report.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return {out / "figures" / name for name in re.findall(r"\]\(figures/([\w.-]+\.png)\)", text)}


def _csv(report: _Report, trials: pd.DataFrame, folder: Path) -> list[Path]:
    """Write the report's tables as CSV (fractions, not percentages; full run ids); return the files."""
    ids = ["dataset", "study", "trial", "baseline"]
    runs = trials[[*ids, "state", "status", "reason", *_MACHINE, "run_id", "experiment_id", "start_time", *_TRAINED,
                   *_METRICS]]
    board_cols = ["dataset", "rank", *ids[1:], "run_id", *_TRAINED, *_METRICS, "pareto_params", "pareto_seconds"]
    ranked = [ds.ranked.assign(dataset=ds.name)[board_cols] for ds in report.sets if len(ds.ranked)]
    board = pd.concat(ranked, ignore_index=True) if ranked else pd.DataFrame(columns=board_cols)
    states = trials.groupby(["dataset", "study", "state"], sort=False).size().rename("runs").reset_index()

    choice_cols = ["dataset", "choice", "value", "rank", "overall_rank", "runs", "best_val_acc", "test_acc",
                   "median_test_acc", "params", "train_seconds", "study", "trial", "run_id"]
    choices = []
    for ds in report.sets:
        for choice in CHOICES:
            best = report.choices(ds, choice)
            if len(best):
                best = best.rename(columns={choice: "value", "rank": "overall_rank", "choice_rank": "rank"})
                choices.append(best.assign(dataset=ds.name, choice=choice)[choice_cols])

    base_cols = ["dataset", "rank", *ids[1:], "run_id", "epochs", "val_fraction", "test_acc", "best_val_acc", "params",
                 "train_seconds", "tuned_best_test_acc"]
    parts = []
    for ds in report.sets:
        base, tuned = ds.ranked[ds.ranked["baseline"] != ""], ds.best(baseline=False)
        same = [tuned is not None and _budget(r) == _budget(tuned) for _, r in base.iterrows()]
        if len(base):
            parts.append(base.assign(dataset=ds.name, tuned_best_test_acc=[
                tuned["test_acc"] if ok else None for ok in same])[base_cols])
    baselines = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=base_cols)

    side, pairs = [], []
    sets = [ds for ds in report.sets if len(ds.ranked)]
    for choice in CHOICES if len(sets) > 1 else ():
        frame, rho = report.transfer(sets, choice)
        for ds in sets:
            if f"{ds.name}_rank" in frame:
                side.append(pd.DataFrame({"choice": choice, "value": frame[choice], "dataset": ds.name,
                                          "rank": frame[f"{ds.name}_rank"],
                                          "best_test_acc": frame[f"{ds.name}_test_acc"]}).dropna(subset=["rank"]))
        pairs += [{"choice": choice, "dataset_a": a, "dataset_b": b, "shared": n, "spearman": r}
                  for (a, b), (r, n) in rho.items()]

    side_cols = ["choice", "value", "dataset", "rank", "best_test_acc"]
    tables = {
        "runs": runs, "leaderboard": board, "states": states,
        "best_by_choice": pd.concat(choices, ignore_index=True) if choices else pd.DataFrame(columns=choice_cols),
        "baselines": baselines,
        "transfer": pd.concat(side, ignore_index=True) if side else pd.DataFrame(columns=side_cols),
        "transfer_spearman": pd.DataFrame(pairs, columns=["choice", "dataset_a", "dataset_b", "shared", "spearman"]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in tables.items():
        write_whole(folder / f"{name}.csv", frame.to_csv(index=False))
        paths.append(folder / f"{name}.csv")
    return paths
