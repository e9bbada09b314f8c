"""Optimizers, learning-rate schedules and the named choice sets of batch and kernel sizes."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from cnnbench.errors import ConfigError
from cnnbench.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[Callable[..., "Schedule"]] = Registry("scheduler")
CHOICE_SETS: Registry[tuple[int, ...]] = Registry("choice set")


class _Choices(tuple):
    """A named tuple of values with a one-line summary (for ``cnnbench list``)."""

    def __new__(cls, values: Iterable[int], summary: str):
        obj = super().__new__(cls, values)
        obj.summary = f"{summary}: {', '.join(map(str, values))}"
        return obj


CHOICE_SETS.add("batch_sizes", _Choices((10, 20, 64, 128, 256, 512), "batch sizes the seed projects used, and more"))
CHOICE_SETS.add("fast_batch_sizes", _Choices((128, 256, 512), "batch sizes that keep a CPU or GPU busy"))
CHOICE_SETS.add("kernel_sizes", _Choices((3, 5, 7), "square kernel sizes"))


def _fused(params: list) -> bool:
    """Whether the fused (one kernel for all parameters) implementation can take ``params``."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)


@OPTIMIZERS.register("sgd")
def sgd(params, *, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False):
    """Stochastic gradient descent with optional (Nesterov) momentum."""
    if nesterov and momentum <= 0:
        raise ConfigError("nesterov needs momentum > 0", hint="set momentum, e.g. 0.9")
    params = list(params)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                           fused=_fused(params) or None)


@OPTIMIZERS.register("adam")
def adam(params, *, lr: float, weight_decay: float):
    """Adam (L2 penalty added to the gradient)."""
    params = list(params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=_fused(params) or None)


@OPTIMIZERS.register("adamw")
def adamw(params, *, lr: float, weight_decay: float):
    """AdamW (decoupled weight decay)."""
    params = list(params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=_fused(params) or None)


@OPTIMIZERS.register("adadelta")
def adadelta(params, *, lr: float, weight_decay: float):
    """Adadelta, as in PyTorch's MNIST example (lr 1.0)."""
    return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params, *, lr: float, weight_decay: float, momentum: float = 0.0):
    """RMSprop with optional momentum."""
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


def optimizer_params(name: str) -> set[str]:
    """Return the optional settings (beyond ``lr`` and ``weight_decay``) optimizer ``name`` takes."""
    sig = inspect.signature(OPTIMIZERS.get(name))
    return {k for k, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY} - {"lr", "weight_decay"}


def create_optimizer(name: str, params, *, lr: float, weight_decay: float = 0.0, **extra) -> torch.optim.Optimizer:
    """Build optimizer ``name``; ``None`` extras mean the optimizer's default, others it lacks are an error."""
    given = {k: v for k, v in extra.items() if v is not None}
    unknown = sorted(set(given) - optimizer_params(name))
    if unknown:
        raise ConfigError(f"optimizer {name!r} does not take {', '.join(unknown)}",
                          hint=f"drop {', '.join(unknown)} or use an optimizer that has it (sgd, rmsprop)")
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, **given)


@dataclass
class Schedule:
    """A learning-rate schedule stepped after every batch and at the end of every epoch.

    ``factor(step)`` scales the base learning rate per batch; ``plateau`` is set for schedules
    that react to the validation loss instead.
    """

    optimizer: torch.optim.Optimizer
    factor: Callable[[int], float]
    warmup_steps: int = 0
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None

    def __post_init__(self) -> None:
        self.base = [g["lr"] for g in self.optimizer.param_groups]
        self.step_count = 0
        self.scale = 1.0
        self._apply()

    def _apply(self) -> None:
        warm = min(1.0, (self.step_count + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        f = warm * self.factor(self.step_count) * self.scale
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * f

    def step_batch(self) -> None:
        """Advance one batch."""
        self.step_count += 1
        self._apply()

    def step_epoch(self, val_loss: float | None) -> None:
        """Close an epoch; a plateau schedule lowers the rate when ``val_loss`` stopped improving."""
        if self.plateau is not None and val_loss is not None:
            before = self.optimizer.param_groups[0]["lr"]
            self.plateau.step(val_loss)
            after = self.optimizer.param_groups[0]["lr"]
            if after < before:
                self.scale *= after / before
            self._apply()

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Return the schedule's position, for checkpoints."""
        return {"step_count": self.step_count, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict`."""
        self.step_count, self.scale = int(state["step_count"]), float(state["scale"])
        self._apply()


@SCHEDULERS.register("none")
def constant(*, steps_per_epoch: int, epochs: int, **_):
    """Constant learning rate."""
    return lambda step: 1.0


@SCHEDULERS.register("step")
def step(*, steps_per_epoch: int, epochs: int, step_size: int, gamma: float, **_):
    """Multiply by ``gamma`` every ``step_size`` epochs."""
    return lambda s: gamma ** ((s // steps_per_epoch) // step_size)


@SCHEDULERS.register("multistep")
def multistep(*, steps_per_epoch: int, epochs: int, gamma: float, milestones: list[int] | None, **_):
    """Multiply by ``gamma`` at each milestone epoch (default: half and three quarters through)."""
    marks = sorted(milestones or [max(1, epochs // 2), max(1, 3 * epochs // 4)])
    return lambda s: gamma ** sum((s // steps_per_epoch) >= m for m in marks)


@SCHEDULERS.register("exponential")
def exponential(*, steps_per_epoch: int, epochs: int, gamma: float, **_):
    """Multiply by ``gamma`` every epoch, smoothly from batch to batch."""
    return lambda s: gamma ** (s / steps_per_epoch)


@SCHEDULERS.register("cosine")
def cosine(*, steps_per_epoch: int, epochs: int, **_):
    """Cosine decay from the base rate to zero over the whole run."""
    total = steps_per_epoch * epochs
    return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))


@SCHEDULERS.register("onecycle")
def onecycle(*, steps_per_epoch: int, epochs: int, **_):
    """One cycle: linear rise to the base rate over the first 25% of steps, then linear fall to zero."""
    total = steps_per_epoch * epochs
    peak = max(1, int(0.25 * total))
    fall = max(1, total - peak)  # a run of one step (one batch holds the training set) has no fall
    return lambda s: 0.04 + 0.96 * s / peak if s < peak else max(0.0, (total - s) / fall)


@SCHEDULERS.register("plateau")
def plateau(*, steps_per_epoch: int, epochs: int, step_size: int, gamma: float, **_):
    """Multiply by ``gamma`` when the validation loss has not improved for ``step_size`` epochs."""
    return lambda s: 1.0


def create_schedule(
    name: str, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
    step_size: int = 1, gamma: float = 0.1, milestones: list[int] | None = None,
) -> Schedule:
    """Build schedule ``name`` for a run of ``epochs`` epochs of ``steps_per_epoch`` batches."""
    factor = SCHEDULERS.get(name)(
        steps_per_epoch=steps_per_epoch, epochs=epochs, step_size=step_size, gamma=gamma, milestones=milestones
    )
    plateau_sched = None
    if name == "plateau":
        plateau_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=step_size)
    return Schedule(optimizer, factor, warmup_steps=int(warmup_epochs * steps_per_epoch), plateau=plateau_sched)
