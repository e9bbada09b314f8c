"""Sweep definitions: the typed schema of ``sweeps/*.yaml``, its checks, and sampling from the space.

Keys of ``space`` and ``fixed`` are :class:`~cnnbench.config.TrainConfig` field names, so the YAML
key, the Optuna parameter, the config field and the MLflow param are one string.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnbench.config import (ARCH_FIELDS, FIELDS, PRESETS, Layer, TrainConfig, closest, load_yaml,
                             no_flag_for_a_number, schema_error, validate)
from cnnbench.errors import ConfigError
from cnnbench.paths import FOLDER, dataset_name

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "grid", "nsga2")
PRUNERS = ("median", "halving", "hyperband", "none")
#: Objectives a study can optimise, with their direction.
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize", "params": "minimize", "train_seconds": "minimize"}
_INT_FIELDS = {name for name, f in TrainConfig.model_fields.items() if "int" in str(f.annotation)}
_NAMED = {"dataset": "datasets", "arch": "architectures", "optimizer": "optimizers", "scheduler": "schedulers",
          "augment": "augmentations"}
_SWEEPS_DIR = Path(__file__).parent / "sweeps"
#: The sweep that ``cnnbench sweep folder:PATH`` runs on PATH: ``./sweeps/images.yaml``, else the packaged one.
IMAGES_SWEEP = "images"


def format_value(objective: str, value: float) -> str:
    """An objective's value as people read it: counts whole, seconds to a tenth, accuracies and losses to 4 places."""
    if objective == "params":
        return f"{value:,.0f}"
    if objective == "train_seconds":
        return f"{value:.1f} s"
    return f"{value:.4f}"


class _Strict(BaseModel):
    # No infinite or NaN range ends, steps or timeouts: Optuna cannot sample from them (see TrainConfig).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _numbers = field_validator("*", mode="before")(classmethod(no_flag_for_a_number))


Scalar = Union[bool, int, float, str, None]


class Param(_Strict):
    """One dimension of the search space: ``choices`` (a list or a named choice set) or a ``low``..``high`` range.

    ``when`` makes it conditional: ``{optimizer: [sgd, rmsprop]}`` samples it only for those.
    """

    choices: Optional[Union[list[Scalar], str]] = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = Field(None, gt=0)
    when: dict[str, Union[Scalar, list[Scalar]]] = Field(default_factory=dict)

    @field_validator("choices", mode="before")
    @classmethod
    def _finite_choices(cls, choices: Any) -> Any:
        # Said here in one line: pydantic would name each type of the union a non-finite float is not.
        for value in choices if isinstance(choices, list) else ():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"a choice is {value}; every number must be finite")
        return choices

    @model_validator(mode="after")
    def _one_kind(self) -> "Param":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step:
                raise ValueError("give either choices or low/high, not both")
            if isinstance(self.choices, list) and not self.choices:
                raise ValueError("choices is empty; list at least one value")
            if isinstance(self.choices, list) and len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError("choices has duplicates")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is greater than high ({self.high:g}); swap them")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}; raise low or drop log")
        if self.log and self.step:
            raise ValueError("a log range cannot have a step")
        if self.low == self.high:
            raise ValueError(f"low and high are both {self.low:g}: one value is not a search dimension; put it "
                             "under `fixed:`, or widen the range")
        if self.step:
            # Decimal, as Optuna counts steps; it would otherwise cut high to the last whole step, with a warning.
            low, high, step = (Decimal(repr(v)) for v in (self.low, self.high, self.step))
            if step > high - low:
                raise ValueError(f"step ({self.step:g}) is wider than the range {self.low:g}..{self.high:g}, "
                                 "which would hold one value; give a smaller step")
            if (high - low) % step:
                last = low + (high - low) // step * step
                raise ValueError(f"the range {self.low:g}..{self.high:g} is not a whole number of steps of "
                                 f"{self.step:g}; set high to {float(last):g} or {float(last + step):g}")
        return self

    def values(self) -> list[Any]:
        """Return the choices, a named choice set resolved."""
        if isinstance(self.choices, str):
            from cnnbench.optim import CHOICE_SETS

            return list(CHOICE_SETS.get(self.choices))
        return list(self.choices or [])

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether this parameter is sampled, given the values sampled before it."""
        for key, want in self.when.items():
            allowed = want if isinstance(want, list) else [want]
            if values.get(key) not in allowed:
                return False
        return True


def _dimension(value: Any) -> Any:
    """Read a bare list in the space as its choices (``arch: [vgg, two_conv]``); refuse a single value."""
    if isinstance(value, list):
        return {"choices": value}
    if value is None or isinstance(value, (bool, int, float, str)):
        raise ValueError("one value is not a search dimension: put it under `fixed:`, or give choices or low/high")
    return value


Dimension = Annotated[Param, BeforeValidator(_dimension)]


class Tracking(_Strict):
    """What each trial logs to MLflow beyond params, metrics, plots and weights."""

    # Log the MLflow PyTorch model (with signature and input example) for: every trial, the best so far, or none.
    log_model: Literal["all", "best", "none"] = "best"
    # Log the learning curves, the confusion matrix and the right and wrong test predictions as figures.
    plots: bool = True


class Sweep(_Strict):
    """A sweep file: the dataset, the search space, the objective, the budget and the search strategy."""

    dataset: str  # a name from `cnnbench list datasets`, or folder:PATH (relative to the working folder)
    # Letters, digits, '.', '_' and '-': the name also names files (exports, locks).
    study: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    objective: Union[str, list[str]] = "val_acc"
    trials: int = Field(20, gt=0)
    epochs: int = Field(3, gt=0)
    timeout: Optional[float] = Field(None, gt=0)
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    # Successive halving: only the best quarter of the trials at half an epoch (then 2, 8, ...) train on.
    # None where the objective is not one accuracy or loss, which trials report as they train (see prunable).
    pruner: Literal[PRUNERS] = "halving"  # type: ignore[valid-type]
    # The pruner also sees the objective halfway through the first epoch (its steps then count half
    # epochs), so a poor trial stops after half an epoch. Set when the study is created.
    prune_at_half_epoch: bool = True
    seed: int = Field(0, ge=0, le=2**32 - 1)  # 32 bits, as Optuna's samplers take
    workers: int = Field(1, gt=0)
    storage: Optional[str] = None
    baselines: list[str] = Field(default_factory=list)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Dimension] = Field(default_factory=dict)
    tracking: Tracking = Field(default_factory=Tracking)

    _dataset = field_validator("dataset")(classmethod(lambda cls, value: dataset_name(value)))

    @field_validator("objective")
    @classmethod
    def _objectives(cls, value):
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("objective is empty")
        for name in names:
            if name not in OBJECTIVES:
                raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
        if len(set(names)) != len(names):
            raise ValueError("objective lists a name twice")
        return value

    @property
    def objectives(self) -> list[str]:
        """The objective names, the first one being the one trials report and prune on."""
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def prunable(self) -> bool:
        """Whether a pruner can judge the trials: one objective that they report as they train."""
        return self.objectives in (["val_acc"], ["val_loss"])

    @property
    def study_name(self) -> str:
        """The study's name: ``study``, else the dataset's, or for ``folder:PATH`` the folder's (as a study's
        name may be spelt)."""
        if self.study or not self.dataset.startswith(FOLDER):
            return self.study or self.dataset
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(self.dataset).name).strip("-_.")[:100] or "images"

    @property
    def val_fraction(self) -> float:
        """The share of the training images every trial validates on, a number however ``fixed`` wrote it ("0.1")."""
        given = self.fixed.get("val_fraction", TrainConfig.model_fields["val_fraction"].default)
        return validate({"val_fraction": given}).val_fraction

    def identity(self) -> dict[str, Any]:
        """What must not change when a study is resumed: dataset, objective, epochs, fixed values and space, as a
        study keeps it (through JSON: a tuple read back is a list)."""
        return json.loads(json.dumps({
            "dataset": self.dataset, "objective": self.objectives, "epochs": self.epochs,
            "fixed": dict(sorted(self.fixed.items())),
            "space": {k: v.model_dump(exclude_defaults=True) for k, v in self.space.items()},
        }))


def find_sweep(name: str) -> Path:
    """Return the sweep file for ``name``: a path, ``./sweeps/NAME.yaml``, or cnnbench's packaged one; for a
    dataset ``folder:PATH``, that of :data:`IMAGES_SWEEP`, the sweep for one's own images."""
    path = Path(name)
    if name.startswith(FOLDER):  # one's own images: the sweep for them, of this folder (load_sweep)
        return find_sweep(IMAGES_SWEEP)
    if path.suffix in (".yaml", ".yml") or os.sep in name:
        if not path.is_file():
            raise _not_a_file(path) if path.is_dir() else ConfigError(f"sweep file {name} does not exist",
                                                                        hint="check the path")
        return path
    for folder in (Path("sweeps"), _SWEEPS_DIR):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    if path.is_dir():  # `.` or `sweeps`: a folder, where a sweep's name was looked for
        raise _not_a_file(path)
    known = sorted({p.stem for folder in (Path("sweeps"), _SWEEPS_DIR) if folder.is_dir()
                    for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(name, known, n=1)
    raise ConfigError(f"no sweep named {name!r}; known: {', '.join(known)}",
                      hint=f"did you mean {close[0]!r}?" if close else "give a path to a .yaml file")


def _not_a_file(folder: Path) -> ConfigError:
    inside = sorted(str(p) for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))[:3]
    return ConfigError(f"{folder} is a folder, not a sweep file",
                       hint=f"give one of its sweep files: {', '.join(inside)}" if inside
                       else "give the path of a .yaml sweep file")


def load_sweep(name: str, overrides: dict[str, Any] | None = None) -> tuple[Sweep, dict[str, str]]:
    """Read, override and validate a sweep; return it with the source of every top-level key.

    Everything is checked here, before any study, run or data exists: the schema, the names
    in the space against the registries, and that every architecture can be built.
    """
    path = find_sweep(name)
    raw, lines = load_yaml(path)
    if raw and not {"space", "fixed", "trials"} & set(raw) and set(raw) <= set(FIELDS) and "arch" in raw:
        raise ConfigError(f"{path} is a training config, not a sweep file",
                          hint=f"train with it: cnnbench train --config {path}")
    sources = {k: f"{path}:{lines.get((k,), 1)}" for k in raw}
    named = {"dataset": name} if name.startswith(FOLDER) else {}  # `cnnbench sweep folder:PATH`
    raw.update(named)
    sources.update(dict.fromkeys(named, ""))  # the DATASET argument, not a flag nor a line: its errors name no source
    flags = Layer.flags(overrides or {})
    raw.update(flags.values)
    sources.update(flags.sources)
    try:
        sweep = Sweep(**raw)
    except ValidationError as err:
        first = err.errors()[0]["loc"]
        where = lines.get(tuple(first[:2])) or lines.get(tuple(first[:1]))
        if where and str(first[0]) not in flags.sources and str(first[0]) not in named:
            sources = {**sources, str(first[0]): f"{path}:{where}"}
        sources.setdefault(str(first[0]), str(path))  # a key the file lacks: the file
        raise schema_error(err, sources, Sweep) from None
    check_sweep(sweep, path, lines, sources)
    if not sweep.prunable and "pruner" not in sources:
        sweep = sweep.model_copy(update={"pruner": "none"})  # the default has nothing to judge
    return sweep, sources


def check_sweep(sweep: Sweep, path: Path, lines: dict[tuple, int], sources: dict[str, str]) -> None:
    """Check a sweep's names, conditions and shapes against the registries; raise :class:`ConfigError`."""
    from cnnbench import catalog
    from cnnbench.models import arch_params
    from cnnbench.optim import optimizer_params
    from cnnbench.storage import check_url
    from cnnbench.train import check

    def where(*key) -> str:
        return f"{path}:{lines[key]}" if key in lines else sources.get(key[0], str(path))

    regs = catalog.registries()
    try:
        regs["datasets"].get(sweep.dataset)
    except ConfigError as err:
        raise ConfigError(err.message, source=where("dataset"), hint=err.hint) from None
    try:
        check_url(sweep.storage)
    except ConfigError as err:
        raise ConfigError(err.message, source=where("storage"), hint=err.hint) from None
    for key in list(sweep.fixed) + list(sweep.space):
        if key not in FIELDS:
            close = closest(key, FIELDS)
            raise ConfigError(f"{key!r} is not a training setting", source=where("space", key) if key in sweep.space
                              else where("fixed", key), hint=f"did you mean {close!r}?" if close else None)
    if both := [key for key in sweep.space if key in sweep.fixed]:
        raise ConfigError(f"{both[0]} is both fixed and searched", source=where("space", both[0]),
                          hint="remove it from fixed to search it, or from space to fix it")
    for key in ("dataset", "epochs", "seed") + STUDY_WIDE:
        if key in sweep.space:
            raise ConfigError(f"{key} holds for the whole study and cannot be searched",
                              source=where("space", key), hint=f"set it under fixed (or at the top for {key})"
                              if key not in ("dataset", "epochs", "seed") else "set it at the top of the file")
    for key in ("dataset", "epochs", "seed"):
        if key in sweep.fixed:
            raise ConfigError(f"{key} is set at the top of a sweep, not under fixed", source=where("fixed", key))
    try:
        validate({**sweep.fixed, "dataset": sweep.dataset}, {key: where("fixed", key) for key in sweep.fixed})
    except ConfigError as err:  # at the setting's own line; an error of no one setting at fixed's
        raise ConfigError(err.message, source=err.source or where("fixed"), hint=err.hint) from None
    for key, value in sweep.fixed.items():
        if key in _NAMED and value is not None:
            try:  # else a name misspelt failed every trial, once the study and its runs were made
                regs[_NAMED[key]].get(value)
            except ConfigError as err:
                raise ConfigError(f"fixed.{key}: {err.message}", source=where("fixed", key), hint=err.hint) from None
    for name in sweep.baselines:
        try:
            PRESETS.get(name)
        except ConfigError as err:
            raise ConfigError(err.message, source=where("baselines"), hint=err.hint) from None

    if sweep.sampler == "grid":
        grid(sweep)
    if len(sweep.objectives) > 1 and sweep.sampler in ("cmaes", "qmc", "grid"):
        raise ConfigError(f"the {sweep.sampler} sampler optimises one objective; this sweep has "
                          f"{len(sweep.objectives)}", source=where("sampler"), hint="use nsga2, tpe or gp")
    if not sweep.prunable and sweep.pruner != "none" and "pruner" in sources:
        raise ConfigError(f"the {sweep.pruner} pruner judges trials by one objective, val_acc or val_loss, as they "
                          f"train; this sweep's is {', '.join(sweep.objectives)}", source=where("pruner"),
                          hint="give --pruner none" if sources["pruner"] == "--pruner" else "set pruner: none")
    if sweep.val_fraction == 0:
        if any(o.startswith("val_") for o in sweep.objectives):
            raise ConfigError("the objective needs a validation split, but val_fraction is 0",
                              source=where("fixed", "val_fraction"), hint="set val_fraction to e.g. 0.1")
        # Without a split a plateau schedule would do nothing. train.check (below, for each architecture)
        # refuses it fixed, and patience fixed or searched, but meets a searched setting at its first value only.
        if "scheduler" in sweep.space and "plateau" in sweep.space["scheduler"].values():
            raise ConfigError("the plateau schedule lowers the rate on the validation loss, but val_fraction is 0",
                              source=where("space", "scheduler"),
                              hint="set val_fraction, e.g. 0.1, or remove plateau from space.scheduler")

    seen: list[str] = []
    for key, param in sweep.space.items():
        src = where("space", key)
        for cond, want in param.when.items():
            if cond not in seen:
                raise ConfigError(f"space.{key} depends on {cond!r}, which is not sampled before it",
                                  source=src, hint=f"list {cond} above {key} in the space")
            for value in (want if isinstance(want, list) else [want]) if cond in _NAMED else []:
                try:  # a name misspelt: the condition could never hold
                    regs[_NAMED[cond]].get(value)
                except ConfigError as err:
                    raise ConfigError(f"space.{key}.when.{cond}: {err.message}", source=src, hint=err.hint) from None
        seen.append(key)
        values = param.values() if param.choices is not None else [param.low, param.high]
        if key in _NAMED and param.choices is not None:
            for v in values:
                try:
                    regs[_NAMED[key]].get(v)
                except ConfigError as err:
                    raise ConfigError(f"space.{key}: {err.message}", source=src, hint=err.hint) from None
        read: dict[str, Any] = {}  # each value as training reads it, by how it was written
        for v in values:
            try:
                value = getattr(validate({key: int(v) if key in _INT_FIELDS and isinstance(v, float)
                                          and v.is_integer() else v}), key)
            except ConfigError as err:
                raise ConfigError(f"space.{key}: {err.message}", source=src) from None
            if param.choices is not None and (same := next((w for w, r in read.items() if r == value), None)):
                raise ConfigError(f"space.{key}: the choices {same} and {v!r} are one value, {value!r}", source=src,
                                  hint="give each value once")  # "256" and 256: one trial's settings drawn twice
            read[repr(v)] = value
        if key in _INT_FIELDS and param.choices is None and param.step and not float(param.step).is_integer():
            raise ConfigError(f"space.{key} is a whole number; its step must be too", source=src)

    for key, owner, takes in ([(k, "arch", arch_params) for k in ARCH_FIELDS]
                              + [("momentum", "optimizer", optimizer_params), ("nesterov", "optimizer", optimizer_params)]):
        if key not in sweep.space and sweep.fixed.get(key) is None:
            continue
        allowed = sweep.space[key].when.get(owner) if key in sweep.space else None
        allowed = allowed if isinstance(allowed, list) or allowed is None else [allowed]
        owners = [o for o in settings(sweep, owner) if allowed is None or o in allowed]
        lacking = [o for o in owners if key not in takes(o)]
        if lacking:
            having = [o for o in settings(sweep, owner) if key in takes(o)]
            fix = (f"add `when: {{{owner}: [{', '.join(having)}]}}` to space.{key}" if key in sweep.space and having
                   else f"remove {key} or the {owner} choices {', '.join(lacking)}")
            raise ConfigError(f"{key} does not apply to {owner} {', '.join(lacking)}",
                              source=where("space", key) if key in sweep.space else where("fixed", key), hint=fix)

    # Where each setting was given, for an error of the setting itself rather than of the architecture.
    blame = {k: where("space", k) if k in sweep.space else where("fixed", k) for k in {*sweep.fixed, *sweep.space}}
    ranged = "kernel_size" in sweep.space and sweep.space["kernel_size"].choices is None
    kernels = ([int(sweep.space["kernel_size"].low), int(sweep.space["kernel_size"].high)] if ranged
               else [k for k in settings(sweep, "kernel_size") if k is not None] or [None])
    built: set[Any] = set()  # the kernel sizes some architecture that takes one builds with
    for arch in settings(sweep, "arch"):
        # One value of every other searched setting that applies, so that a fixed setting that
        # needs a searched one (nesterov, momentum) is checked with it and not without it.
        sampled: dict[str, Any] = {"arch": arch}
        for key, param in sweep.space.items():
            if key not in ("arch", "kernel_size") and param.applies(sampled):
                sampled[key] = settings(sweep, key)[0]
        errors = []
        takes_kernel = "kernel_size" in arch_params(arch)
        tried = kernels if takes_kernel else [None]
        for kernel in tried:
            values = {**sweep.fixed, **sampled, "dataset": sweep.dataset}
            if kernel is not None:
                values["kernel_size"] = int(kernel)
            try:
                check(validate(values), blame)
                built.add(kernel)
            except ConfigError as err:
                if err.source:  # a setting's own error; a shape error has none: it is the combination's
                    raise
                errors.append(err)
        if len(errors) == len(tried):
            if tried != [None]:
                raise ConfigError(f"architecture {arch!r} cannot be built for {sweep.dataset} with any kernel size in "
                                  f"the space: {errors[-1].message}", source=where("space", "arch"),
                                  hint=f"remove {arch!r} from space.arch or allow smaller kernel sizes")
            raise ConfigError(errors[-1].message, source=where("space", "arch"), hint=f"remove {arch!r} from space.arch")
    unbuilt = [k for k in kernels if k is not None and k not in built]
    if unbuilt and built and "kernel_size" in sweep.space:
        raise ConfigError(f"no architecture in the space can be built for {sweep.dataset} with kernel_size "
                          f"{', '.join(map(str, unbuilt))}", source=where("space", "kernel_size"),
                          hint="lower space.kernel_size's high" if ranged
                          else f"remove {', '.join(map(str, unbuilt))} from space.kernel_size")


def budget_warning(sweep: Sweep) -> str | None:
    """Return a warning where the sweep's trials search nothing, else ``None``: its baselines take them all, or its
    space is empty, so that every trial after the baselines would train one configuration (trials that repeat
    an earlier one are pruned as its duplicates)."""
    baselines, left = len(sweep.baselines), sweep.trials - len(sweep.baselines)
    if sweep.space and left <= 0:
        taken = "the only trial" if sweep.trials == 1 else f"all {sweep.trials} trials"
        return (f"the {baselines} baselines take {taken}, so nothing in the space is searched; "
                f"give --trials above {baselines}")
    if not sweep.space and left > 1:
        after = " after the baselines" if baselines else ""
        return (f"the space is empty, so the {left} trials{after} would train one configuration: the first trains "
                f"it, the others are pruned as its duplicates; give a space, or trials: {baselines + 1}")
    return None


def unsearched_warning(sweep: Sweep) -> str | None:
    """Return a warning where a setting of the space is searched only when another takes a value it is never
    drawn at (``when: {arch: vgg}`` with vgg left out of ``arch``'s choices), else ``None``."""
    for key, param in sweep.space.items():
        for cond, want in param.when.items():
            owner = sweep.space[cond]
            wanted = want if isinstance(want, list) else [want]
            if owner.choices is not None and not any(w in owner.values() for w in wanted):
                return (f"space.{key} is searched only when {cond} is {', '.join(map(str, wanted))}, which "
                        f"space.{cond} ({', '.join(map(str, owner.values()))}) never is: {key} is not searched")
    return None


def settings(sweep: Sweep, key: str) -> list[Any]:
    """Return the values the sweep's trials may give the training setting ``key``: its choices, the low end of its
    range, or the one fixed (or default) value."""
    if key in sweep.space:
        p = sweep.space[key]
        return p.values() if p.choices is not None else [p.low]
    return [sweep.fixed.get(key, TrainConfig.model_fields[key].default)]


def grid(sweep: Sweep) -> dict[str, list[Any]]:
    """Return the search space as a grid (for the grid sampler): every parameter must have choices."""
    out = {}
    for key, param in sweep.space.items():
        if param.choices is None:
            raise ConfigError(f"the grid sampler needs choices for every parameter; space.{key} is a range",
                              hint="give choices or use another sampler")
        out[key] = param.values()
    return out


def suggest(trial, sweep: Sweep) -> dict[str, Any]:
    """Sample the space with an Optuna ``trial`` and return the sampled values (conditional ones only when they apply)."""
    values: dict[str, Any] = {}
    for key, param in sweep.space.items():
        if not param.applies(values):
            continue
        if param.choices is not None:
            values[key] = trial.suggest_categorical(key, param.values())
        elif key in _INT_FIELDS:
            values[key] = trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1),
                                            log=param.log)
        else:
            values[key] = trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)
    return values


#: Settings that hold for a whole study, baselines included: the data split and where trials run.
STUDY_WIDE = ("val_fraction", "device", "precision", "compile", "eval_batch_size")


def trial_config(sweep: Sweep, sampled: dict[str, Any], *, preset: str | None = None,
                 device: str | None = None) -> TrainConfig:
    """Return the training configuration of one trial: the fixed values (or a baseline preset), then the sampled ones.

    A baseline keeps its preset's recipe but takes the study's dataset, epochs, seed and study-wide settings.
    """
    if preset:
        base = {**PRESETS.get(preset).values, **{k: v for k, v in sweep.fixed.items() if k in STUDY_WIDE}}
    else:
        base = dict(sweep.fixed)
    values = {**base, **sampled, "dataset": sweep.dataset, "epochs": sweep.epochs, "seed": sweep.seed}
    if device:
        values["device"] = device
    return validate(values)
