"""The training loop: a plain config and the data in, the per-epoch history and best model out.

Nothing here knows of Optuna or MLflow; callers watch progress through one ``on_epoch_end`` hook.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import hashlib
import io
import math
import os
import platform
import statistics
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench import data as datamod
from cnnbench.config import TrainConfig
from cnnbench.errors import CheckpointError, ConfigError, DivergedError, UnknownNameError, listed
from cnnbench.models import check_model, create_model, with_tta
from cnnbench.optim import create_optimizer, create_schedule, optimizer_params
from cnnbench.paths import keep_json, read_json, write_whole

#: How many batches pass between checks for a non-finite loss (one host sync each).
DIVERGENCE_CHECK_EVERY = 16

#: How many training images a layer that sets itself from data (airbench's whitening) sees, as in airbench.
DATA_INIT_IMAGES = 5000


@dataclass
class EpochMetrics:
    """What one epoch measured. Accuracies are fractions in [0, 1]."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    epoch_seconds: float
    images_per_sec: float


@dataclass
class Result:
    """What :func:`fit` returns: the history, the best epoch and the model holding its weights."""

    history: list[EpochMetrics]
    best_epoch: int
    model: nn.Module
    params: int
    device: str
    precision: str
    train_seconds: float
    stopped_early: bool = False

    @property
    def best(self) -> EpochMetrics:
        return next(m for m in self.history if m.epoch == self.best_epoch)


@dataclass
class Evaluation:
    """Loss and accuracy on a split, with the predicted class of every image."""

    loss: float
    acc: float
    predictions: torch.Tensor = field(repr=False)
    confidences: torch.Tensor = field(repr=False)


def resolve_device(name: str) -> torch.device:
    """Return the device for ``name``; ``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    # torch knows more (meta, xpu, hpu, cpu:7): none a CPU build trains on, nor one this trainer was written for.
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise ConfigError(f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here", hint="use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        raise ConfigError(f"device {name!r} asked for, but this machine has {count} CUDA device{'s' * (count != 1)}",
                          hint=f"use cuda:0 to cuda:{count - 1}" if count > 1 else "use cuda")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asked for, but MPS is not available here", hint="use --device cpu")
    return device


def cpu_has_bf16_hardware() -> bool:
    """Return whether this CPU has AMX or AVX512-BF16; without them bf16 is emulated, 5-13x slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, c, lambda: False)() for c in checks)


#: ``--precision auto`` trains in bf16 on a CPU whose convolutions run at least this much faster in it than in
#: fp32 (the rest of a training step gains less, and casts to and from bf16 cost).
BF16_MIN_SPEEDUP = 1.25


#: How many measurements of bf16's speed on a CPU settle it: one can be far off (on machine A one read 0.72 where
#: a dozen others read 1.2-2.0, and fp32 then trained its nets up to 1.5x slower; on machine E, with AMX, one read
#: 1.24 where others read 1.7-2.3; docs/benchmarks.md, section 6), the median of three is not.
BF16_MEASUREMENTS = 3


@functools.cache
def cpu_bf16_speedup() -> float:
    """Return how much faster a convolution trains in bf16 autocast than in fp32 on this CPU (0 without bf16
    hardware): the median of the :data:`BF16_MEASUREMENTS` measurements kept in the cache folder for this CPU
    and torch version, taken (0.1-0.2 s each) by the first process that needs them.

    The hardware alone does not tell: AMX runs bf16 several times faster than fp32 and AMD's AVX512-BF16
    about twice as fast, but an Intel AVX512-BF16 without AMX (or with AMX hidden by a virtual machine)
    runs it at about half fp32's rate (docs/benchmarks.md, section 6).
    """
    if not cpu_has_bf16_hardware():
        return 0.0
    name = f"bf16/{_cpu_fingerprint()}.json"
    try:
        kept = _speedups(read_json(name))
    except (OSError, ValueError):
        kept = []
    if len(kept) < BF16_MEASUREMENTS:
        # All of them at once: this process (a whole sweep, perhaps) must not run in the precision a stray chose.
        while len(kept) < BF16_MEASUREMENTS:
            kept.append(_measure_bf16_speedup()["speedup"])
        keep_json(name, {"speedups": kept})
    return statistics.median(kept)


def _speedups(value) -> list[float]:
    """Return the measurements in a cache file's value: ``{"speedups": [...]}``, or ``{"speedup": x}`` as kept
    before there were several; none from a value of another shape."""
    if isinstance(value, dict) and isinstance(value.get("speedups"), list):
        found = value["speedups"]
    elif isinstance(value, dict) and "speedup" in value:
        found = [value["speedup"]]
    else:
        return []
    return [float(v) for v in found if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]


def describe_hardware(device: torch.device) -> dict[str, str]:
    """Return what ran a training here: ``cpu`` (the model name), ``gpu`` (the CUDA device's name, else empty),
    ``torch`` (its version) and ``threads`` (torch's CPU threads)."""
    names = [line.split(":", 1)[1].strip() for line in _first_cpu() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return {"cpu": cpu, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
            "torch": torch.__version__, "threads": str(torch.get_num_threads())}


@functools.cache
def _first_cpu() -> tuple[str, ...]:
    """Return the lines /proc/cpuinfo gives for the first processor (none where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            return tuple(f.read().split("\n\n", 1)[0].splitlines())
    except OSError:
        return ()


def _cpu_fingerprint() -> str:
    """Return a short hash of what decides this CPU's bf16 speed: its model and flags, and torch's version."""
    keys = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")
    cpu = [line for line in _first_cpu() if line.split(":")[0].strip() in keys]
    text = "\n".join([*(cpu or [platform.machine(), platform.processor()]), torch.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _measure_bf16_speedup(rounds: int = 5) -> dict[str, float]:
    """Time a 3x3 convolution's forward and backward (batch 64, 32 to 64 channels, 14x14, channels_last) in fp32
    and in bf16 autocast, alternating, best of ``rounds`` each; return the fp32 time over the bf16 time."""
    with torch.random.fork_rng(devices=[]):  # the training that follows draws the same numbers either way
        torch.manual_seed(0)
        conv = nn.Conv2d(32, 64, 3, padding=1).to(memory_format=torch.channels_last)
        x = torch.randn(64, 32, 14, 14).contiguous(memory_format=torch.channels_last)

    def seconds(bf16: bool) -> float:
        start = time.perf_counter()
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = conv(x)
            out.float().sum().backward()
        return (time.perf_counter() - start) / 3

    best = {False: math.inf, True: math.inf}
    seconds(False), seconds(True)  # the first calls pick kernels and allocate
    for _ in range(rounds):  # alternating, so that a change in the machine's speed falls on both
        for bf16 in best:
            best[bf16] = min(best[bf16], seconds(bf16))
    return {"speedup": best[False] / best[True]}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`ConfigError` for a precision ``device`` cannot train in (fp16 on the CPU); costs nothing."""
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast is not supported on the CPU", hint="use --precision bf16 or fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return the precision to train in: ``auto`` is bf16 on CUDA and on CPUs where it was measured faster (see
    :func:`cpu_bf16_speedup`), else fp32."""
    if precision != "auto":
        check_precision(precision, device)
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_hardware():
            warnings.warn("bf16 on a CPU without AMX or AVX512-BF16 is emulated: training is several times slower "
                          "than in fp32 here (--precision auto picks fp32)", stacklevel=2)
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP:
        return "bf16"
    return "fp32"


def uses_channels_last(device: torch.device, precision: str) -> bool:
    """Return whether to train and evaluate in channels_last: on the CPU always, on CUDA with autocast.

    oneDNN's CPU convolutions run faster in it in fp32 too (a training step 1.4-1.6x on an AVX2-only CPU,
    docs/benchmarks.md section 6), and bf16 autocast there needs it to pay off.
    """
    return device.type == "cpu" or (device.type == "cuda" and precision != "fp32")


#: glibc's malloc hands large freed blocks back to the system and maps fresh ones, so each step's
#: activations and optimizer temporaries page-fault anew. Keeping them in the heap made CPU training
#: 15-65% faster here, most at small batch sizes (docs/benchmarks.md). mallopt's parameter numbers:
#: M_MMAP_THRESHOLD (-3) at its 32 MiB maximum, M_TRIM_THRESHOLD (-1) and M_TOP_PAD (-2).
MALLOC_OPTIONS = {-3: 32 << 20, -1: 256 << 20, -2: 64 << 20}


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse in this process; return whether it could.

    Does nothing outside Linux with glibc, or when ``CNNBENCH_MALLOC=default`` is set.
    """
    if not sys.platform.startswith("linux") or os.environ.get("CNNBENCH_MALLOC") == "default":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in MALLOC_OPTIONS.items())


def flush_denormals() -> bool:
    """Make the CPU treat denormal floats as zero in this thread and in torch's worker threads; return whether
    it can.

    Optimizer state that decays towards zero (Adam's and Adadelta's running averages for weights that get little
    or no gradient) ends in denormal numbers, on which Intel's CPUs compute tens of times slower: flushed, seed
    000's Adadelta trained 2.1x and seed 003's Adam 1.7x faster on a Xeon, to the same accuracy
    (docs/benchmarks.md, section 1); an AMD Zen 3 computes on them at full speed, and gains nothing. The setting
    is per thread, and a thread takes it from the one that starts it: so it is also set in each thread of torch's
    OpenMP team where that runtime can be found (Linux), for callers whose torch had already started its threads,
    as :func:`fit`'s callers from Python often have; the commands call this before their first torch operation,
    which is enough on any platform.
    """
    if not torch.set_flush_denormal(True):
        return False
    parallel = _openmp_parallel()
    if parallel is not None:
        parallel(_flush_this_thread, None, torch.get_num_threads(), 0)
    return True


_PER_THREAD = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@_PER_THREAD
def _flush_this_thread(_) -> None:
    torch.set_flush_denormal(True)


@functools.cache
def _openmp_parallel():
    """Return ``GOMP_parallel`` (run a function once in each thread of a team) of the OpenMP runtime loaded in
    this process, torch's own copy first, or None where torch runs no OpenMP or there is none to be found."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {fields[5].strip() for fields in (line.split(maxsplit=5) for line in maps) if len(fields) == 6}
    except OSError:
        return None
    runtimes = [p for p in paths if Path(p).name.startswith(("libgomp", "libiomp5", "libomp")) and ".so" in p]
    torch_lib = str(Path(torch.__file__).parent)
    for path in sorted(runtimes, key=lambda p: not p.startswith(torch_lib)):
        try:
            parallel = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        parallel.argtypes = [_PER_THREAD, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        return parallel
    return None


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def check(config: TrainConfig, sources: dict[str, str] | None = None) -> int:
    """Check that every name in ``config`` exists and that its model can be built for its dataset.

    Does no training, loads no data and touches no accelerator; returns the parameter count.
    Raises :class:`ConfigError` (or a subclass) for the first problem, naming where the setting
    came from when ``sources`` (as :func:`cnnbench.config.resolve` returns them) has it.
    """
    sources = sources or {}
    with _blame(sources, "dataset"):
        spec = datamod.DATASETS.get(config.dataset)
    if config.augment is not None:
        with _blame(sources, "augment"):
            datamod.AUGMENTS.get(config.augment)
    from cnnbench.optim import OPTIMIZERS, SCHEDULERS

    with _blame(sources, "optimizer"):
        OPTIMIZERS.get(config.optimizer)
    with _blame(sources, "scheduler"):
        SCHEDULERS.get(config.scheduler)
    extras = {"momentum": config.momentum, "nesterov": config.nesterov}
    unknown = sorted(k for k, v in extras.items() if v is not None and k not in optimizer_params(config.optimizer))
    if unknown:
        raise ConfigError(f"optimizer {config.optimizer!r} does not take {', '.join(unknown)}",
                          source=sources.get(unknown[0]),
                          hint="drop it, or use sgd (momentum, nesterov) or rmsprop (momentum)")
    if config.nesterov and not config.momentum:
        raise ConfigError("nesterov needs momentum > 0", source=sources.get("nesterov"),
                          hint="set momentum, e.g. 0.9")
    if not config.val_fraction:  # else they would quietly do nothing
        if config.patience is not None:
            raise ConfigError("patience stops training on the validation accuracy, but val_fraction is 0",
                              source=sources.get("patience"), hint="set val_fraction, e.g. 0.1, or drop patience")
        if config.scheduler == "plateau":
            raise ConfigError("the plateau schedule lowers the rate on the validation loss, but val_fraction is 0",
                              source=sources.get("scheduler"), hint="set val_fraction, e.g. 0.1, or use another schedule")
    c, h, w = spec.shape
    with _blame(sources, "arch"):
        return check_model(config.arch, in_channels=c, num_classes=spec.num_classes, input_size=(h, w),
                           **config.arch_kwargs())


def mirror_warning(dataset: str, augments: Iterable[str | None], ttas: Iterable[str]) -> str | None:
    """Return a warning where settings show a net mirrored images of a dataset whose classes do not survive
    mirroring (digits), else ``None``. ``augments`` and ``ttas`` are every value a run or a sweep may use."""
    spec = datamod.DATASETS.get(dataset)
    if spec.mirrors:
        return None
    asked = ([f"augment {a!r}" for a in dict.fromkeys(a or spec.augment for a in augments) if a in datamod.MIRRORING]
             + [f"tta {t!r}" for t in dict.fromkeys(ttas) if t != "none"])
    if not asked:
        return None
    # Measured with `cnnbench train mnist --preset mnist_fast` (docs/benchmarks.md, section 2).
    return (f"{' and '.join(asked)} mirror{'s' * (len(asked) == 1)} images, but a mirrored {spec.name} image is "
            f"not of its class: expect lower accuracy (mnist_fast: 99.1% test, 98.2% with augment 'flip', 89.6% with "
            f"tta 'flip')")


@contextlib.contextmanager
def _blame(sources: dict[str, str], key: str):
    """Name where ``key`` was set (a flag, ``file:line``, a preset) in an unknown-name error that has no source."""
    try:
        yield
    except UnknownNameError as err:  # not a shape error: that is the whole combination's
        err.source = err.source or sources.get(key)
        raise


def build_model(config: TrainConfig, spec: datamod.DatasetSpec) -> nn.Module:
    """Return the (untrained) model ``config`` describes, for dataset ``spec``."""
    c, h, w = spec.shape
    return create_model(config.arch, in_channels=c, num_classes=spec.num_classes, input_size=(h, w),
                        **config.arch_kwargs())


def fit(
    config: TrainConfig,
    data: datamod.Data,
    *,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    on_half_epoch: Callable[[Evaluation], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = False,
) -> Result:
    """Train the model ``config`` describes on ``data`` and return its history and best model.

    ``on_epoch_end`` is called after each epoch; an exception raised there stops training.
    ``on_half_epoch``, where there is a validation split, is called halfway through the first
    epoch with the model's evaluation on it (not counted as training time), so that a search can
    stop a poor trial after half an epoch; an exception raised there stops training too.
    With ``checkpoint`` set, the run is saved there after each epoch and resumed from it if it
    exists. Raises :class:`DivergedError` as soon as the loss is not finite.
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = uses_channels_last(device, precision)
    if device.type == "cpu":
        keep_freed_memory()
        flush_denormals()
    elif device.type == "cuda":
        # Every training batch has one shape (drop_last), so cuDNN's timed choice of algorithm is made once a
        # shape and pays for itself, as in airbench; GPU results are not bitwise reproducible either way.
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    data = data.to(device)
    spec = data.spec
    model = build_model(config, spec).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = create_optimizer(config.optimizer, trained, lr=config.lr, weight_decay=config.weight_decay,
                                 momentum=config.momentum, nesterov=config.nesterov)
    mean, std = datamod.normalisation(spec, device)
    resuming = checkpoint is not None and Path(checkpoint).exists()
    t0 = time.perf_counter()
    if not resuming:
        _init_from_data(model, data.train, mean, std)
    init_seconds = time.perf_counter() - t0  # counted in the first epoch's time
    gen = torch.Generator(device=device).manual_seed(config.seed)
    augment = datamod.AUGMENTS.get(config.augment or spec.augment)
    batches = datamod.Batches(data.train, config.batch_size, mean, std, shuffle=True,
                              augment=None if augment is datamod.no_augment else augment, generator=gen,
                              drop_last=True, channels_last=channels_last)
    schedule = create_schedule(config.scheduler, optimizer, steps_per_epoch=len(batches), epochs=config.epochs,
                               warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
                               milestones=config.milestones)
    step_fn = _train_step(model, optimizer, config.label_smoothing, device, precision, config.compile)
    lookahead = Lookahead(model, config.epochs * len(batches)) if config.lookahead else None

    history: list[EpochMetrics] = []
    best_epoch, best_score, best_state = 0, -math.inf, None
    start_epoch, since_best, stopped_early = 1, 0, False
    if resuming:
        state = _run_state(checkpoint)
        _same_run(checkpoint, state, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        gen.set_state(state["generator"].to(gen.get_state().device) if device.type == "cpu" else state["generator"])
        history = [EpochMetrics(**m) for m in state["history"]]
        best_epoch, best_score, since_best = state["best_epoch"], state["best_score"], state["since_best"]
        best_state = state["best_model"]
        start_epoch = len(history) + 1
        if lookahead is not None:
            saved = state.get("lookahead")
            lookahead.average = {k: v.to(device) for k, v in saved.items()} if saved is not None else None

    train_seconds = sum(m.epoch_seconds for m in history)
    bar = _progress(progress, config.epochs * len(batches), (start_epoch - 1) * len(batches))
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, paused = 0, 0.0
        half = len(batches) // 2 if on_half_epoch is not None and data.val and epoch == 1 else 0
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(batches, 1):
            loss, hits = step_fn(x, y)
            schedule.step_batch()
            if lookahead is not None:
                lookahead.step((epoch - 1) * len(batches) + i)
            loss_sum += loss * len(y)
            correct += hits
            seen += len(y)
            if i % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                raise DivergedError(f"diverged: loss is not finite at epoch {epoch}, batch {i}",
                                    hint="lower lr or add warm-up")
            if bar is not None:
                bar.update()
            if i == half:
                t1 = time.perf_counter()
                on_half_epoch(evaluate(model, data.val, spec, config, device=device, precision=precision))
                model.train()
                paused += time.perf_counter() - t1
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise DivergedError(f"diverged: loss is not finite at epoch {epoch}", hint="lower lr or add warm-up")
        train_acc = correct.item() / seen
        if lookahead is not None:
            lookahead.settle()
        seconds = time.perf_counter() - t0 - paused + (init_seconds if epoch == 1 else 0.0)
        train_seconds += seconds
        val = evaluate(model, data.val, spec, config, device=device, precision=precision) if data.val else None
        metrics = EpochMetrics(epoch, train_loss, train_acc, val.loss if val else None, val.acc if val else None,
                               schedule.lr, seconds, seen / seconds)
        history.append(metrics)
        score = val.acc if val else epoch
        if score > best_score:
            best_epoch, best_score, since_best = epoch, score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        schedule.step_epoch(val.loss if val else None)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "generator": gen.get_state(), "history": [asdict(m) for m in history], "best_epoch": best_epoch,
                "best_score": best_score, "since_best": since_best, "best_model": best_state,
                "config": config.params(), "lookahead": lookahead.average if lookahead is not None else None,
            })
        if bar is not None:
            bar.set_postfix_str(_postfix(metrics), refresh=False)
        if on_epoch_end is not None:
            on_epoch_end(metrics)
        if config.patience is not None and since_best >= config.patience:
            stopped_early = True
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return Result(history, best_epoch, model, params, str(device), precision, train_seconds, stopped_early)


def _init_from_data(model: nn.Module, split: datamod.Split, mean: torch.Tensor, std: torch.Tensor) -> None:
    layers = [m for m in model.modules() if callable(getattr(m, "init_from_data", None))]
    if layers:
        images = (split.x[:DATA_INIT_IMAGES].float() / 255 - mean) / std
        for layer in layers:
            layer.init_from_data(images)


class Lookahead:
    """airbench's lookahead: from ``START`` of the ``total`` steps on, every ``EVERY`` steps the floating-point
    state (weights and batch-norm statistics) moves to an average of itself that keeps more of the past as
    training ends (``BASE ** EVERY * (step / total) ** POWER`` of it), and training goes on from there.
    """

    EVERY, START, BASE, POWER = 5, 0.3, 0.95, 3.0

    def __init__(self, model: nn.Module, total: int):
        self.model, self.total = model, total
        self.average: dict[str, torch.Tensor] | None = None

    def step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (counted from 1 over the whole run)."""
        if step % self.EVERY or step < self.START * self.total:
            return
        state = self.model.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}
            return
        keep = self.BASE**self.EVERY * (step / self.total) ** self.POWER
        with torch.no_grad():
            for k, avg in self.average.items():
                avg.lerp_(state[k], 1 - keep)
        self.settle()

    def settle(self) -> None:
        """Put the average into the model: after each averaging step, and at the end of an epoch (what is
        evaluated and saved)."""
        if self.average is not None:
            state = self.model.state_dict()
            with torch.no_grad():
                for k, avg in self.average.items():
                    state[k].copy_(avg)


def _train_step(model, optimizer, label_smoothing: float, device: torch.device, precision: str, compile_: bool):
    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    return torch.compile(step) if compile_ else step


def evaluate(
    model: nn.Module, split: datamod.Split, spec: datamod.DatasetSpec, config: TrainConfig, *,
    device: torch.device | None = None, precision: str | None = None,
) -> Evaluation:
    """Return the loss, accuracy and predictions of ``model`` on ``split`` (no augmentation but the config's
    test-time augmentation, ``tta``)."""
    device = device or resolve_device(config.device)
    precision = precision or resolve_precision(config.precision, device)
    split = split.to(device)
    mean, std = datamod.normalisation(spec, device)
    batches = datamod.Batches(split, config.eval_batch_size, mean, std,
                              channels_last=uses_channels_last(device, precision))
    model.eval()
    net = with_tta(model, config.tta)
    loss_sum = torch.zeros((), device=device)
    preds, confs = [], []
    with torch.no_grad(), _autocast(device, precision):
        for x, y in batches:
            logits = net(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            prob, pred = logits.softmax(1).max(1)
            preds.append(pred)
            confs.append(prob)
    predictions = torch.cat(preds)
    acc = (predictions == split.y).float().mean().item()
    return Evaluation(loss_sum.item() / len(split), acc, predictions.cpu(), torch.cat(confs).cpu())


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (tensors and plain values only) to ``path`` whole or not at all (a temp file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory, written by Python: on a full disk torch's own file writer says "unexpected pos 322752
    # vs 322644", or aborts the process; Python's says "No space left on device".
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # The view is released even when the write fails: held by the error's frames, it made Python 3.13 print
    # "Exception ignored in: <_io.BytesIO ...> BufferError" when the collector freed the buffer first.
    with buffer.getbuffer() as view:
        write_whole(path, view)


#: Settings a run may change when it resumes from a checkpoint: where and how it runs and is evaluated, not
#: what it trains.
RESUME_MAY_CHANGE = ("device", "precision", "compile", "eval_batch_size", "tta")


def check_resume(checkpoint: str | os.PathLike | None, config: TrainConfig) -> list[EpochMetrics]:
    """Return the metrics of the epochs ``checkpoint`` holds of the run ``config`` describes, which :func:`fit`
    resumes after (none where there is no checkpoint).

    Raises :class:`ConfigError` when it holds a run of other settings.
    """
    if checkpoint is None or not Path(checkpoint).exists():
        return []
    state = _run_state(checkpoint)
    _same_run(checkpoint, state, config)
    return [EpochMetrics(**m) for m in state.get("history", [])]


def _same_run(checkpoint: str | os.PathLike, state: dict, config: TrainConfig) -> None:
    saved, now = state.get("config"), config.params()
    if saved is None:  # written before checkpoints held their settings
        return
    changed = [k for k in dict.fromkeys([*saved, *now]) if k not in RESUME_MAY_CHANGE and saved.get(k) != now.get(k)]
    if changed:
        shown = ", ".join(f"{k} {saved.get(k, '-')} (now {now.get(k, '-')})" for k in changed[:4])
        raise ConfigError(f"{checkpoint} holds a run with other settings: {shown}",
                          hint="give the same settings to resume it, or another --checkpoint file to start afresh")


#: What to do with a file given as a checkpoint that is none of cnnbench's.
FOREIGN = "give another --checkpoint file: cnnbench leaves this one as it is"
#: What every checkpoint :func:`fit` writes holds.
CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "generator", "history", "best_epoch", "best_score", "since_best",
                   "best_model")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything but tensors and plain values.

    Raises :class:`ConfigError` for a file torch.save did not write (nothing in it is changed), and
    :class:`CheckpointError` for one that is damaged.
    """
    hint = "it is damaged or not a cnnbench checkpoint; delete it to start afresh"
    if Path(path).stat().st_size and not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise ConfigError(f"{path} is not a cnnbench checkpoint: not a file torch.save wrote", hint=FOREIGN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of a file it may then refuse
            state = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise CheckpointError(f"cannot load checkpoint {path}: it is empty or cut short", hint=hint) from None
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        detail = lines[0][:200]
        if detail.startswith("Weights only load failed"):  # torch's safe loader: its reason follows its advice
            reasons = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the doc"))]
            detail = f"it is not a file of tensors and plain values ({(reasons or ['refused'])[0][:200]})"
        raise CheckpointError(f"cannot load checkpoint {path}: {detail}", hint=hint) from None
    return state


def _run_state(path: str | os.PathLike) -> dict:
    """Read the checkpoint of a run :func:`fit` wrote; raise :class:`ConfigError` where it holds something else."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or (missing := [k for k in CHECKPOINT_KEYS if k not in state]):
        held = f"a dict without {listed(missing, most=3)}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ConfigError(f"{path} is not a cnnbench checkpoint: torch.save wrote {held} to it", hint=FOREIGN)
    return state


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="batch", leave=False, dynamic_ncols=True)


def _postfix(m: EpochMetrics) -> str:
    val = f" val_acc={m.val_acc:.4f}" if m.val_acc is not None else ""
    return f"epoch {m.epoch} loss={m.train_loss:.4f}{val}"


def copy_model(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` on the CPU in fp32 and the default memory format."""
    clone = copy.deepcopy(model).cpu().float()
    return clone.to(memory_format=torch.contiguous_format)
