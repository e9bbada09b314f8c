"""Any torchvision classifier by name (``tv:resnet18``), adapted to small inputs."""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from cnnbench.errors import DataError
from cnnbench.models.base import MODELS


@functools.cache
def _names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> Callable[..., nn.Module]:
    def build(
        *, in_channels: int, num_classes: int, input_size: tuple[int, int], pretrained: bool = False
    ) -> nn.Module:
        return _build(name, in_channels, num_classes, input_size, pretrained)

    build.__doc__ = f"torchvision's {name}, first conv adapted to the input"
    return build


#: Classifiers with auxiliary heads, whose outputs in training are tuples: built without them.
_AUX_LOGITS = ("googlenet", "inception_v3")


def _build(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int], pretrained: bool):
    import torchvision.models

    extra = {"aux_logits": False} if name in _AUX_LOGITS else {}
    if not pretrained:  # built with the dataset's classes: the head is the model's own
        model = _construct(name, weights=None, num_classes=num_classes, **extra)
        _adapt_stem(model, in_channels, small=min(input_size) < 64)
        return model
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = _construct(name, weights=weights, **extra)
    except (OSError, RuntimeError) as err:  # no network, or a bad cached file
        raise DataError(f"cannot fetch pretrained weights for tv:{name}: {err}",
                        hint="train without pretrained weights, or fill torch's hub cache first") from None
    _adapt_stem(model, in_channels, small=min(input_size) < 64)
    _replace_head(model, len(weights.meta["categories"]), num_classes)
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


def _replace_head(model: nn.Module, pretrained_classes: int, num_classes: int) -> None:
    """Swap the pretrained head (the last layer, in the model's order, with one output per pretrained class:
    a linear layer, or squeezenet's 1x1 conv) for a fresh one with ``num_classes`` outputs."""
    heads = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == pretrained_classes
             or isinstance(m, nn.Conv2d) and m.out_channels == pretrained_classes]
    if not heads:
        raise DataError(f"this torchvision model has no layer with {pretrained_classes} outputs to replace")
    name, head = heads[-1]
    parent_name, _, child_name = name.rpartition(".")
    if isinstance(head, nn.Linear):
        new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding,
                        bias=head.bias is not None)
    setattr(model.get_submodule(parent_name), child_name, new)


MODELS.add_namespace("tv", _resolve, _names, "any torchvision.models classifier, e.g. tv:resnet18 (pretrained=...)")
