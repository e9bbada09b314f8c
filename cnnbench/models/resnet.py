"""Batch-normalised families with depth, width and kernel-size parameters."""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.base import MODELS, conv_bn, feature_shape


class BasicBlock(nn.Module):
    """Two conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, kernel_size, stride)
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(c_out)
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def _pooled_head(features: nn.Sequential, in_channels: int, input_size, num_classes: int, dropout: float):
    channels = feature_shape(features, in_channels, input_size)[0]
    return nn.Sequential(
        features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
    )


@MODELS.register("resnet")
def resnet(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 3, width: int = 32, depth: int = 1, stages: int = 3, dropout: float = 0.0,
) -> nn.Module:
    """ResNet-style net with BatchNorm: a stem, ``stages`` stages of ``depth`` residual blocks, width doubling."""
    layers: list[nn.Module] = [conv_bn(in_channels, width, kernel_size)]
    c = width
    for stage in range(stages):
        c_out = width * 2**stage
        for block in range(depth):
            layers.append(BasicBlock(c, c_out, kernel_size, stride=2 if stage > 0 and block == 0 else 1))
            c = c_out
    return _pooled_head(nn.Sequential(*layers), in_channels, input_size, num_classes, dropout)


@MODELS.register("vgg")
def vgg(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 3, width: int = 32, depth: int = 2, stages: int = 3, dropout: float = 0.0,
    pool_first: bool = False,
) -> nn.Module:
    """VGG-style net with BatchNorm: ``stages`` stages of ``depth`` conv-BN-ReLU layers and a max-pool.

    ``pool_first`` moves each stage's max-pool to right after its first conv, before its batch norm
    and ReLU (as airbench does): they, and the stage's later convs, work on a quarter of the values.
    """
    layers: list[nn.Module] = []
    c = in_channels
    for stage in range(stages):
        c_out = width * 2**stage
        for i in range(depth):
            layers.append(conv_bn(c, c_out, kernel_size, pool=pool_first and i == 0))
            c = c_out
        if not pool_first:
            layers.append(nn.MaxPool2d(2))
    return _pooled_head(nn.Sequential(*layers), in_channels, input_size, num_classes, dropout)


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _conv_group(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    pad = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=pad, bias=False), nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU(),
        nn.Conv2d(c_out, c_out, kernel_size, padding=pad, bias=False),
        nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU(),
    )


@MODELS.register("airbench")
def airbench(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int], kernel_size: int = 3, width: int = 64,
) -> nn.Module:
    """Fast net in the spirit of the CIFAR-10 speed records (airbench94): a 2x2 stem and 3 conv groups.

    Widths are ``width``, ``4*width``, ``4*width`` (64-256-256 by default); the logits are scaled by
    1/9 as in the original.
    """
    stem = 24 if width >= 24 else width
    features = nn.Sequential(
        nn.Conv2d(in_channels, stem, 2, bias=True), nn.GELU(),
        _conv_group(stem, width, kernel_size),
        _conv_group(width, 4 * width, kernel_size),
        _conv_group(4 * width, 4 * width, kernel_size),
    )
    channels = feature_shape(features, in_channels, input_size)[0]
    return nn.Sequential(
        features, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(channels, num_classes, bias=False), _Scale(1 / 9),
    )
