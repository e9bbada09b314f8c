"""The seed projects' way of training, the baseline cnnbench's trainer is measured against.

Each net is written as its seed wrote it (ReLU before max-pool, seed 002's softmax output); the
loop is the usual torchvision dataset, per-image transforms, ``DataLoader`` and fp32 steps. With
``augment``, the training images also go through seed 001's per-image augmentation (PIL crop,
resize and rotation), as that project fed them.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler
from torchvision import datasets
from torchvision.transforms import CenterCrop, Compose, Normalize, RandomApply, RandomRotation, Resize, ToTensor


class Seed002Net(nn.Module):
    """Seed 002's LeNet-style net, softmax output included."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.softmax(self.fc2(x), dim=1)


class Seed003Net(nn.Module):
    """Seed 003's CIFAR-10 net: two padded convs, each with ReLU and a max-pool, dropout, 512 hidden units."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(32 * 8 * 8, 512)
        self.fc2 = nn.Linear(512, 10)
        self.dropout = nn.Dropout(0.25)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.dropout(x.view(-1, 32 * 8 * 8))
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class Seed004Net(nn.Module):
    """Seed 004's net. Its README sizes fc1 as 64*12*12, which its layers cannot feed; 64*6*6 = 2304 runs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(64 * 6 * 6, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.view(-1, 64 * 6 * 6)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


@dataclass(frozen=True)
class Recipe:
    """How one seed project fed and held out its data.

    ``normalize`` is the mean (and std) of its ``Normalize`` transform, None for ``ToTensor`` alone;
    ``val_fraction`` is the share of the training set it held out; ``size`` the images' side in pixels.
    """

    net: Callable[[], nn.Module]
    dataset: str
    normalize: tuple[float, ...] | None
    val_fraction: float = 0.0
    size: int = 28


RECIPES = {
    "seed002": Recipe(Seed002Net, "MNIST", None),
    "seed003": Recipe(Seed003Net, "CIFAR10", (0.5, 0.5, 0.5), val_fraction=0.2, size=32),
    "seed004": Recipe(Seed004Net, "MNIST", (0.5,)),
}


def seed001_augmentation(size: int) -> list:
    """Return seed 001's per-image training transforms for ``size``-pixel images (PIL in, PIL out).

    For one image in ten a centre crop (22 pixels of 28, the same share of other sizes) resized back, then for
    every image a rotation by up to 15 degrees either way, the corners filled black. cnnbench's ``seed001``
    augmentation does the same to whole batches, interpolating bilinearly where this rotation takes the nearest
    pixel.
    """
    return [RandomApply([CenterCrop(round(size * 22 / 28))], p=0.1), Resize((size, size)),
            RandomRotation((-15.0, 15.0), fill=0)]


#: The seeds loaded data in the main process; on a two-core machine a worker would take a compute core.
NUM_WORKERS = 0


class SeedLoop:
    """A seed project's training: torchvision dataset, ``DataLoader``, fp32 Adam steps, one epoch at a time."""

    def __init__(self, recipe: Recipe, root: Path, *, batch_size: int, lr: float, seed: int, augment: bool = False):
        steps = [ToTensor()] + ([Normalize(recipe.normalize, recipe.normalize)] if recipe.normalize else [])
        cls = getattr(datasets, recipe.dataset)
        augmentation = seed001_augmentation(recipe.size) if augment else []
        train = cls(str(root), train=True, download=False, transform=Compose(augmentation + steps))
        self.test = cls(str(root), train=False, download=False, transform=Compose(steps))
        torch.manual_seed(seed)
        order = torch.randperm(len(train)).tolist()
        keep = order[int(recipe.val_fraction * len(train)):]
        sampler = SubsetRandomSampler(keep) if recipe.val_fraction else None
        self.loader = DataLoader(train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                 num_workers=NUM_WORKERS)
        self.model = recipe.net()
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def epoch(self) -> tuple[int, float]:
        """Train one epoch; return the images it saw and the seconds it took."""
        self.model.train()
        seen, running_loss = 0, 0.0
        start = time.perf_counter()
        for images, labels in self.loader:
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
            running_loss += loss.item()
            seen += len(labels)
        return seen, time.perf_counter() - start

    def test_accuracy(self) -> float:
        """Return the accuracy (a fraction) of the model on the test set."""
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(self.test, batch_size=1000, num_workers=NUM_WORKERS):
                correct += (self.model(images).argmax(1) == labels).sum().item()
        return correct / len(self.test)


class SeedProcess:
    """A :class:`SeedLoop` in a process of its own, as the seed project ran: a plain Python process.

    cnnbench tunes its process (malloc, threads, denormals); the seed's loop must not profit from that, unless
    ``flush_denormals`` asks for that one setting (``benchmarks/denormals.py``).
    Each call runs in the child and waits for it, so the two ways never overlap; nor does the child's start-up
    (importing torch, reading the dataset), which the constructor waits for.
    """

    def __init__(self, preset: str, root: Path, *, batch_size: int, lr: float, seed: int, threads: int,
                 augment: bool = False, flush_denormals: bool = False):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, daemon=True, args=(child, preset, str(root), batch_size, lr, seed,
                                                                   threads, augment, flush_denormals))
        self._proc.start()
        self._receive()  # the child is ready: its start-up is not timed against the trainer's first epoch

    def _call(self, what: str):
        self._conn.send(what)
        return self._receive()

    def _receive(self):
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"seed loop failed: {value}")
        return value

    def epoch(self) -> tuple[int, float]:
        """Train one epoch in the child; return the images it saw and the seconds it took."""
        return self._call("epoch")

    def test_accuracy(self) -> float:
        """Return the child's model's test accuracy (a fraction)."""
        return self._call("test")

    def close(self) -> None:
        """Stop the child."""
        self._conn.send("stop")
        self._proc.join(timeout=30)


def _serve(conn, preset: str, root: str, batch_size: int, lr: float, seed: int, threads: int, augment: bool,
           flush_denormals: bool) -> None:
    if flush_denormals:  # before torch starts its threads, as cnnbench's commands do
        torch.set_flush_denormal(True)
    torch.set_num_threads(threads)
    try:
        loop = SeedLoop(RECIPES[preset], Path(root), batch_size=batch_size, lr=lr, seed=seed, augment=augment)
    except Exception as err:  # reported to the parent, which raises
        conn.send((False, repr(err)))
        return
    conn.send((True, None))
    while (what := conn.recv()) != "stop":
        try:
            conn.send((True, loop.epoch() if what == "epoch" else loop.test_accuracy()))
        except Exception as err:  # reported to the parent, which raises
            conn.send((False, repr(err)))
