"""Shared fixtures: tiny datasets in the real on-disk formats, and every store under tmp_path."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

CLASSES = 10

# The tests train tiny nets, often in several processes at once: one thread each is faster than threads fighting
# over the cores (a test running two sweeps at once took 24 s against 44 s on two cores), and the commands a test
# starts inherit it. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests run in their own tmp_path; a data folder given relative to where pytest started must still resolve.
if os.environ.get("CNNBENCH_DATA_DIR"):
    os.environ["CNNBENCH_DATA_DIR"] = str(Path(os.environ["CNNBENCH_DATA_DIR"]).resolve())


def _patterns(n: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class decides where a bright square sits (and, in colour, which channel): easy to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, channels, size, size), dtype=np.uint8)
    cell = size // 4
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 4)
        images[i, label % channels, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 230
    return images, labels.astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, n_train: int = 400, n_test: int = 100, folder: str = "MNIST", size: int = 28) -> Path:
    """Write MNIST-format IDX files under ``root/folder/raw`` (of ``size``x``size`` images)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = _patterns(n, size, 1, seed)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return root


def write_cifar10(root: Path, per_batch: int = 80, n_test: int = 100) -> Path:
    """Write CIFAR-10 python-format pickled batches under ``root/cifar-10-batches-py``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = _patterns(n_test if name == "test_batch" else per_batch, 32, 3, 10 + i)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.reshape(len(x), -1), b"filenames": [f"{j}.png".encode() for j in range(len(x))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, f)
    return root


def write_folder(root: Path, classes=("ant", "bee", "cat"), n_train: int = 120, n_test: int = 30, size: int = 28,
                 channels: int = 1) -> Path:
    """Write a folder dataset of PNG files, ``root/{train,test}/CLASS/NNNN.png``, of the easy patterns."""
    from PIL import Image

    for part, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        x, y = _patterns(n * CLASSES // len(classes), size, channels, seed)
        keep = y < len(classes)
        for i, (image, label) in enumerate(zip(x[keep][:n], y[keep][:n])):
            folder = root / part / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data folder holding tiny MNIST, Fashion-MNIST and CIFAR-10 in torchvision's layout."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_mnist(root, folder="FashionMNIST")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def _bf16_measured(tmp_path_factory) -> Path:
    """A cache folder holding this CPU's bf16 speed, measured for the whole run as often as settles it
    (cnnbench.train)."""
    from cnnbench import train

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNBENCH_CACHE_DIR", str(cache))
        train.cpu_bf16_speedup.cache_clear()  # as if in a new process: it takes all the measurements
        train.cpu_bf16_speedup()
    return cache


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, _bf16_measured):
    """Keep caches, stores and the working directory of every test under its tmp_path; the bf16 measurement is
    copied in, so that the commands a test starts do not each measure it again."""
    from cnnbench import data

    monkeypatch.setenv("CNNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    if (_bf16_measured / "bf16").is_dir():
        shutil.copytree(_bf16_measured / "bf16", tmp_path / "cache" / "bf16")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    data._load_tensors.cache_clear()
    forget_folders()
    yield
    data._load_tensors.cache_clear()
    forget_folders()


def forget_folders() -> None:
    """Forget what this process listed and measured of folder datasets, as a new command starts."""
    from cnnbench import data

    for cached in (data._folder_spec, data._folder_files, data._folder_digest):
        cached.cache_clear()


@pytest.fixture
def real_data_dir() -> Path:
    """The real datasets, where CNNBENCH_DATA_DIR points at them (CI sets it)."""
    path = os.environ.get("CNNBENCH_REAL_DATA_DIR") or os.environ.get("CNNBENCH_DATA_DIR")
    if not path or not (Path(path) / "MNIST" / "raw").is_dir():
        pytest.skip("CNNBENCH_DATA_DIR does not point at the real datasets")
    return Path(path)
