"""The model registry and the helpers every architecture shares."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Callable

import torch
from torch import nn

from cnnbench.errors import ConfigError, ShapeError
from cnnbench.registry import Registry

#: Builders take keyword-only ``in_channels``, ``num_classes``, ``input_size`` (H, W) and their own
#: hyper-parameters, and return an ``nn.Module`` that maps (N, C, H, W) images to (N, classes) logits.
MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")

COMMON = ("in_channels", "num_classes", "input_size")


def feature_shape(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> torch.Size:
    """Return the shape (C, H, W) that ``features`` makes of one image: on the meta device where it is built there
    (no memory, no compute), else from one image of zeros, in eval mode (no batch statistics change).

    Raises :class:`ShapeError` when a layer cannot take the map it gets (a kernel larger than it, say).
    """
    # Not a copy on the meta device: the first operation there imports torch._dynamo, a second of a `cnnbench
    # predict` that otherwise never needs it.
    device = "meta" if _on_meta(features) else next(features.parameters()).device
    probe = torch.zeros(1, in_channels, *input_size, device=device)
    modes = {m: m.training for m in features.modules()}
    try:
        with torch.no_grad():
            out = features.eval()(probe)
    except RuntimeError as err:
        raise ShapeError(
            f"the layers cannot take a {in_channels}x{input_size[0]}x{input_size[1]} input: "
            f"{str(err).splitlines()[0]}",
            hint="use a smaller kernel_size or an architecture with fewer poolings",
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training
    if any(d <= 0 for d in out.shape):
        raise ShapeError(f"the feature map shrinks to {tuple(out.shape[1:])}", hint="use a smaller kernel_size")
    return out.shape[1:]


def _on_meta(module: nn.Module) -> bool:
    return all(t.is_meta for t in module.parameters())


def flat_features(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> int:
    """Return how many values ``features`` makes of one image once flattened."""
    shape = feature_shape(features, in_channels, input_size)
    return int(torch.Size(shape).numel())


def arch_params(name: str) -> dict[str, inspect.Parameter]:
    """Return the hyper-parameters (beyond the common ones) that architecture ``name`` takes."""
    builder = MODELS.get(name)
    params = getattr(builder, "params", None)
    if params is None:
        params = {
            k: p for k, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY and k not in COMMON
        }
    return params


def create_model(
    name: str, *, in_channels: int, num_classes: int, input_size: int | tuple[int, int], **hparams
) -> nn.Module:
    """Build architecture ``name`` for the given input and classes; ``None`` hyper-parameters mean the default.

    Raises :class:`ConfigError` for a hyper-parameter the architecture does not take and
    :class:`ShapeError` for one that cannot work with the input size.
    """
    builder = MODELS.get(name)
    given = {k: v for k, v in hparams.items() if v is not None}
    accepted = arch_params(name)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no hyper-parameters"
        raise ConfigError(
            f"architecture {name!r} does not take {', '.join(unknown)} (it takes {takes})",
            hint=f"drop {', '.join(unknown)} or pick an architecture that has it",
        )
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    for key, value in given.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "dropout" and value <= 0:
            raise ConfigError(f"{key} must be positive for {name!r}, got {value}")
    return builder(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size), **given)


@functools.lru_cache(maxsize=512)  # a sweep checks the same few shapes again and again
def check_model(name: str, *, in_channels: int, num_classes: int, input_size: tuple[int, int], **hparams) -> int:
    """Build ``name``, run one forward pass of two images of zeros, and return its parameter count.

    cnnbench's own nets (a few million parameters at most) are built on the CPU, in eval mode, with the random
    state put back after (so a check never changes a seeded run): 3-50 ms each. On the meta device, where
    torchvision's nets are built (some hold hundreds of MB), the first operation imports ``torch._dynamo``: 1.4-1.8 s
    before a sweep's file is found good or bad (training imports it anyway, with the optimizer). Raises the same
    errors as :func:`create_model`.
    """
    device = "meta" if name.startswith("tv:") else "cpu"
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            model = create_model(name, in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                                 **hparams)
    except RuntimeError as err:  # its weights alone more than this machine's memory: width 100000, say
        if "allocate" not in str(err):
            raise
        given = ", ".join(f"{k} {v}" for k, v in hparams.items() if v is not None)
        asked = re.search(r"allocate (\d+) bytes", str(err))
        raise ConfigError(f"architecture {name!r}{f' ({given})' if given else ''} is too large to build in this "
                          "machine's memory" + (f": one of its tensors alone takes {int(asked[1]) / 2**30:,.1f} GiB"
                                                if asked else ""),
                          hint="use a smaller width or another architecture") from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, in_channels, *input_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as err:  # torchvision's ViTs assert their input size
        smaller_kernel = "a smaller kernel_size, " if "kernel_size" in arch_params(name) else ""
        raise ShapeError(
            f"architecture {name!r} cannot take a {in_channels}x{input_size[0]}x{input_size[1]} input: "
            f"{(str(err).splitlines() or [type(err).__name__])[0]}",
            hint=f"use {smaller_kernel}another architecture, or a larger input",
        ) from None
    if tuple(out.shape) != (2, num_classes):
        raise ShapeError(f"architecture {name!r} gives outputs of shape {tuple(out.shape)}, not (N, {num_classes})")
    return sum(p.numel() for p in model.parameters())


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, pool: bool = False) -> nn.Sequential:
    """Return a conv (padded to keep the size), batch norm and ReLU.

    With ``pool``, a 2x2 max-pool comes right after the conv, so that batch norm and ReLU (memory-bound,
    and on a CPU often as slow as a small conv) work on a quarter of the values.
    """
    conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, *([nn.MaxPool2d(2)] if pool else []), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TestTimeAugmented(nn.Module):
    """``net`` run on several views of each image, its logits averaged (test-time augmentation).

    ``flip``: the image and its mirror image. ``flip_shift``: also both of them shifted by a pixel up-left and
    down-right (reflect-padded), weighted as airbench's level 2: half on the unshifted pair.
    """

    __test__ = False  # not a pytest class

    def __init__(self, net: nn.Module, tta: str):
        super().__init__()
        if tta not in ("flip", "flip_shift"):
            raise ConfigError(f"unknown test-time augmentation {tta!r}", hint="use none, flip or flip_shift")
        self.net, self.tta = net, tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._mirrored(x)
        if self.tta == "flip":
            return logits
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        views = [padded[:, :, :-2, :-2].contiguous(memory_format=fmt), padded[:, :, 2:, 2:].contiguous(memory_format=fmt)]
        return 0.5 * logits + 0.25 * (self._mirrored(views[0]) + self._mirrored(views[1]))

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.net(x).float() + 0.5 * self.net(x.flip(3)).float()


def with_tta(net: nn.Module, tta: str) -> nn.Module:
    """Return ``net`` evaluated with test-time augmentation ``tta`` (``none``: ``net`` itself)."""
    return net if tta == "none" else TestTimeAugmented(net, tta).train(net.training)
