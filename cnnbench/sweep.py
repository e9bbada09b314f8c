"""Sweeps: Optuna studies whose trials train with :mod:`cnnbench.train` and are recorded in MLflow.

The one place where Optuna, the trainer and tracking meet.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch

from cnnbench import data as datamod
from cnnbench import __version__, cores, plots
from cnnbench.config import TrainConfig
from cnnbench.errors import (CnnbenchError, ConfigError, DataError, DivergedError, StudyError, Unavailable,
                             UnreachableStorage, disk_full, listed, no_space, outlast, redact)
from cnnbench.paths import as_written, folder_parts, unwritable, unwritable_file
from cnnbench.space import Sweep, format_value, grid, suggest, trial_config
from cnnbench.storage import (DATA_ATTR, DUPLICATE_ATTR, HEARTBEAT_SECONDS, IDENTITY_ATTR, INTERRUPTED, OWN_FILE,
                              OWN_STORE, PARENT_ATTR, damaged, describe, existing_study, importance_evaluator,
                              local_file, lock_folder, open_storage, pareto_front, same_file, sampled_study,
                              study_lock, unavailable, varied_params)
from cnnbench.tracking import Tracker, check_experiment, check_schema, check_store_uri, local_store, tracking_uri
from cnnbench.train import (Result, check, check_resume, copy_model, describe_hardware, evaluate, fit,
                            flush_denormals, resolve_device, resolve_precision)

#: Study names cnnbench itself gives (see ``Sweep.study``): safe as file and folder names.
_FILE_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
#: A worker gives up after this many trials in a row fail (not pruned: failed).
MAX_CONSECUTIVE_FAILURES = 5
#: Study attribute: how many of the pruner's steps make an epoch (2 where trials report at half an epoch too;
#: studies from before it was recorded report once an epoch).
STEPS_ATTR = "cnnbench.steps_per_epoch"
#: Study attribute naming the ``cnnbench sweep`` commands running the study now, with when each was last seen.
LIVE_ATTR = "cnnbench.live"
#: A trial whose worker died is retried until it has been started this many times.
MAX_ATTEMPTS = 3
#: A worker slot whose process keeps dying by a signal while the study makes no progress is not restarted
#: after this many deaths in a row.
MAX_RESTARTS_WITHOUT_PROGRESS = 3
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def make_sampler(sweep: Sweep, draw: int = 0) -> optuna.samplers.BaseSampler:
    """Return the Optuna sampler the sweep names, seeded for the study's ``draw``-th ask.

    Every ask gets its own seed, derived from the sweep's and ``draw``: workers sharing a study, and
    a resumed study, then never draw the first points again, and one worker's sweep stays
    reproducible. QMC and grid keep the sweep's seed: their points are one scrambled sequence, or one
    shuffled grid, indexed in the study, and another seed would index another order.
    """
    s = optuna.samplers
    seed = sweep.seed if sweep.sampler in ("qmc", "grid") else int(
        np.random.SeedSequence((sweep.seed & 0xFFFFFFFF, draw)).generate_state(1)[0])
    builders: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        # constant_liar: workers sharing a study count each other's running trials as bad, so they spread
        # out instead of drawing next to one another; one worker never has a running trial when it asks.
        "tpe": lambda: s.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8, constant_liar=True),
        "random": lambda: s.RandomSampler(seed=seed),
        "cmaes": lambda: s.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "gp": lambda: s.GPSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: s.QMCSampler(seed=seed, warn_independent_sampling=False),
        "grid": lambda: s.GridSampler(grid(sweep), seed=seed),
        "nsga2": lambda: s.NSGAIISampler(seed=seed),
    }
    return builders[sweep.sampler]()


def make_pruner(sweep: Sweep, steps_per_epoch: int = 1) -> optuna.pruners.BasePruner:
    """Return the Optuna pruner the sweep names, its steps ``1 / steps_per_epoch`` of an epoch.

    Successive halving's first rung is one step: with half-epoch steps its rungs are at half an
    epoch, 2, 8 and 32 epochs.
    """
    p = optuna.pruners
    builders = {
        "median": lambda: p.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        "halving": lambda: p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
        "hyperband": lambda: p.HyperbandPruner(min_resource=1, max_resource=sweep.epochs * steps_per_epoch,
                                               reduction_factor=3),
        "none": lambda: p.NopPruner(),
    }
    return builders[sweep.pruner]()


def open_study(sweep: Sweep, data: datamod.Data | None = None) -> optuna.Study:
    """Create the sweep's study, or load it and check it was started with the same definition (and on the same
    ``data``, where given).

    The storage is created here, under the study's lock, so workers started at once on a fresh storage
    create it once. Raises :class:`StudyError` when a study of that name exists with another space or
    objective, or was started on other images (a folder dataset's changed since, another copy of it on a
    machine joining), :class:`UnreachableStorage` when the storage's server cannot be reached.
    """
    with _reaching(sweep), study_lock(sweep.study_name, sweep.storage):
        return _create_or_check(sweep, sweep.identity(), data)


@contextlib.contextmanager
def _reaching(sweep: Sweep):
    """Raise :class:`UnreachableStorage` for an error that says the storage's server cannot be reached."""
    try:
        yield
    except CnnbenchError:
        raise
    except Exception as err:
        if not unavailable(err):
            raise
        raise UnreachableStorage(f"cannot open storage {describe(sweep.storage)}: {str(err).splitlines()[0][:200]}",
                                 hint="check the URL and that the database is up") from err


def _create_or_check(sweep: Sweep, identity: dict, data: datamod.Data | None) -> optuna.Study:
    storage = open_storage(sweep.storage)
    try:  # loaded where it is there: a journal would log even a creation refused as a duplicate, for every resume
        study = optuna.load_study(storage=storage, study_name=sweep.study_name, sampler=make_sampler(sweep),
                                  pruner=optuna.pruners.NopPruner())
    except KeyError:
        study = optuna.create_study(storage=storage, study_name=sweep.study_name, sampler=make_sampler(sweep),
                                    pruner=optuna.pruners.NopPruner(), directions=sweep.directions,
                                    load_if_exists=True)  # another machine's worker may create it first
    attrs = study.user_attrs
    stored = attrs.get(IDENTITY_ATTR)
    steps = (2 if sweep.prune_at_half_epoch else 1) if stored is None else attrs.get(STEPS_ATTR, 1)
    study.pruner = make_pruner(sweep, steps)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        study.set_user_attr(STEPS_ATTR, steps)
        study.set_user_attr("cnnbench.sampler", sweep.sampler)
        study.set_user_attr("cnnbench.pruner", sweep.pruner)
        study.set_user_attr("cnnbench.seed", sweep.seed)
    elif stored != identity:
        raise _another_definition(sweep, stored, identity)
    if data is not None:
        record, began = data_record(data), attrs.get(DATA_ATTR)
        if began is None:
            study.set_user_attr(DATA_ATTR, record)
        elif began.get("digest") != record["digest"]:
            folder = data.spec.path is not None
            now = f"images than {sweep.dataset} holds now" if folder else f"data than {sweep.dataset} gives here"
            raise StudyError(f"study {sweep.study_name!r} in {describe(sweep.storage)} was started on other {now} "
                             f"({_data_change(began, record)}): its trials would not compare with theirs",
                             hint="give --study NAME to start a study of the images as they are now, or put them "
                             "back as they were" if folder else "give --study NAME to start a study of this data")
    # The baselines run first: all of them in a new study, one added to the sweep file since in a resumed one.
    ran = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    for name in sweep.baselines:
        if name not in ran:
            study.enqueue_trial({}, user_attrs={"baseline": name}, skip_if_exists=False)
    return study


def _another_definition(sweep: Sweep, stored: dict, identity: dict) -> StudyError:
    return StudyError(f"study {sweep.study_name!r} in {describe(sweep.storage)} was started with another "
                      f"definition: {_diff(stored, identity)}",
                      hint="give a new name with --study NAME, or restore the original sweep file")


def check_definition(sweep: Sweep) -> None:
    """Raise :class:`StudyError` where the storage holds the study with another definition, before the data is
    loaded (or downloaded); :func:`open_study` checks again, under the study's lock. Nothing is made here: a file
    not there yet, or a database without Optuna's tables, is left to :func:`open_study` to make. A server's
    storage is read under the study's lock, so never while another machine's command is making its tables."""
    server = local_file(sweep.storage) is None
    with _reaching(sweep), study_lock(sweep.study_name, sweep.storage) if server else contextlib.nullcontext():
        study = existing_study(sweep.storage, sweep.study_name)
    if study is None:
        return
    stored, identity = study.user_attrs.get(IDENTITY_ATTR), sweep.identity()
    if stored is not None and stored != identity:
        raise _another_definition(sweep, stored, identity)


def data_record(data: datamod.Data) -> dict[str, Any]:
    """What a study keeps of the data its trials train on: its digest, and what tells it apart from other data."""
    labels = torch.cat([split.y.cpu() for split in (data.train, data.val, data.test) if split is not None])
    return {"digest": data.digest, "train": len(data.train) + (len(data.val) if data.val else 0),
            "test": len(data.test), "classes": list(data.spec.classes),
            "per_class": torch.bincount(labels, minlength=len(data.spec.classes)).tolist()}


def _data_change(then: dict, now: dict) -> str:
    """How the data a study began on and the data given now differ, in words."""
    before = then.get("classes") or []
    if before != now["classes"]:
        gone = [c for c in before if c not in now["classes"]]
        added = [c for c in now["classes"] if c not in before]
        changes = [f"{_classes(gone)} gone"] * bool(gone) + [f"{_classes(added)} new"] * bool(added)
        return "; ".join(changes) or "the classes in another order"
    counts = [f"{name} {a:,} images then, {b:,} now"
              for name, a, b in zip(before, then.get("per_class") or [], now["per_class"]) if a != b]
    if counts:
        return "; ".join(counts[:3]) + (f"; {len(counts) - 3} more classes" if len(counts) > 3 else "")
    if (then.get("train"), then.get("test")) != (now["train"], now["test"]):
        return (f"{then.get('train', 0):,} training and {then.get('test', 0):,} test images then, "
                f"{now['train']:,} and {now['test']:,} now")
    return "as many images in each class, but not the same ones"


def _classes(names: list[str]) -> str:
    return f"class{'es' if len(names) > 1 else ''} {listed(names, 5)}"


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _diff(a, b, f"{prefix}{key}.")
            if inner:
                changes.append(inner)
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(changes)


def steps_per_epoch(study: optuna.Study) -> int:
    """Return how many of the pruner's steps make an epoch in ``study``: 2 where its trials report at half an
    epoch too, 1 in studies made before cnnbench recorded it."""
    return int(study.user_attrs.get(STEPS_ATTR, 1))


def finished(study: optuna.Study) -> int:
    """Return how many trials of the study are complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


@dataclass
class Outcome:
    """How a sweep invocation ended."""

    study: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    parent_run_id: str
    #: A study of several objectives: its Pareto front as (trial number, values), by the first objective.
    front: list[tuple[int, list[float]]] = field(default_factory=list)
    #: Trials still running when this invocation ended: other workers' (``--join``, another machine).
    running: int = 0
    #: Failed trials that were stopped by Ctrl-C or a signal, not by an error (counted apart from ``failed``).
    interrupted: int = 0


class Objective:
    """Runs one trial: samples a configuration, trains it, and records everything in MLflow."""

    def __init__(self, sweep: Sweep, data: datamod.Data, tracker: Tracker, parent: str, *, device: str | None,
                 progress: bool, steps_per_epoch: int = 1):
        self.sweep, self.data, self.tracker, self.parent = sweep, data, tracker, parent
        self.device, self.progress, self.steps_per_epoch = device, progress, steps_per_epoch
        self.metric = sweep.objectives[0]

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        baseline = trial.user_attrs.get("baseline")
        sampled = {} if baseline else suggest(trial, self.sweep)
        config = trial_config(self.sweep, sampled, preset=baseline, device=self.device)
        device = resolve_device(config.device)
        # Taken before the run's tags, which record the threads it trains with.
        with cores.share(device.type == "cpu") as taken:
            return self._run(trial, config, device, baseline, str(taken) if taken.shared else None)

    def _run(self, trial: optuna.Trial, config: TrainConfig, device: torch.device, baseline: str | None,
             shared: str | None) -> float | list[float]:
        tags = {"cnnbench.study": self.sweep.study_name, "cnnbench.trial": trial.number,
                "cnnbench.dataset": self.sweep.dataset, "cnnbench.sampler": self.sweep.sampler,
                "cnnbench.pruner": self.sweep.pruner, "cnnbench.device": str(device),
                "cnnbench.precision": resolve_precision(config.precision, device),
                "cnnbench.baseline": baseline or "", "cnnbench.state": "RUNNING", "cnnbench.data": self.data.digest,
                "cnnbench.host": socket.gethostname(), "cnnbench.version": __version__,
                **{f"cnnbench.{key}": value for key, value in describe_hardware(device).items()}}
        run_id = self.tracker.start(f"trial-{trial.number}" + (f"-{baseline}" if baseline else ""), tags=tags,
                                    parent=self.parent, params=config.params())
        _patiently(self.sweep, lambda: _set_attrs(trial, {"mlflow_run_id": run_id, "config": config.params(),
                                                          **({SHARED_ATTR: shared} if shared else {})}))
        checkpoint = checkpoint_path(self.sweep.study_name, self.parent, trial.number)
        earlier = trial.user_attrs.get("retry_of")
        if earlier is not None and checkpoint_path(self.sweep.study_name, self.parent, earlier).exists():
            os.replace(checkpoint_path(self.sweep.study_name, self.parent, earlier), checkpoint)
        try:
            values = self._train(trial, config, run_id, checkpoint)
        except optuna.TrialPruned as pruned:
            self._end(trial, run_id, "KILLED", "PRUNED", str(pruned) or "pruned")
            checkpoint.unlink(missing_ok=True)
            raise
        except DivergedError as err:
            self._end(trial, run_id, "KILLED", "PRUNED", err.message)  # "diverged: loss is not finite at ..."
            checkpoint.unlink(missing_ok=True)
            raise optuna.TrialPruned("diverged") from None
        except BaseException as err:
            full = disk_full(err)  # torch's writer words it as "unexpected pos 322752 vs 322644"
            reason = no_space(full) if full else f"{type(err).__name__}: {err}"
            status = "FAILED"
            if isinstance(err, KeyboardInterrupt):
                reason, status = INTERRUPTED, "KILLED"
            # A run whose store stayed unreachable is closed once it is back (see reconcile); on a full disk, as
            # far as there is room: the sweep stops on the disk's error (see work).
            with contextlib.suppress(Exception) if full else contextlib.nullcontext():
                if not self.tracker.gave_up:
                    self._end(trial, run_id, status, "FAIL", reason)
            raise
        self._end(trial, run_id, "FINISHED", "COMPLETE", "")
        checkpoint.unlink(missing_ok=True)
        return values

    def _end(self, trial: optuna.Trial, run_id: str, status: str, state: str, reason: str) -> None:
        self.tracker.set_tags(run_id, {"cnnbench.state": state, "cnnbench.reason": reason[:500]})
        self.tracker.end(run_id, status)
        if reason:
            _patiently(self.sweep, lambda: trial.set_user_attr("reason", reason[:500]))

    def _train(self, trial: optuna.Trial, config: TrainConfig, run_id: str, checkpoint: Path) -> float | list[float]:
        if (twin := _twin(trial)) is not None:
            _patiently(self.sweep, lambda: trial.set_user_attr(DUPLICATE_ATTR, twin.number))
            raise optuna.TrialPruned(
                f"duplicate of trial {twin.number}: the grid's points differ only in settings this trial does not use"
                if self.sweep.sampler == "grid" else f"duplicate of trial {twin.number} "
                f"({_standing(twin, self.metric)}), with the same settings and seed: not trained again")
        try:
            n_params = check(config)
        except ConfigError as err:
            raise optuna.TrialPruned(f"unbuildable: {err.message}") from None
        prunable = self.sweep.prunable
        baseline = trial.user_attrs.get("baseline")

        def report(value: float, step: int, when: str, last: bool) -> None:
            _patiently(self.sweep, lambda: trial.report(value, step))
            # Asked for every trial: successive halving records the value at each rung it judges, for the
            # trials after it. A baseline is the yardstick, not a candidate: its values stand at the rungs,
            # but it trains every epoch, so the report can set the tuned best beside every seed recipe at
            # the same budget. A trial that has trained its last epoch is complete: stopping it then would
            # save nothing and lose its result.
            if _patiently(self.sweep, trial.should_prune) and not (baseline or last):
                raise optuna.TrialPruned(f"pruned at {when} ({self.metric} {value:.4f})")

        def on_epoch_end(m) -> None:
            self.tracker.log_metrics(run_id, {
                "train_loss": m.train_loss, "train_acc": m.train_acc, "val_loss": m.val_loss, "val_acc": m.val_acc,
                "lr": m.lr, "epoch_seconds": m.epoch_seconds, "images_per_sec": m.images_per_sec}, step=m.epoch)
            value = getattr(m, self.metric) if prunable else None
            if value is not None:
                report(value, m.epoch * self.steps_per_epoch, f"epoch {m.epoch}", m.epoch == config.epochs)

        def on_half_epoch(check) -> None:
            self.tracker.log_metrics(run_id, {"half_epoch_val_acc": check.acc, "half_epoch_val_loss": check.loss})
            report(check.acc if self.metric == "val_acc" else check.loss, 1, "half of epoch 1", False)

        # A retry resumes from the checkpoint of the trial it retries: its run records (and the pruner judges) the
        # epochs trained before too, as they were.
        for restored in check_resume(checkpoint, config):
            on_epoch_end(restored)
        # Without a pruner there is nothing to judge at half an epoch, so nothing to evaluate there.
        half = on_half_epoch if prunable and self.steps_per_epoch == 2 and self.sweep.pruner != "none" else None
        result = fit(config, self.data, on_epoch_end=on_epoch_end, on_half_epoch=half, checkpoint=checkpoint,
                     progress=self.progress)
        test = evaluate(result.model, self.data.test, self.data.spec, config)
        best = result.best
        summary = {"test_acc": test.acc, "test_loss": test.loss, "best_val_acc": best.val_acc,
                   "best_val_loss": best.val_loss, "best_epoch": result.best_epoch, "params": n_params,
                   "train_seconds": result.train_seconds}
        self.tracker.log_metrics(run_id, summary)
        _patiently(self.sweep, lambda: _set_attrs(trial, {k: summary[k] for k in (
            "test_acc", "best_val_acc", "params", "train_seconds")}))
        values = [self._value(name, result, n_params) for name in self.sweep.objectives]
        if not all(math.isfinite(v) for v in values):
            raise optuna.TrialPruned(f"non-finite objective {values}")
        self._artifacts(trial, config, run_id, result, test)
        return values[0] if len(values) == 1 else values

    @staticmethod
    def _value(name: str, result: Result, n_params: int) -> float:
        best = result.best
        return {"val_acc": best.val_acc, "val_loss": best.val_loss, "params": float(n_params),
                "train_seconds": result.train_seconds}[name]

    def _artifacts(self, trial, config: TrainConfig, run_id: str, result: Result, test) -> None:
        from safetensors.torch import save_file

        model = copy_model(result.model).eval()
        with tempfile.TemporaryDirectory() as tmp:  # one upload: each is a store round trip
            folder = Path(tmp)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
            as_written(folder / "model.safetensors")
            (folder / "config.json").write_text(json.dumps(config.params(), indent=1))
            if self.sweep.tracking.plots:
                self._figures(folder, f"{self.sweep.study_name} trial {trial.number}: {config.arch}",
                              result.history, test, config.label_smoothing)
            self.tracker.log_artifacts(run_id, folder)
        if self.sweep.tracking.log_model == "all":
            log_model(self.tracker, run_id, model, self.data)

    def _figures(self, folder: Path, title: str, history, test, label_smoothing: float) -> None:
        """Draw a trial's figures into ``folder``; nothing a resumed sweep or an export needs is drawn here."""
        split = self.data.test
        plots.run_figures(folder, title, history, split.x.cpu().numpy(), split.y.cpu().numpy(),
                          test.predictions.numpy(), test.confidences.numpy(), self.data.spec.classes,
                          label_smoothing=label_smoothing)


def log_model(tracker: Tracker, run_id: str, model: torch.nn.Module, data: datamod.Data) -> None:
    """Log ``model`` (CPU, fp32) to the run as an MLflow PyTorch model, two test images as its input example."""
    mean, std = datamod.normalisation(data.spec, "cpu")
    example = (data.test.x[:2].cpu().float() / 255 - mean) / std
    tracker.log_pytorch_model(run_id, model, example)
    tracker.set_tags(run_id, {"cnnbench.logged_model": "1"})


def trial_model(trial: optuna.trial.FrozenTrial, *, wait: bool = True) -> tuple[torch.nn.Module, TrainConfig, str]:
    """Rebuild a finished trial's trained model from the weights in its MLflow run; return it, its config, its run.

    ``wait=False`` fails at once where the store is unreachable instead of waiting for it.
    """
    from safetensors.torch import load_file

    from cnnbench.config import validate
    from cnnbench.tracking import download_artifact, stale_schema
    from cnnbench.train import build_model

    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id or "config" not in trial.user_attrs:
        raise StudyError(f"trial {trial.number} has no recorded run")
    config = validate(trial.user_attrs["config"])
    try:
        spec = datamod.DATASETS.get(config.dataset)
    except DataError as err:  # a folder of one's images, moved since the sweep: the net is built from what it held
        raise DataError(f"trial {trial.number}'s net is built for the classes and size of the images it was trained "
                        f"on, in {folder_parts(config.dataset)[0]}: {err.message}",
                        hint="put them back where the sweep read them") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            weights = download_artifact(run_id, "model.safetensors", tmp, wait=wait)
        except Unavailable:
            raise  # the store was there and went away for longer than we wait: says so, exits 1
        except Exception as err:
            raise stale_schema(err) or StudyError(
                f"cannot fetch the weights of trial {trial.number} (run {run_id}): {str(err)[:200]}",
                hint="check MLFLOW_TRACKING_URI points at the store the sweep used") from None
        model = build_model(config, spec)
        model.load_state_dict(load_file(str(weights)))
    return model.eval(), config, run_id


def run(sweep: Sweep, *, data_dir: str | None = None, device: str | None = None, devices: list[str] | None = None,
        join: bool = False, progress: bool | None = None, echo: Callable[[str], None] = print) -> Outcome:
    """Run (or resume) the sweep until the study holds ``sweep.trials`` finished trials; return the outcome.

    With ``sweep.workers`` above 1 the trials run in that many worker processes on this machine, given
    ``devices`` in turn. A study that another live ``cnnbench sweep`` is running is refused with
    :class:`StudyError` unless ``join``: then this command's workers run trials of it too, from the
    same budget.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    _quiet()
    # A file in the way of the study or the runs is refused before the data is loaded (or downloaded).
    check_store_uri()
    if same_file(sweep.storage, tracking_uri()):  # the default journal named by MLFLOW_TRACKING_URI: mend that
        given = sweep.storage is not None
        raise ConfigError(f"{describe(sweep.storage)} is the MLflow store's file too ({redact(tracking_uri())}): "
                          "Optuna and MLflow each need a database of their own",
                          source="--storage" if given else "MLFLOW_TRACKING_URI", hint=OWN_FILE if given else OWN_STORE)
    for url, owner, what, hint in (
            (sweep.storage, "optuna", f"storage {describe(sweep.storage)}", "give another --storage"),
            (tracking_uri(), "mlflow", f"the MLflow store {redact(tracking_uri())}", "set MLFLOW_TRACKING_URI")):
        if found := damaged(url, owner):
            why, particular = found
            raise StudyError(f"cannot open {what}: {why}",
                             hint=particular or f"move it aside to start afresh, or {hint}")
    check_schema()
    check_experiment(sweep.study_name)
    check_writable(sweep)
    check_definition(sweep)
    data = datamod.load(sweep.dataset, data_dir, val_fraction=sweep.val_fraction)
    study = open_study(sweep, data)
    for what in ("sampler", "pruner", "seed"):  # none is part of the definition; each trial's run records its own
        if (began := study.user_attrs.get(f"cnnbench.{what}", getattr(sweep, what))) != getattr(sweep, what):
            was, now = ((f"seed {began}", f"seed {sweep.seed}") if what == "seed"
                        else (f"the {began} {what}", f"the {getattr(sweep, what)} {what}"))
            echo(f"note: study {sweep.study_name!r} began with {was}; this command's trials use {now} (each trial's "
                 "MLflow run records its own)")
    # The MLflow store is created here, under the study's lock, once for every process starting now.
    with study_lock(sweep.study_name, sweep.storage):
        tracker = Tracker(sweep.study_name, wait=False)
        _claim(study, sweep, join)
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent is not None and (stage := tracker.stage(parent)) != "active":
            if stage is not None:
                raise StudyError(f"the sweep's MLflow run {parent} is {stage}, in `mlflow ui` or by `mlflow runs "
                                 "delete`, so its trials cannot be recorded under it",
                                 hint=f"restore it: `mlflow runs restore --run-id {parent}`; or give --study NAME to "
                                 "start another study")
            echo(f"note: the sweep's MLflow run {parent} is no longer in the store (removed by `mlflow gc`); the "
                 "trials from now on go under a new one")
            parent = None
        if parent is None:
            if others := tracker.runs("tags.`cnnbench.role` = 'sweep'"):
                last = max(others, key=lambda r: r.info.start_time)
                where = last.data.tags.get("cnnbench.storage", "storage unknown")
                echo(f"warning: MLflow experiment {sweep.study_name!r} already records "
                     f"{'another study' if len(others) == 1 else f'{len(others)} other studies'} of this name (the "
                     f"last: sweep run {last.info.run_id[:8]}, {where}); "
                     f"this study's runs go beside them, and `cnnbench report` tells them apart by when they started: "
                     f"give --study NAME to keep it apart")
            parent = tracker.start(f"sweep-{sweep.study_name}", tags={
                "cnnbench.study": sweep.study_name, "cnnbench.dataset": sweep.dataset,
                "cnnbench.sampler": sweep.sampler, "cnnbench.pruner": sweep.pruner,
                "cnnbench.storage": describe(sweep.storage), "cnnbench.role": "sweep"},
                params={"trials": sweep.trials, "epochs": sweep.epochs, "sampler": sweep.sampler,
                        "pruner": sweep.pruner, "objective": ",".join(sweep.objectives), "seed": sweep.seed,
                        "dataset": sweep.dataset})
            study.set_user_attr(PARENT_ATTR, parent)  # first: a run the study does not know of would stay RUNNING
            tracker.log_dataset(parent, sweep.dataset, data.digest, data.profile(),
                                str(data.spec.path or datamod.data_dir(data_dir).resolve()))
        elif not join:  # a resume that asks for another number of trials says so; a joining command runs the other's
            _param_logged(tracker, parent, "trials", sweep.trials)
    done = finished(study)
    state = (f"{done} of {sweep.trials} trials done" if done <= sweep.trials
             else f"{done} trials done, {sweep.trials} asked for")
    if done >= sweep.trials:
        state += ", nothing to run (raise --trials for more)"
    echo(f"study {sweep.study_name!r} ({describe(sweep.storage)}): {state}; "
         f"MLflow experiment {sweep.study_name!r} at {redact(tracking_uri())}")
    devices = devices or [device]
    try:
        with _holding(study, sweep):
            reconcile(study, tracker)
            if sweep.workers == 1:
                work(sweep, data_dir=data_dir, device=devices[0], progress=progress, echo=echo)
            else:
                _spawn(sweep, data_dir, devices, progress, echo)
            return _patiently(sweep, lambda: _summarise(sweep, study, tracker, parent, data))
    except BaseException as err:  # else an error the sweep did not expect leaves its run RUNNING in MLflow
        with contextlib.suppress(Exception):
            if not set(_live_commands(study)) - {worker_id()}:  # else a command that joined ends, not the sweep
                tracker.end(parent, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise


def check_writable(sweep: Sweep) -> None:
    """Raise :class:`ConfigError` where this command could not write what a sweep keeps on this machine: the
    study's storage and lock, the MLflow store and its runs' artifacts, the checkpoints (a read-only folder, one
    of another user's); before the data is loaded or anything recorded. A server's files are the server's."""
    storage = local_file(sweep.storage)
    store, artifacts = local_store(sweep.study_name)
    here = "run the sweep from a folder you can write"
    checks = [(unwritable_file(storage), f"the study's storage ({describe(sweep.storage)})",
               f"give --storage a file in a folder you can write, or {here}") if storage else
              (unwritable(lock_folder(sweep.storage)), "the study's lock file",
               f"set CNNBENCH_LOCK_DIR to a folder you can write, or {here}")]
    if store:
        checks.append((unwritable_file(store), f"the MLflow store ({redact(tracking_uri())})",
                       f"point MLFLOW_TRACKING_URI at sqlite:///FILE in a folder you can write, or {here}"))
    if artifacts:  # MLflow's default ./mlruns is where the sweep runs; an experiment's own folder is in the store
        checks.append((unwritable(artifacts), f"the runs' artifacts ({artifacts.absolute()})",
                       "give --study NAME for a new experiment (its artifacts in ./mlruns), or point "
                       "MLFLOW_TRACKING_URI at another store" if artifacts.is_absolute() else here))
    checks.append((unwritable(CHECKPOINTS), f"the trials' checkpoints (./{CHECKPOINTS})", here))
    for why, what, hint in checks:
        if why:
            raise ConfigError(f"{why}, for {what}", hint=hint)


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The ask/tell loop records heartbeats itself (see _heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _patiently(sweep: Sweep, call: Callable[[], Any]) -> Any:
    """Return ``call()``, retried while the study's storage is unreachable (see :func:`cnnbench.errors.outlast`)."""
    return outlast(call, what=f"the study storage {describe(sweep.storage)}", transient=unavailable)


def _interrupted(trial: optuna.Trial, tracker: Tracker) -> None:
    """Record ``trial`` as interrupted and end its MLflow run as KILLED, where a Ctrl-C or SIGTERM came outside its
    training (after its run was made, before its training began), whose own handler records that."""
    with contextlib.suppress(Exception):  # a second Ctrl-C, a store gone: reconcile() closes the run later
        attrs = trial.user_attrs
        if attrs.get("reason"):
            return
        trial.set_user_attr("reason", INTERRUPTED)
        run_id = attrs.get("mlflow_run_id")
        if run_id and tracker.status(run_id) == "RUNNING":
            tracker.set_tags(run_id, {"cnnbench.state": "FAIL", "cnnbench.reason": INTERRUPTED})
            tracker.end(run_id, "KILLED")


def _set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _claim(study: optuna.Study, sweep: Sweep, join: bool) -> None:
    """Record this command as running the study; refuse if another live one does, unless ``join``.

    Called under the study's lock.
    """
    me, live = worker_id(), _live_commands(study)
    others = sorted(w for w in live if w != me)
    if others and not join:
        raise StudyError(f"study {sweep.study_name!r} in {describe(sweep.storage)} is being run right now by "
                         f"{', '.join(others)}",
                         hint="wait for it to end, or add --join to run this command's workers in the same study "
                              "(the trial budget stays shared)")
    study.set_user_attr(LIVE_ATTR, {**live, me: time.time()})


def _live_commands(study: optuna.Study) -> dict[str, float]:
    """The commands running the study (``host:pid``, when last seen). A command on this machine is live while
    its process exists; one elsewhere while it was seen in the last three heartbeat intervals."""
    now = time.time()
    return {w: seen for w, seen in (study.user_attrs.get(LIVE_ATTR) or {}).items() if _live(w, seen, now)}


def _live(worker: str, seen: float, now: float) -> bool:
    host = worker.rpartition(":")[0]
    if host == socket.gethostname():
        return _alive(worker)
    return now - seen < 3 * HEARTBEAT_SECONDS


@contextlib.contextmanager
def _holding(study: optuna.Study, sweep: Sweep):
    """Keep this command's entry in the study's live list fresh while it runs; remove it at the end.

    The last command of the study to end removes its checkpoint folder where no checkpoint is left in it
    (an interrupted trial's stays, for its retry to resume from).
    """
    me = worker_id()

    def update(present: bool) -> None:
        with study_lock(sweep.study_name, sweep.storage):
            live = dict(study.user_attrs.get(LIVE_ATTR) or {})
            if present:
                live[me] = time.time()
            else:
                live.pop(me, None)
            study.set_user_attr(LIVE_ATTR, live)
            if not live:
                mine = checkpoint_folder(sweep.study_name, study.user_attrs.get(PARENT_ATTR, ""))
                for folder in (mine, CHECKPOINTS / sweep.study_name, CHECKPOINTS):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only where empty

    try:
        with _every(HEARTBEAT_SECONDS, lambda: update(True), "cnnbench-live"):
            yield
    finally:
        with contextlib.suppress(Exception):
            update(False)


@contextlib.contextmanager
def _every(seconds: float, action: Callable[[], None], name: str):
    """Call ``action`` every ``seconds`` in a background thread while the block runs.

    A failing call (an unreachable storage, say) is skipped: the next one tries again.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            with contextlib.suppress(Exception):
                action()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def work(sweep: Sweep, *, data_dir: str | None = None, device: str | None = None, progress: bool = False,
         echo: Callable[[str], None] | None = None, threads: int | None = None, parent_pid: int | None = None) -> None:
    """Run trials of the sweep's (existing) study in this process until its budget or timeout is used up.

    With ``progress`` a bar shows the study's progress; else ``echo``, where given, gets a line per
    finished trial.

    Storage and tracking calls that find their server unreachable are retried for a while, saying so;
    after that :class:`~cnnbench.errors.Unavailable` is raised. With ``parent_pid``, the worker stops
    starting trials once that process (the command that started it) is gone.
    """
    _quiet()
    flush_denormals()
    if threads:
        torch.set_num_threads(threads)
    data = datamod.load(sweep.dataset, data_dir, val_fraction=sweep.val_fraction)
    study = _patiently(sweep, lambda: open_study(sweep, data))
    tracker = Tracker(sweep.study_name)
    objective = Objective(sweep, data, tracker, study.user_attrs[PARENT_ATTR], device=device, progress=progress,
                          steps_per_epoch=steps_per_epoch(study))
    deadline = time.monotonic() + sweep.timeout if sweep.timeout else None
    bar = _SweepBar(study, sweep, progress, echo)
    failures = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            if parent_pid is not None and os.getppid() != parent_pid:
                break
            trial = _patiently(sweep, lambda: _next_trial(study, sweep, tracker))
            if trial is None:
                break
            try:
                with _heartbeat(study, trial):
                    values = objective(trial)
            except optuna.TrialPruned:
                more = _tell(sweep, study, trial, state=optuna.trial.TrialState.PRUNED)
                failures = 0
            except Unavailable:
                with contextlib.suppress(Unavailable):  # if the storage is the one down, recover() retries it
                    _tell(sweep, study, trial, state=optuna.trial.TrialState.FAIL)
                    _patiently(sweep, lambda: _retry(study, trial.number, trial.params, trial.user_attrs))
                raise
            except (CnnbenchError, RuntimeError, ValueError) as err:
                if disk_full(err):  # every trial after it would fail the same way: the sweep stops (see cli)
                    with contextlib.suppress(Exception):  # recorded where there is room; else recover() does it
                        _tell(sweep, study, trial, state=optuna.trial.TrialState.FAIL)
                        _retry(study, trial.number, trial.params, trial.user_attrs)
                    raise
                more = _tell(sweep, study, trial, state=optuna.trial.TrialState.FAIL)
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    with contextlib.suppress(Exception):  # the last failure's line too, as each one's before it
                        bar(study)
                    raise CnnbenchError(f"{failures} trials in a row failed; the last with: {err}",
                                        hint="see the FAILED runs in MLflow; fix the sweep file or the data") from None
            except BaseException as err:
                if isinstance(err, KeyboardInterrupt):
                    _interrupted(trial, tracker)
                _tell(sweep, study, trial, state=optuna.trial.TrialState.FAIL)
                _retry(study, trial.number, trial.params, trial.user_attrs)  # resumes from its checkpoint
                raise
            else:
                more = _tell(sweep, study, trial, values)
                failures = 0
            with contextlib.suppress(Exception):
                bar(study)
            if not more:
                break
    finally:
        bar.close()


def _twin(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """The first earlier trial, running or finished but not failed, that drew the same settings (or ran the same
    baseline), if any.

    A duplicate is no twin: when the trial it stood down for fails, the retry of that one must train.
    """
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    baseline = trial.user_attrs.get("baseline")
    return next((t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number
                 and t.params == trial.params and t.user_attrs.get("baseline") == baseline
                 and DUPLICATE_ATTR not in t.user_attrs), None)


def _standing(trial: optuna.trial.FrozenTrial, metric: str) -> str:
    """How a trial stands, for a line about another one: "complete, val_acc 0.9912", "pruned", "still running"."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return f"complete, {metric} {format_value(metric, trial.values[0])}"
    return "pruned" if trial.state == optuna.trial.TrialState.PRUNED else "still running"


def _tell(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, values=None, *, state=None) -> bool:
    """Record a trial's outcome, waiting for an unreachable storage; return False when the sampler has nothing
    left to try.

    The grid sampler says so by calling ``study.stop()``, which outside ``optimize`` raises after
    the outcome is stored. A trial already finished (told by an attempt whose answer was lost, or
    failed by another worker's recovery) is left as it is.
    """
    try:
        _patiently(sweep, lambda: study.tell(trial, values, state=state, skip_if_finished=True))
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return False
    return True


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial):
    """Record the trial's heartbeat while it runs, where the storage keeps them (RDB storages)."""
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    def beat() -> None:
        study._storage.record_heartbeat(trial._trial_id)

    with contextlib.suppress(Exception):  # the storage is unreachable: the thread beats again later
        beat()
    with _every(interval, beat, "cnnbench-heartbeat"):
        yield


WORKER_ATTR = "cnnbench.worker"
#: A trial's threads where it shared the CPU with other runs ("1 of 2"), for the progress lines.
SHARED_ATTR = "cnnbench.shared_threads"
CHECKPOINTS = Path("cnnbench-checkpoints")


def worker_id() -> str:
    """Return this process's name as recorded on the trials it runs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def checkpoint_folder(study: str, parent: str) -> Path:
    """Return where the trials of ``study`` keep their per-epoch checkpoints.

    Under the study's sweep run ``parent`` (:data:`PARENT_ATTR`), so that another study of the same name (in
    another storage, run from this folder: a journal moved aside and begun afresh) never resumes them.
    """
    return CHECKPOINTS / study / parent


def checkpoint_path(study: str, parent: str, number: int) -> Path:
    """Return where trial ``number`` of ``study`` (its sweep run ``parent``) keeps its per-epoch checkpoint."""
    return checkpoint_folder(study, parent) / f"trial-{number}.ckpt"


def _retry(study: optuna.Study, number: int, params: dict, user_attrs: dict) -> bool:
    """Queue trial ``number`` again with the same parameters; return False when it has used its attempts."""
    attempt = user_attrs.get("attempt", 1)
    if attempt >= MAX_ATTEMPTS:
        return False
    keep = {k: user_attrs[k] for k in ("baseline",) if k in user_attrs}
    study.enqueue_trial(params, user_attrs={**keep, "retry_of": number, "attempt": attempt + 1}, skip_if_exists=False)
    return True


def _alive(worker: str | None) -> bool:
    """Whether the worker ``host:pid`` may still be running (workers on other hosts are assumed alive)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Fail the running trials whose worker died (killed, crashed, machine lost) and retry them.

    A worker on this machine is dead when its process is gone; on an RDB storage, one anywhere
    whose heartbeat stopped. Each such trial ends FAILED in Optuna and MLflow, with the reason,
    and a retry with the same parameters is queued (up to :data:`MAX_ATTEMPTS` starts in all); it
    resumes from the trial's last checkpoint. Returns the numbers of the trials failed.
    """
    storage = study._storage
    stale = set()
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        stale = set(storage._get_stale_trial_ids(study._study_id))  # no public API gives the ids
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if t._trial_id not in stale and _alive(worker):
            continue
        reason = f"worker {worker or 'unknown'} died"
        try:
            storage.set_trial_user_attr(t._trial_id, "reason", reason)
            if not storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if not _retry(study, t.number, t.params, t.user_attrs):
            reason += f"; not retried after {MAX_ATTEMPTS} attempts"
            storage.set_trial_user_attr(t._trial_id, "reason", reason)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            tracker.set_tags(run_id, {"cnnbench.state": "FAIL", "cnnbench.reason": reason})
            tracker.end(run_id, "FAILED")
        folder = checkpoint_folder(study.study_name, study.user_attrs.get(PARENT_ATTR, ""))
        for partial in folder.glob(f".trial-{t.number}.ckpt.*.tmp"):
            partial.unlink(missing_ok=True)  # a checkpoint write the dead worker did not finish
        failed.append(t.number)
    return failed


#: The MLflow run statuses that agree with each finished trial state (the first is the one set when they do not).
_RUN_STATUS = {optuna.trial.TrialState.COMPLETE: ("FINISHED",), optuna.trial.TrialState.PRUNED: ("KILLED",),
               optuna.trial.TrialState.FAIL: ("FAILED", "KILLED")}


def reconcile(study: optuna.Study, tracker: Tracker) -> list[str]:
    """Bring the trials' MLflow runs in line with the trials: close the runs left RUNNING (or set otherwise) by a
    worker that lost the tracking server or its trial, and fail the runs no trial records. Returns the run ids
    changed.

    Only the study's own runs (those under its sweep's run) are looked at: another study of the same name, in
    another storage, records into the same MLflow experiment, and its live trials' runs are not this study's.
    """
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        return []
    runs = {r.info.run_id: r for r in tracker.runs(f"tags.`mlflow.parentRunId` = '{parent}'")}
    claimed, changed = set(), []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        claimed.add(run_id)
        run = runs.get(run_id)
        if run is None or t.state not in _RUN_STATUS or run.info.status in _RUN_STATUS[t.state]:
            continue
        reason = t.user_attrs.get("reason", "")
        tracker.set_tags(run_id, {"cnnbench.state": t.state.name, "cnnbench.reason": reason})
        tracker.end(run_id, _RUN_STATUS[t.state][0])
        changed.append(run_id)
    old = (time.time() - 3 * HEARTBEAT_SECONDS) * 1000
    for run_id, run in runs.items():
        if run_id in claimed or run.info.status != "RUNNING" or run.info.start_time > old:
            continue
        tracker.set_tags(run_id, {"cnnbench.state": "FAIL", "cnnbench.reason": "no trial records this run"})
        tracker.end(run_id, "FAILED")
        changed.append(run_id)
    return changed


def _next_trial(study: optuna.Study, sweep: Sweep, tracker: Tracker) -> optuna.Trial | None:
    # Counting and asking under the study's lock keeps the budget exact across the workers that share it.
    with study_lock(sweep.study_name, sweep.storage):
        recover(study, tracker)
        trials = study.get_trials(deepcopy=False)
        if sum(t.state in FINISHED_STATES + (optuna.trial.TrialState.RUNNING,) for t in trials) >= sweep.trials:
            return None
        study.sampler = make_sampler(sweep, draw=len(trials))
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)  # baselines, retries
        if isinstance(study.sampler, optuna.samplers.GridSampler) and not waiting and study.sampler.is_exhausted(study):
            return None  # else the grid draws a point it has tried again (a study run again after it finished)
        trial = _waiting_retry(study, trials) or study.ask()
        trial.set_user_attr(WORKER_ATTR, worker_id())
        return trial


def _waiting_retry(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> optuna.Trial | None:
    """The first retry waiting in the study's queue, claimed for this worker, or ``None``: a cut or failed trial is
    tried again before the baselines queued ahead of it, which Optuna's ``ask`` takes first (in queue order)."""
    for t in trials:
        if t.state == optuna.trial.TrialState.WAITING and "retry_of" in t.user_attrs:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                if study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.RUNNING):
                    study._thread_local.cached_all_trials = None  # as ask does, then makes the trial so
                    return optuna.Trial(study, t._trial_id)
    return None


def threads_per_worker(workers: int) -> int:
    """Return the CPU threads each of ``workers`` processes gets: the cores this process may use, shared out."""
    return max(1, len(cores.available()) // workers)


def _spawn(sweep: Sweep, data_dir: str | None, devices: list[str | None], progress: bool,
           echo: Callable[[str], None]) -> None:
    """Run the sweep in ``sweep.workers`` processes, worker ``i`` on ``devices[i % len(devices)]``.

    A worker killed by a signal (the OOM killer, a SIGKILL) is replaced while the study still needs
    trials, unless the same slot died :data:`MAX_RESTARTS_WITHOUT_PROGRESS` times in a row without the
    study finishing a trial meanwhile.
    """
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")
    threads = threads_per_worker(sweep.workers)
    study = open_study(sweep)

    def start(i: int):
        proc = ctx.Process(target=_worker_main, name=f"cnnbench-worker-{i}",
                           args=(sweep, data_dir, devices[i % len(devices)], threads, os.getpid()))
        proc.start()
        return proc

    procs = [start(i) for i in range(sweep.workers)]
    done_at_start = [finished(study)] * len(procs)
    strikes = [0] * len(procs)
    given_up: list[int] = []  # pids of workers killed and not replaced
    bar = _SweepBar(study, sweep, progress, echo)
    ours = (-signal.SIGTERM, -signal.SIGINT)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=2 / len(procs))
            with contextlib.suppress(Exception):
                bar(study)
            for i, p in enumerate(procs):
                if p.exitcode is None or p.exitcode >= 0 or p.exitcode in ours or p.pid in given_up:
                    continue
                done = _patiently(sweep, lambda: finished(study))
                if done >= sweep.trials:
                    given_up.append(p.pid)  # nothing left for it to do: not a failure
                    continue
                strikes[i] = 0 if done > done_at_start[i] else strikes[i] + 1
                if strikes[i] >= MAX_RESTARTS_WITHOUT_PROGRESS:
                    echo(f"worker {i} (pid {p.pid}) was killed by signal {-p.exitcode} {strikes[i]} times in a row "
                         "with no trial finished meanwhile; not starting another")
                    given_up.append(p.pid)
                    continue
                echo(f"worker {i} (pid {p.pid}) was killed by signal {-p.exitcode}; starting another")
                procs[i], done_at_start[i] = start(i), done
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        raise
    finally:
        bar.close()
    missing = sweep.trials - _patiently(sweep, lambda: finished(study))
    failed = [p.exitcode for p in procs if p.exitcode and (p.exitcode > 0 or missing > 0)]
    if failed:
        raise StudyError(f"{len(failed)} of {len(procs)} workers failed (exit codes {failed})",
                         hint="run again to resume; see the FAILED runs in MLflow for reasons")


def _worker_main(sweep: Sweep, data_dir: str | None, device: str | None, threads: int, parent_pid: int) -> None:
    from cnnbench.errors import install_signal_handlers

    install_signal_handlers()
    try:
        work(sweep, data_dir=data_dir, device=device, threads=threads, parent_pid=parent_pid)
    except KeyboardInterrupt:
        sys.exit(130)
    except CnnbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:  # the parent says the workers failed and how to resume
        if (full := disk_full(err)) is None:
            raise
        print(f"error: {no_space(full)}", file=sys.stderr)
        sys.exit(1)


class _SweepBar:
    """The sweep's progress: a bar (trials done, pruned, best so far), or a line per finished trial to ``echo``.

    The lines are for logs and pipes, where a bar would be one endless line; with neither a bar
    nor ``echo`` (a worker process, whose parent shows the progress) it shows nothing.
    """

    def __init__(self, study: optuna.Study, sweep: Sweep, bar: bool, echo: Callable[[str], None] | None = None):
        self.total, self.objectives, self.bar = sweep.trials, sweep.objectives, None
        self.echo = None if bar else echo
        self.told = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()} if self.echo else set()
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=sweep.trials, initial=finished(study), unit="trial", position=0, dynamic_ncols=True)

    def __call__(self, study: optuna.Study) -> None:
        if self.bar is None and self.echo is None:
            return
        trials = study.get_trials(deepcopy=False)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        done = sum(t.state in FINISHED_STATES for t in trials)
        if len(study.directions) > 1:
            front = pareto_front(study)
            numbers = [t.number for t in front]
            best = (f"Pareto front: trial{'s' * (len(numbers) > 1)} {listed(numbers)}" if numbers
                    else "no Pareto front yet")
        else:
            try:
                best = f"best {format_value(self.objectives[0], study.best_value)} (trial {study.best_trial.number})"
            except ValueError:
                best = "best -"
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(f"pruned {pruned}, {best}")
            return
        for trial in sorted((t for t in trials if t.state.is_finished() and t.number not in self.told),
                            key=lambda t: t.number):
            self.told.add(trial.number)
            self.echo(f"trial {trial.number}{_label(trial)} {self._outcome(trial)}; "
                      f"{done} of {self.total} done, {best}")

    def _outcome(self, trial: optuna.trial.FrozenTrial) -> str:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            values = ", ".join(f"{name} {format_value(name, value)}"
                               for name, value in zip(self.objectives, trial.values))
            return f"complete: {values}"
        word = "pruned" if trial.state == optuna.trial.TrialState.PRUNED else "failed"
        reason = textwrap.shorten(trial.user_attrs.get("reason", ""), 200, placeholder=" ...")
        return reason if reason.startswith(word) else f"{word}: {reason}" if reason else word

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _label(trial: optuna.trial.FrozenTrial) -> str:
    """What a progress line calls a trial besides its number: the baseline it ran, or the architecture drawn,
    the threads it trained on where it shared the CPU with other runs, and how long it took."""
    shared = trial.user_attrs.get(SHARED_ATTR)
    took = trial.duration and _duration(trial.duration.total_seconds())
    said = [p for p in (trial.user_attrs.get("baseline") or trial.params.get("arch"), shared and f"on {shared} threads",
                        took) if p]
    return f" ({', '.join(said)})" if said else ""


def _duration(seconds: float) -> str:
    """``seconds`` as a person reads a span of time: 0.4 s, 52.1 s, 3 min 05 s, 1 h 02 min."""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _summarise(sweep: Sweep, study: optuna.Study, tracker: Tracker, parent: str, data: datamod.Data) -> Outcome:
    # Every command of a study records its best on the sweep's run when it ends. Under the study's lock, and
    # reading the trials inside it, those records land one after another, each from a study at least as far on
    # as the one before: no command writes a best another has already replaced (MLflow refuses a param
    # logged twice with two values), and the run ends with the newest.
    with study_lock(sweep.study_name, sweep.storage):
        return _record_best(sweep, study, tracker, parent, data)


def _record_best(sweep: Sweep, study: optuna.Study, tracker: Tracker, parent: str, data: datamod.Data) -> Outcome:
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    best_value = best_params = best_number = None
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete and len(sweep.objectives) == 1:
        best = study.best_trial
        best_value, best_number = best.value, best.number
        best_params = best.params or {"baseline": best.user_attrs.get("baseline")}
        tracker.log_metrics(parent, {f"best_{sweep.objectives[0]}": best.value,
                                     "best_test_acc": best.user_attrs.get("test_acc")})
        best_run = best.user_attrs.get("mlflow_run_id", "")
        tracker.set_tags(parent, {"cnnbench.best_trial": best.number, "cnnbench.best_run_id": best_run})
        if sweep.tracking.log_model == "best" and tracker.run_data(best_run).tags.get("cnnbench.logged_model") != "1":
            log_model(tracker, best_run, trial_model(best)[0], data)
        tracker.log_params(parent, {f"best.{k}": v for k, v in best.params.items()
                                    if not _param_logged(tracker, parent, f"best.{k}", v)})
    front = [(t.number, list(t.values)) for t in pareto_front(study)] if len(sweep.objectives) > 1 else []
    if front:
        tracker.set_tags(parent, {"cnnbench.pareto_trials": ",".join(str(number) for number, _ in front)})
    interrupted = sum(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("reason") == INTERRUPTED
                      for t in trials)
    tracker.log_metrics(parent, {"trials_complete": count[optuna.trial.TrialState.COMPLETE],
                                 "trials_pruned": count[optuna.trial.TrialState.PRUNED],
                                 "trials_failed": count[optuna.trial.TrialState.FAIL] - interrupted,
                                 "trials_interrupted": interrupted})
    _study_plots(study, tracker, parent)
    reconcile(study, tracker)
    tracker.end(parent, "FINISHED" if finished(study) >= sweep.trials else "KILLED")
    return Outcome(sweep.study_name, len(trials), count[optuna.trial.TrialState.COMPLETE],
                   count[optuna.trial.TrialState.PRUNED], count[optuna.trial.TrialState.FAIL] - interrupted,
                   best_value, best_params or {}, best_number, parent, front, count[optuna.trial.TrialState.RUNNING],
                   interrupted)


def _param_logged(tracker: Tracker, run_id: str, key: str, value) -> bool:
    # MLflow params are write-once; a resumed sweep whose best or --trials changed records it as a tag instead.
    params = tracker.run_data(run_id).params
    if key in params and params[key] != str(value):
        tracker.set_tags(run_id, {key: value})
        return True
    return key in params


#: The sweep run's tag holding how many complete trials its study plots show.
PLOTTED_TAG = "cnnbench.plotted_trials"


def _study_plots(study: optuna.Study, tracker: Tracker, parent: str) -> None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len(study.directions) != 1:
        return
    if tracker.run_data(parent).tags.get(PLOTTED_TAG) == str(len(complete)):
        return  # drawn already with these trials (a finished sweep run again): 1.3 s of drawing saved
    sampled = sampled_study(study)  # importances over the sampled trials: baselines have no parameters
    figures = [("optimization_history", lambda: ovm.plot_optimization_history(study))]
    varied = varied_params(sampled)  # none where only baselines are done (a short --timeout): nothing to weigh
    if varied:
        figures.append(("param_importances",
                        lambda: ovm.plot_param_importances(sampled, evaluator=importance_evaluator(), params=varied)))
    figures.append(("parallel_coordinate", lambda: ovm.plot_parallel_coordinate(study)))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in figures:
            try:
                ax = draw()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(9, 5)
                fig.tight_layout()
                fig.savefig(Path(tmp) / f"{name}.png", dpi=90)
                plt.close(fig)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two distinct values of some parameter
        tracker.log_artifacts(parent, tmp, "study")
    tracker.set_tags(parent, {PLOTTED_TAG: len(complete)})


def export_trial(study_name: str, trial: optuna.trial.FrozenTrial, out_dir: str | None, *, overwrite: bool = False,
                 register: str | None = None) -> tuple[Path, str | None]:
    """Export a trial's trained model (weights from its MLflow run) to ``out_dir``.

    With ``register``, the trial's MLflow model is also registered under that name. Returns the
    folder and the registered model's version (``None`` without ``register``).
    """
    from cnnbench import export
    from cnnbench.tracking import check_store, download_artifact, export_run_info, missing_store, register_model

    if out_dir is None and not _FILE_SAFE.fullmatch(study_name):
        # A study made by other tools in a shared storage may have any name; it must not pick the folder.
        raise StudyError(f"study name {study_name!r} cannot name an export folder",
                         hint="give the folder: cnnbench best --export DIR")
    target = Path(out_dir) if out_dir else Path("exports") / f"{study_name}-trial{trial.number}"
    trained_on = trial.user_attrs.get("config", {}).get("dataset")
    export.check_target(target.absolute(), overwrite, trained_on)  # before any download
    if (store := missing_store()) is not None:  # a command run in another folder: say so, leave no empty store
        raise StudyError(f"no MLflow store at {store}, which holds trial {trial.number}'s weights",
                         hint="run from the folder the sweep ran in, or set MLFLOW_TRACKING_URI to its store")
    check_store()
    model, config, run_id = trial_model(trial, wait=False)  # a command just started: a wrong store fails at once
    spec = datamod.DATASETS.get(config.dataset)
    tracker = Tracker(study_name, recording=False)
    tags = tracker.run_data(run_id).tags
    metrics = {"study": study_name, "trial": trial.number, "val_acc": trial.user_attrs.get("best_val_acc"),
               "test_acc": trial.user_attrs.get("test_acc"), "params": trial.user_attrs.get("params"),
               "train_seconds": trial.user_attrs.get("train_seconds")}
    if register and tags.get("cnnbench.logged_model") != "1":  # before the export: nothing half done
        raise StudyError(f"trial {trial.number} has no MLflow model to register",
                         hint="set tracking.log_model: best (or all) in the sweep file")
    if "cnnbench.data" in tags:  # the images the accuracies were measured on (runs before it was tagged lack it)
        metrics["data_digest"] = tags["cnnbench.data"]
    if "cnnbench.precision" in tags:  # what the accuracies were measured in (runs before it was tagged lack it)
        metrics["precision"] = tags["cnnbench.precision"]
    drawn = set(tracker.artifacts(run_id))  # a sweep with plots: false, or a figure that failed, has fewer
    with tempfile.TemporaryDirectory() as tmp:
        figures = [download_artifact(run_id, name, tmp) for name in plots.FIGURES if name in drawn]
        path = export.export(model, config, spec, target, metrics=metrics, run=export_run_info(tracker, run_id),
                             figures=figures, overwrite=overwrite)
    return path, (register_model(run_id, register) if register else None)
