"""Any torchvision classifier by name (``tv:resnet18``), adapted to small inputs and trained from scratch.

No pretrained weights: nothing could ask for them (a training setting reaches an architecture only as one of
``cnnbench.config.ARCH_FIELDS``), and on these datasets' 28- and 32-pixel images the first conv of most of
them (every one with a strided stem, and all of them on grayscale) is replaced (see :func:`_adapt_stem`).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from cnnbench.models.base import MODELS


@functools.cache
def _names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> Callable[..., nn.Module]:
    def build(*, in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        return _build(name, in_channels, num_classes, input_size)

    build.__doc__ = f"torchvision's {name}, first conv adapted to the input"
    return build


#: Classifiers with auxiliary heads, whose outputs in training are tuples: built without them, and with
#: ``init_weights`` given as the default it is (left out, torchvision warns that the default will change).
_AUX_LOGITS = ("googlenet", "inception_v3")


def _build(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    extra = {"aux_logits": False, "init_weights": True} if name in _AUX_LOGITS else {}
    model = _construct(name, weights=None, num_classes=num_classes, **extra)  # the head is the model's own
    _adapt_stem(model, in_channels, small=min(input_size) < 64)
    return model


def _construct(name: str, **kwargs) -> nn.Module:
    import torchvision.models

    try:
        return torchvision.models.get_model(name, **kwargs)
    except NotImplementedError:
        # The regnets work out their widths with tensors, which cannot be read on the meta device that
        # `check_model` builds on: build on the CPU, then move there.
        if torch.get_default_device().type != "meta":
            raise
        with torch.device("cpu"):
            return torchvision.models.get_model(name, **kwargs).to("meta")


def _adapt_stem(model: nn.Module, in_channels: int, small: bool) -> None:
    """Give the first conv ``in_channels`` inputs; for small images make it 3x3, stride 1 and drop the stem pool."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                kernel, stride, padding = child.kernel_size, child.stride, child.padding
                if small and child.stride != (1, 1):
                    kernel, stride, padding = (3, 3), (1, 1), (1, 1)
                if kernel != child.kernel_size or child.in_channels != in_channels or stride != child.stride:
                    setattr(parent, child_name, nn.Conv2d(in_channels, child.out_channels, kernel, stride,
                                                          padding, bias=child.bias is not None))
                if small and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
                    model.maxpool = nn.Identity()
                return


MODELS.add_namespace("tv", _resolve, _names, "any torchvision.models classifier, e.g. tv:resnet18 (from scratch)")
