"""The networks of the five seed projects, faithful by default and parameterised.

Each takes the seed's own values as defaults; ``width`` is the channel count of the first
convolution, and later layers keep the seed's ratios to it. Where a seed applied ReLU before
max-pooling, the nets pool first: ``relu(maxpool(x)) == maxpool(relu(x))`` exactly, and the ReLU
then runs on a quarter of the values.
"""

from __future__ import annotations

from torch import nn

from cnnbench.models.base import MODELS, flat_features


def _head(features: nn.Module, flat: int, *layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(features, nn.Flatten(), *layers)


@MODELS.register("example_net")
def example_net(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 3, width: int = 32, dropout: float = 0.25,
) -> nn.Module:
    """PyTorch's MNIST example net (seed 000): 2 convs, max-pool, dropout, 2 linear layers.

    ``dropout`` is the rate after the convolutions; the one before the last layer is twice it
    (0.25 and 0.5, as in the example).
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size), nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(dropout),
    )
    flat = flat_features(features, in_channels, input_size)
    return _head(features, flat, nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(min(2 * dropout, 0.9)),
                 nn.Linear(128, num_classes))


@MODELS.register("four_conv")
def four_conv(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int], kernel_size: int = 3, width: int = 32,
) -> nn.Module:
    """Seed 001's net: 4 unpadded convs (32-64-128-256), 2 max-pools, a 50-unit hidden layer."""
    w = width
    features = nn.Sequential(
        nn.Conv2d(in_channels, w, kernel_size), nn.ReLU(),
        nn.Conv2d(w, 2 * w, kernel_size), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, kernel_size), nn.ReLU(),
        nn.Conv2d(4 * w, 8 * w, kernel_size), nn.MaxPool2d(2), nn.ReLU(),
    )
    flat = flat_features(features, in_channels, input_size)
    return _head(features, flat, nn.Linear(flat, 50, bias=False), nn.ReLU(), nn.Linear(50, num_classes, bias=False))


@MODELS.register("lenet_dropout")
def lenet_dropout(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 5, width: int = 10, dropout: float = 0.5,
) -> nn.Module:
    """Seed 002's LeNet-style net: 2 convs (10-20) with channel dropout, a 50-unit hidden layer.

    The seed applied a softmax to its output before ``CrossEntropyLoss`` (a double softmax that
    only slows learning); this net returns logits like every other one.
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU(),
    )
    flat = flat_features(features, in_channels, input_size)
    return _head(features, flat, nn.Linear(flat, 50), nn.ReLU(), nn.Dropout(dropout), nn.Linear(50, num_classes))


@MODELS.register("cifar_simple")
def cifar_simple(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 3, width: int = 16, dropout: float = 0.25,
) -> nn.Module:
    """Seed 003's CIFAR-10 net: 2 padded convs (16-32) each with a max-pool, a 512-unit hidden layer."""
    pad = kernel_size // 2
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size, padding=pad), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size, padding=pad), nn.MaxPool2d(2), nn.ReLU(),
    )
    flat = flat_features(features, in_channels, input_size)
    return _head(features, flat, nn.Dropout(dropout), nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(dropout),
                 nn.Linear(512, num_classes))


@MODELS.register("two_conv")
def two_conv(
    *, in_channels: int, num_classes: int, input_size: tuple[int, int],
    kernel_size: int = 3, width: int = 32, hidden: int = 128,
) -> nn.Module:
    """Seed 004's net: a padded and an unpadded conv (32-64), each with a max-pool, 128 hidden units.

    The seed's text sizes the first linear layer as ``64*12*12``, which does not fit its own
    layers (a 28x28 image leaves a 64x6x6 map); this net computes the size from its layers.
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size), nn.MaxPool2d(2), nn.ReLU(),
    )
    flat = flat_features(features, in_channels, input_size)
    return _head(features, flat, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
