"""Any torchvision classifier by name (``tv:resnet18``), adapted to small inputs."""

from __future__ import annotations

import functools
from typing import Callable

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


def _build(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int], pretrained: bool):
    import torchvision.models

    try:
        model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (OSError, RuntimeError) as err:  # no network, or a bad cached file
        raise DataError(f"cannot fetch pretrained weights for tv:{name}: {err}",
                        hint="train without pretrained weights, or fill torch's hub cache first") from None
    _adapt_stem(model, in_channels, small=min(input_size) < 64)
    _replace_classifier(model, num_classes)
    return model


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


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Swap the last linear layer for one with ``num_classes`` outputs."""
    last = None
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                last = (parent, child_name, child)
    if last is None:
        raise DataError("this torchvision model has no linear classifier to replace")
    parent, child_name, child = last
    setattr(parent, child_name, nn.Linear(child.in_features, num_classes, bias=child.bias is not None))


MODELS.add_namespace("tv", _resolve, _names, "any torchvision.models classifier, e.g. tv:resnet18 (pretrained=...)")
