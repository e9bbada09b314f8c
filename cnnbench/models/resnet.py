"""Batch-normalised families with depth, width and kernel-size parameters."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
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


class PatchWhitening(nn.Conv2d):
    """A frozen, unpadded conv whose filters whiten the input's ``kernel_size`` patches: airbench's first layer.

    It makes ``2 * in_channels * kernel_size**2`` channels, each patch's coordinates along the principal axes of
    the training images' patches, scaled to unit variance, and their negatives. The filters come from data
    (:meth:`init_from_data`, which the trainer calls before the first epoch); only the bias learns.
    """

    def __init__(self, in_channels: int, kernel_size: int = 2, eps: float = 5e-4):
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the filters from normalised training ``images`` (N, C, H, W), and the bias to zero."""
        kh, kw = self.kernel_size
        c = images.shape[1]
        patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        cov = (flat.T @ flat).cpu().double() / len(flat)  # a small matrix; MPS has no float64 or eigh
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / (eigenvalues + self.eps).sqrt()[:, None]).flip(0).reshape(-1, c, kh, kw)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))
        self.bias.zero_()


class ShiftNorm(nn.BatchNorm2d):
    """Batch norm with a learned shift but no learned scale, the shift learning ``lr_scale`` times faster.

    The shift is kept divided by ``sqrt(lr_scale)`` and multiplied back in the forward pass: under SGD that is
    the same as a ``lr_scale`` times larger learning rate for it (airbench's 64x for its BatchNorm biases) with
    the same weight decay as every other weight, without a parameter group of its own. Adam-style optimizers,
    which divide out the gradient's scale, see ``sqrt(lr_scale)`` instead.
    """

    def __init__(self, num_features: int, lr_scale: float = 64.0, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.root = math.sqrt(lr_scale)
        self.shift = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.shift * self.root,
                            self.training, self.momentum, self.eps)


def _conv(c_in: int, c_out: int, kernel_size: int, dirac: bool) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
    if dirac:  # the first c_in filters start as the identity: an implicit shortcut at the start of training
        with torch.no_grad():
            nn.init.dirac_(conv.weight[:c_in])
    return conv


def _conv_group(c_in: int, c_out: int, kernel_size: int, full: bool = False) -> nn.Sequential:
    norm = ShiftNorm if full else functools.partial(nn.BatchNorm2d, momentum=0.4)
    return nn.Sequential(
        _conv(c_in, c_out, kernel_size, full), nn.MaxPool2d(2), norm(c_out), nn.GELU(),
        _conv(c_out, c_out, kernel_size, full), norm(c_out), nn.GELU(),
    )


def _airbench_net(stem: nn.Module, stem_channels: int, in_channels: int, num_classes: int,
                  input_size: tuple[int, int], kernel_size: int, width: int, full: bool) -> nn.Module:
    features = nn.Sequential(
        stem, nn.GELU(),
        _conv_group(stem_channels, width, kernel_size, full),
        _conv_group(width, 4 * width, kernel_size, full),
        _conv_group(4 * width, 4 * width, kernel_size, full),
    )
    channels = feature_shape(features, in_channels, input_size)[0]
    return nn.Sequential(
        features, nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(channels, num_classes, bias=False), _Scale(1 / 9),
    )


@MODELS.register("airbench")
def airbench(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int], kernel_size: int = 3, width: int = 64,
) -> nn.Module:
    """Fast net in the spirit of the CIFAR-10 speed records (airbench94): a 2x2 stem and 3 conv groups.

    Widths are ``width``, ``4*width``, ``4*width`` (64-256-256 by default); the logits are scaled by
    1/9 as in the original. ``airbench94`` adds the original's initialisation and normalisation.
    """
    stem = 24 if width >= 24 else width
    return _airbench_net(nn.Conv2d(in_channels, stem, 2, bias=True), stem, in_channels, num_classes, input_size,
                         kernel_size, width, full=False)


@MODELS.register("airbench94")
def airbench94(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int], kernel_size: int = 3, width: int = 64,
) -> nn.Module:
    """airbench94's net whole: airbench with whitened 2x2 patches, identity init and fast batch-norm shifts.

    The first layer is frozen patch whitening set from the training images (:class:`PatchWhitening`), the convs
    start as identities in their first filters, and the batch norms have no scale and a shift that learns 64x
    faster under SGD (:class:`ShiftNorm`).

    Widths are ``width``, ``4*width``, ``4*width`` (64-256-256 by default).
    """
    stem = PatchWhitening(in_channels, 2)
    return _airbench_net(stem, stem.out_channels, in_channels, num_classes, input_size, kernel_size, width,
                         full=True)
