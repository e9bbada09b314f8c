"""Datasets as whole uint8 tensors on the training device, batched and augmented there."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import pickle
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from cnnbench.errors import ConfigError, DataError, disk_full, listed
from cnnbench.paths import data_dir  # noqa: F401  (part of this module's API)
from cnnbench.paths import FOLDER, cache_dir, dataset_name, folder_parts, unwritable, write_whole
from cnnbench.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """What cnnbench knows of a dataset before loading it."""

    name: str
    summary: str
    torchvision_class: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    folder: str
    #: Whether a mirrored image still shows its class: a photo or a coat does, a digit does not.
    mirrors: bool = True
    #: The folder of a dataset of one's own images (``folder:PATH``, :func:`folder_spec`); ``None`` for the others.
    path: Path | None = None
    #: The share of each class a folder dataset without a test folder sets apart for testing; 0 for the others.
    test_share: float = 0.0

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: Registry[DatasetSpec] = Registry("dataset")
_DIGITS = tuple(str(i) for i in range(10))
# CIFAR-100's fine labels in the order of its `meta` file (`fine_label_names`): the names its predictions carry.
_CIFAR100 = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
DATASETS.add("mnist", DatasetSpec(
    "mnist", "MNIST handwritten digits, 1x28x28, 60k train / 10k test", "MNIST", (1, 28, 28), _DIGITS,
    (0.1307,), (0.3081,), "none", "MNIST", mirrors=False))
DATASETS.add("fashion_mnist", DatasetSpec(
    "fashion_mnist", "Fashion-MNIST clothing, 1x28x28, 60k train / 10k test", "FashionMNIST", (1, 28, 28),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    (0.2860,), (0.3530,), "none", "FashionMNIST"))
DATASETS.add("cifar10", DatasetSpec(
    "cifar10", "CIFAR-10 colour images, 3x32x32, 50k train / 10k test", "CIFAR10", (3, 32, 32),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "crop_flip", "cifar-10-batches-py"))
DATASETS.add("cifar100", DatasetSpec(
    "cifar100", "CIFAR-100 colour images, 3x32x32, 50k train / 10k test", "CIFAR100", (3, 32, 32),
    _CIFAR100,
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip", "cifar-100-python"))
#: What a folder of images is searched for (by suffix, in any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: PIL's modes whose pixels are shades of grey (alpha aside).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: How many training images, evenly spaced, a folder dataset's mean and std are measured on.
_STATS_SAMPLE = 512
#: The share of each class's images set apart for testing in a folder dataset without a test folder.
_TEST_SHARE = 0.2
_LAYOUT = "PATH/CLASS/IMAGE, or PATH/train/CLASS/IMAGE and PATH/test/CLASS/IMAGE"
#: The least and most pixels a side of a folder dataset's images may be given (``folder:PATH@WxH``).
_SIZES = (8, 1024)


def folder_spec(path: str) -> DatasetSpec:
    """The spec of ``folder:PATH`` (given ``PATH``), a dataset of one's own images: ``PATH/train/CLASS/*`` and
    ``PATH/test/CLASS/*`` (PNG, JPEG and the other :data:`IMAGE_SUFFIXES`), classes named by the training folders;
    or ``PATH/CLASS/*`` (or ``PATH/train/CLASS/*`` alone), of whose classes :func:`_set_apart` keeps a share for
    testing.

    Images are read as ``cnnbench predict`` reads them: grayscale if every one is, else RGB, resized to the size
    most training images have, or to the one ``PATH@W`` or ``PATH@WxH`` gives (:func:`cnnbench.paths.folder_parts`).
    The mean and std are measured on up to :data:`_STATS_SAMPLE` training images.
    Raises :class:`DataError` for a folder not so laid out, or a file that is no image, before any training.
    """
    return _folder_spec(dataset_name(FOLDER + path))


@functools.lru_cache(maxsize=8)
def _folder_spec(name: str) -> DatasetSpec:
    where, size = folder_parts(name)
    path = Path(where)
    if size and not _trainable(size):
        raise DataError(f"{name}: images of {size[0]}x{size[1]} pixels cannot be trained on",
                        hint=f"give a size from {_SIZES[0]} to {_SIZES[1]}: folder:{path}@64, say")
    train, test = _folder_files(path)
    classes = tuple(sorted({label for _, label in train}))
    # What reading every header and a sample of the images found, kept until a file is changed, added or removed.
    record = cache_dir() / "folders" / f"{path.name}-{_folder_digest(path)}{_size_tag(size)}.json"
    try:
        found = json.loads(record.read_text())
        (channels, h, w), mean, std, resized = found["shape"], tuple(found["mean"]), tuple(found["std"]), \
            int(found["resized"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: measured again
        (channels, h, w), mean, std, resized = _measure(path, train, test, size)
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            write_whole(record, json.dumps({"shape": [channels, h, w], "mean": mean, "std": std, "resized": resized}))
    need = (len(train) + len(test)) * channels * h * w  # bytes: the images stay in memory whole, as uint8
    if need > _memory() // 2:
        raise DataError(f"folder:{path}'s {len(train) + len(test):,} images take {need / 2**30:.1f} GiB at "
                        f"{w}x{h}, more than half of this machine's memory",
                        hint=f"give the size the nets should see: folder:{path}@64 reads them at 64x64")
    share = 0.0 if (path / "test").is_dir() else _TEST_SHARE
    summary = (f"your images in {path}, {channels}x{h}x{w}, {len(classes)} classes, "
               f"{len(train):,} train / {len(test):,} test"
               + (f" ({share:.0%} of each class set apart)" if share else "")
               + (f" ({resized:,} resized to {w}x{h})" if resized else ""))
    return DatasetSpec(name, summary, "", (channels, h, w), classes, mean, std, "none", path.name, path=path,
                       test_share=share)


def _trainable(size: tuple[int, int]) -> bool:
    """Whether images of ``size`` (W, H) can be trained on: each side :data:`_SIZES` allows."""
    return all(_SIZES[0] <= side <= _SIZES[1] for side in size)


def _size_tag(size: tuple[int, int] | None) -> str:
    """What tells a folder dataset's cache files at a size given (``folder:PATH@WxH``) from those at its own."""
    return f"-{size[0]}x{size[1]}" if size else ""


def _measure(path: Path, train: list[tuple[Path, str]], test: list[tuple[Path, str]],
             size: tuple[int, int] | None = None):
    """A folder dataset's shape (C, H, W) at ``size`` (W, H), else at the size most training images have; its
    per-channel mean and std; and how many of its images are resized. Raises :class:`DataError`, before any
    image is read whole, where no size is given and most images are too large or too small to train on."""
    headers = [image_header(file) for file, _ in train + test]
    sizes: dict[tuple[int, int], int] = {}
    for found, _ in headers[:len(train)]:
        sizes[found] = sizes.get(found, 0) + 1
    (w, h), channels = size or max(sizes, key=sizes.get), 1 if all(mode in _GRAY_MODES for _, mode in headers) else 3
    if not size and not _trainable((w, h)):
        too = "large" if max(w, h) > _SIZES[1] else "small"
        raise DataError(f"folder:{path}'s images are {w}x{h} pixels, too {too} to train on as they are",
                        hint=f"give the size the nets should see: folder:{path}@64 reads them at 64x64")
    sample = [file for file, _ in train[::math.ceil(len(train) / _STATS_SAMPLE)]]
    total, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    for start in range(0, len(sample), 64):  # 64 at a time: 512 images of 1024x1024 would take 13 GiB as floats
        pixels = read_images(sample[start:start + 64], channels, (h, w)).transpose(0, 1).reshape(channels, -1)
        pixels = pixels.double().div_(255)
        total, squares, count = total + pixels.sum(1), squares + pixels.square().sum(1), count + pixels.shape[1]
    mean = total / count
    variance = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_(min=0)
    std = tuple(round(max(v, 1e-3), 4) for v in variance.sqrt().tolist())
    return (channels, h, w), tuple(round(v, 4) for v in mean.tolist()), std, sum(f != (w, h) for f, _ in headers)


def _memory() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@functools.lru_cache(maxsize=8)
def _folder_digest(path: Path) -> str:
    """What identifies a folder dataset's files as they are now: their paths, sizes and times (:func:`_digest`)."""
    train, test = _folder_files(path)
    return _digest([file for file, _ in train + test], resolve=False)  # absolute paths already


@functools.lru_cache(maxsize=8)
def _folder_files(path: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The training and test images of a folder dataset with their class names, sorted by class, then path.

    Without a ``test/`` folder, a share of each class's images (:func:`_set_apart`) are its test images.
    """
    if not path.is_dir():
        raise DataError(f"folder:{path}: {'not a folder' if path.exists() else 'no such folder'}",
                        hint=f"give a folder laid out as {_LAYOUT}")
    train_root, test_root = _roots(path)
    train = _class_images(train_root)
    if test_root is None:
        train, test = _set_apart(train_root, train)
        if not test:
            raise DataError(f"folder:{path} has too few images per class to set any apart for testing",
                            hint=f"give each class {math.ceil(0.5 / _TEST_SHARE)} images or more, or lay it out with a "
                            "test/ folder: PATH/train/CLASS/IMAGE and PATH/test/CLASS/IMAGE")
    else:
        test = _class_images(test_root)
    known = {label for _, label in train}
    if len(known) < 2:
        raise DataError(f"folder:{train_root} has one class folder; a classifier needs two or more",
                        hint=f"lay it out as {_LAYOUT}")
    if unknown := sorted({label for _, label in test} - known):
        raise DataError(f"folder:{path}/test has classes its train/ folder lacks: {listed(unknown, most=5)}",
                        hint="give every test class its training images, or rename the folders to match")
    return train, test


def dataset_images(path: Path, trained_on: bool = False) -> dict[Path, tuple[str, str]]:
    """The images of the folder dataset at ``path``, each with its class and its part, ``train`` or ``test``, as
    ``folder:PATH`` reads them (:func:`_folder_files`); none where ``path`` is not so laid out.

    A folder holding ``train/`` and ``test/`` is always taken as a dataset, its folders saying each image's part
    and class whether or not it could be trained on as it is (a class folder empty, a test class unknown to
    train/); a folder of class folders alone only where ``trained_on`` (the one a model was trained on), as which
    of its images are for testing is then the share :func:`_set_apart` kept, not something the folder says.
    """
    parts = path / "train", path / "test"
    if all(part.is_dir() for part in parts):
        return {file: (cls.name, part.name) for part in parts for cls in _class_folders(part)
                for file in images_under(cls)}
    if not trained_on:
        return {}
    try:
        train, test = _folder_files(path)
    except (DataError, OSError):
        return {}
    return {file: (label, "train") for file, label in train} | {file: (label, "test") for file, label in test}


def _roots(path: Path) -> tuple[Path, Path | None]:
    """The folders holding a folder dataset's training and test class folders; ``None`` for the test folder
    where it has none (``PATH/CLASS/IMAGE``, or ``PATH/train/CLASS/IMAGE`` alone)."""
    train, test = path / "train", path / "test"
    if train.is_dir() or test.is_dir():
        for part in (train, test):
            # Images in train/ beside other class folders: a class of that name (CIFAR-100 has "train").
            if part.is_dir() and _scan(part)[0] and any(p.name not in ("train", "test") for p in _class_folders(path)):
                raise DataError(f"folder:{path} has a class folder named {part.name}/, which names a part of a "
                                f"dataset laid out as PATH/{part.name}/CLASS/IMAGE",
                                hint=f"rename it ({part.name}_, say): a class may have any other name")
            if not _class_folders(part) and (part is train or test.exists()):
                raise DataError(f"folder:{path} has no {part.name}/ folder with a folder of images per class",
                                hint=_layout_hint(path))
        return train, test if test.exists() else None
    if path.name in ("train", "test") and (path.parent / "train").is_dir() and (path.parent / "test").is_dir():
        raise DataError(f"folder:{path} is one part of a dataset",
                        hint=f"give the folder that holds train/ and test/: folder:{path.parent}")
    if not _class_folders(path):
        raise DataError(f"folder:{path} holds no folder of images per class", hint=_layout_hint(path))
    return path, None


def _class_folders(folder: Path) -> list[Path]:
    """The class folders in ``folder``, by name: every folder in it but :func:`_left_out` ones."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _left_out(p.name))


def _left_out(name: str) -> bool:
    """Whether a file or folder of that name is no part of a dataset: hidden ones (``.thumbs``, and the
    ``._name.png`` macOS writes beside copied images, left out as a shell's ``*`` leaves them), and the
    ``__MACOSX`` folder of a zip made on a Mac."""
    return name.startswith(".") or name == "__MACOSX"


def _class_images(root: Path) -> list[tuple[Path, str]]:
    """The images of ``root``'s class folders with their class names, sorted by class, then path."""
    files = []
    for cls in _class_folders(root):
        found = images_under(cls)
        if not found:
            raise DataError(f"{cls} holds no images", hint=f"put images ({', '.join(IMAGE_SUFFIXES)}) in it, "
                            "or remove it")
        files += [(f, cls.name) for f in found]
    return files


def images_under(folder: Path, seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """The image files in ``folder`` and in the folders within it, as torchvision's ImageFolder finds a class's:
    its own by name, then each inner folder's by its name. A folder reached twice through links is read once."""
    seen = set() if seen is None else seen
    st = folder.stat()
    if (st.st_dev, st.st_ino) in seen:
        return []
    seen.add((st.st_dev, st.st_ino))
    names, inner = _scan(folder)
    return [folder / name for name in names] + [file for name in inner for file in images_under(folder / name, seen)]


def _scan(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the image files directly in ``folder`` and of the folders in it, sorted, but for
    :func:`_left_out` ones."""
    with os.scandir(folder) as entries:  # a DirEntry knows whether it is a file without a stat of its own
        kept = [e for e in entries if not _left_out(e.name)]
        return (sorted(e.name for e in kept if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()),
                sorted(e.name for e in kept if e.is_dir()))


def _set_apart(root: Path, files: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """A folder dataset's images without a test folder, as training and test images: of each class, the
    :data:`_TEST_SHARE` (rounded) whose paths in ``root`` (``CLASS/NAME``) hash lowest are for testing.

    The split depends on the names alone: it is the same on every machine and wherever the folder is moved, and
    an image added to a class moves at most one other image of that class between the two.
    """
    by_class: dict[str, list[tuple[Path, str]]] = {}
    for item in files:
        by_class.setdefault(item[1], []).append(item)
    # Each file's path within root, as text (Path.relative_to takes 13 us a file). Measured on a path joined to
    # root, as the files' are: root "." joins as nothing ("." / "cat" is "cat"), "/" as itself.
    skip = len(str(root / "_")) - 1

    train, test = [], []
    for items in by_class.values():
        ranks = [hashlib.sha1(str(file)[skip:].replace(os.sep, "/").encode()).digest() for file, _ in items]
        held = set(sorted(range(len(items)), key=ranks.__getitem__)[:int(len(items) * _TEST_SHARE + 0.5)])
        train += [item for i, item in enumerate(items) if i not in held]
        test += [item for i, item in enumerate(items) if i in held]
    return train, test


def _layout_hint(path: Path) -> str:
    """How to mend a folder dataset without class folders where they belong: the likeliest mistakes first."""
    if path.name in ("train", "test"):
        return f"give the folder that holds train/ and test/: folder:{path.parent}"
    if _scan(path)[0]:  # one class's folder, or images not sorted into a folder per class
        if len(_class_folders(path.parent)) > 1:
            return f"give the folder that holds the class folders: folder:{path.parent}"
        return f"put each class's images in a folder named after the class: {path}/CLASS/IMAGE"
    return f"lay it out as {_LAYOUT}"


def _open(path: str | os.PathLike):
    """``PIL.Image.open(path)`` without PIL's warning, two lines on stderr, for an image of over 89 million pixels:
    one's own images are read on purpose, however large (twice that is still refused: DecompressionBombError)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """An image file's (width, height) once turned upright by its EXIF orientation, and its PIL mode, from its
    header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(path) as img:
            w, h = img.size
            return ((h, w) if img.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)), img.mode  # quarter turns
    except UnidentifiedImageError:
        raise DataError(f"not an image: {path}", hint="remove it, or replace it with the image it should be") \
            from None
    except Image.DecompressionBombError as err:
        raise DataError(f"image too large: {path}: {err}") from None
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err.strerror or err}") from None


def read_images(paths: Sequence[str | os.PathLike], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Read image files as one uint8 batch (N, ``channels``, H, W) of ``size`` (H, W).

    Any format PIL reads: each image is turned upright by its EXIF orientation, made 8-bit without transparency
    (:func:`_eight_bit`), converted to grayscale or RGB and resized bilinearly where its size differs. Raises
    :class:`DataError` naming a file that cannot be read or is not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    h, w = size
    batch = torch.empty(len(paths), channels, h, w, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with _open(path) as img:
                # A JPEG much larger than wanted is decoded at 1/2, 1/4 or 1/8 of its size, at least twice the size
                # wanted (as PIL's thumbnail does): a 4000x3000 photo of 5.7 MB read at 64x64 in 63 ms, not 218.
                img.draft(None, (2 * max(w, h), 2 * max(w, h)))
                img = _eight_bit(ImageOps.exif_transpose(img)).convert("L" if channels == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        except UnidentifiedImageError:
            raise DataError(f"not an image: {path}", hint="give PNG or JPEG files") from None
        except Image.DecompressionBombError as err:
            raise DataError(f"image too large: {path}: {err}") from None
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err.strerror or err}") from None
        batch[i] = pixels.view(h, w, channels).permute(2, 0, 1)
    return batch


def _eight_bit(img):
    """``img`` as 8-bit pixels without transparency, ready for PIL's conversion to grayscale or RGB.

    PIL's own conversion drops the alpha channel, which turns a drawing on a transparent canvas
    (black strokes, as a browser's canvas saves them) all black, and clips 16-bit grayscale to
    white. So an image with transparency is laid on white where its opaque pixels are dark, else on
    black, and 16-bit grayscale is scaled to 8 bits.
    """
    import numpy as np
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if "A" not in img.getbands() and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64)
    luma = np.asarray(rgba.convert("L"), dtype=np.float64)  # the colour alone: PIL ignores alpha here
    dark = (luma * alpha).sum() < 127.5 * alpha.sum()
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255) if dark else (0, 0, 0, 255)), rgba)


DATASETS.add_namespace(FOLDER.rstrip(":"), folder_spec, None,
                       f"your own images: folder:PATH (folder:PATH@64 at 64x64), laid out as {_LAYOUT}")


@dataclass
class Split:
    """Images (N, C, H, W) as uint8 and labels (N,) as int64, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Data:
    """A dataset ready for training: train, validation and test splits plus how to normalise them."""

    spec: DatasetSpec
    train: Split
    val: Split | None
    test: Split
    #: What identifies the images, their labels and class names (:func:`content_digest`), wherever they were read.
    digest: str = ""

    def to(self, device: torch.device | str) -> "Data":
        """Return the same data on ``device``."""
        return Data(self.spec, self.train.to(device), self.val.to(device) if self.val else None,
                    self.test.to(device), self.digest)

    def profile(self) -> dict[str, Any]:
        """How many images each split holds, their shape and the classes: what tells two datasets apart at a glance."""
        return {"train": len(self.train), "val": len(self.val) if self.val else 0, "test": len(self.test),
                "shape": list(self.spec.shape), "classes": len(self.spec.classes)}


def load(name: str, root: str | os.PathLike | None = None, *, val_fraction: float = 0.1, split_seed: int = 0,
         download: bool = True) -> Data:
    """Load dataset ``name`` from ``root`` (downloading it there when missing and ``download``).

    The training set is split into train and validation parts, the same way for the same
    ``val_fraction`` and ``split_seed``; the test set is kept apart.
    """
    spec = DATASETS.get(name)
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, test, digest = _load_tensors(spec.name, str(data_dir(root).resolve()), download)
    n_val = int(round(val_fraction * len(train)))
    if n_val >= len(train):
        raise DataError(f"val_fraction {val_fraction:g} of {spec.name}'s {len(train):,} training images leaves none "
                        "to train on", hint="give a smaller val_fraction, such as 0.1")
    if n_val == 0:
        return Data(spec, train, None, test, digest)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    return Data(spec, Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx]), test,
                digest)


@functools.lru_cache(maxsize=4)
def _load_tensors(name: str, root: str, download: bool) -> tuple[Split, Split, str]:
    spec = DATASETS.get(name)
    sources = _source_files(spec, Path(root))
    cached = _cache_path(spec, sources)
    if cached is not None and cached.exists():
        try:
            blob = torch.load(cached, weights_only=True)
            train, test = Split(blob["train_x"], blob["train_y"]), Split(blob["test_x"], blob["test_y"])
            digest = blob.get("digest")  # absent from a cache written before caches kept it
            return train, test, digest if isinstance(digest, str) else content_digest(spec, train, test)
        except Exception:  # a damaged cache is rebuilt from the source files
            cached.unlink(missing_ok=True)
    train, test = _read_files(spec, Path(root), download)
    digest = content_digest(spec, train, test)
    cached = _cache_path(spec, _source_files(spec, Path(root)))
    if cached is not None:
        _atomic_save({"train_x": train.x, "train_y": train.y, "test_x": test.x, "test_y": test.y, "digest": digest},
                     cached)
    return train, test, digest


def content_digest(spec: DatasetSpec, train: Split, test: Split) -> str:
    """What identifies a dataset as trained on: its images and labels as tensors, and its class names.

    The same on every machine and wherever the files lie (a folder dataset copied elsewhere keeps it), and another
    for an image added, removed, changed or moved to another class, or a class renamed: a study compares its
    trials only on one (:func:`cnnbench.sweep.open_study`).
    """
    digest = hashlib.sha1("\n".join(spec.classes).encode())
    for tensor in (train.x, train.y, test.x, test.y):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.cpu().contiguous().numpy().data)
    return digest.hexdigest()[:16]


def _source_files(spec: DatasetSpec, root: Path) -> list[Path]:
    if spec.path is not None:
        return [file for part in _folder_files(spec.path) for file, _ in part]
    if not _files_present(spec, root):
        return []
    if spec.folder.endswith("MNIST"):
        return [root / spec.folder / "raw" / n for pair in _IDX_FILES.values() for n in pair]
    return [root / spec.folder / n for files in _CIFAR_FILES[spec.name].values() for n in files]


def _cache_path(spec: DatasetSpec, sources: list[Path]) -> Path | None:
    if spec.path is not None:
        size = _size_tag(folder_parts(spec.name)[1])
        return cache_dir() / "tensors" / f"folder-{spec.folder}-{_folder_digest(spec.path)}{size}.pt"
    return cache_dir() / "tensors" / f"{spec.name}-{_digest(sources)}.pt" if sources else None


def _digest(files: list[Path], resolve: bool = True) -> str:
    """What tells ``files`` as they are now from how they were: each one's path, size, and the times of its last
    change. The inode's change time (``st_ctime``) as well as the modification time: a file replaced by one of the
    same size whose modification time is kept (``cp -p``, ``tar``, ``unzip``, ``touch -r``) has a new one."""
    digest = hashlib.sha1()
    for p in files:
        st = p.stat()
        digest.update(f"{p.resolve() if resolve else p}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode())
    return digest.hexdigest()[:16]


def _atomic_save(obj: object, path: Path) -> None:
    """Keep ``obj`` in the tensor cache, whole or not at all; a cache that cannot be written (a full disk) only
    costs the next run the time to read the dataset's files again."""
    buffer = io.BytesIO()  # torch's own file writer aborts the process on a full disk; Python's raises
    torch.save(obj, buffer)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with buffer.getbuffer() as view:  # released even when the write fails (see train.save_checkpoint)
            write_whole(path, view)


def _read_files(spec: DatasetSpec, root: Path, download: bool) -> tuple[Split, Split]:
    if spec.path is not None:
        index = {name: i for i, name in enumerate(spec.classes)}
        c, h, w = spec.shape
        return tuple(Split(read_images([f for f, _ in part], c, (h, w)),  # type: ignore[return-value]
                           torch.tensor([index[label] for _, label in part], dtype=torch.int64))
                     for part in _folder_files(spec.path))
    if not _files_present(spec, root):
        if not download:
            raise DataError(_absent(spec, root), hint=_offline_hint(spec))
        import torchvision.datasets

        absent = _absent(spec, root)
        if why := unwritable(root / spec.folder):  # torchvision's own error, after it tried the mirrors, said less
            raise DataError(f"{absent}, and it cannot be downloaded there: {why}",
                            hint=f"point --data-dir or CNNBENCH_DATA_DIR at a folder holding {spec.folder}/ in "
                            "torchvision's layout, or at one you can write")
        cls = getattr(torchvision.datasets, spec.torchvision_class)
        made = [p for p in (root / spec.folder / "raw", root / spec.folder, root, *root.parents) if not p.exists()]
        try:
            for train in (True, False):
                cls(root=str(root), train=train, download=True)
        except Exception as err:
            for folder in made:  # deepest first; a folder holding anything is kept
                with contextlib.suppress(OSError):
                    folder.rmdir()
            reason = textwrap.shorten(str(err), 160, placeholder=" ...")
            raise DataError(f"{absent}, and downloading it failed ({reason})",
                            hint=f"free some space in {root}, or point --data-dir or CNNBENCH_DATA_DIR at a folder "
                            f"holding {spec.folder}/ or with room for it" if disk_full(err)
                            else _offline_hint(spec)) from None
    reader = _read_idx_split if spec.folder.endswith("MNIST") else _read_cifar_split
    return _checked(spec, root, reader, True), _checked(spec, root, reader, False)


def _checked(spec: DatasetSpec, root: Path, reader: Callable[[DatasetSpec, Path, bool], Split], train: bool) -> Split:
    """Read one split, refusing files that are damaged or of another dataset, with how to mend them."""
    hint = (f"copy the official {spec.folder} files there again, or delete the damaged ones and cnnbench "
            "downloads the dataset afresh")
    try:
        split = reader(spec, root, train)
    except DataError as err:
        raise DataError(err.message, hint=hint) from None
    part = "training" if train else "test"
    folder = root / spec.folder
    if tuple(split.x.shape[1:]) != spec.shape:
        shape = "x".join(map(str, split.x.shape[1:]))
        raise DataError(f"{spec.name}'s {part} images in {folder} are {shape}, not "
                        f"{'x'.join(map(str, spec.shape))}", hint=hint)
    if len(split.x) != len(split.y):
        raise DataError(f"{spec.name}'s {part} files in {folder} hold {len(split.x)} images but {len(split.y)} labels",
                        hint=hint)
    if len(split.y) and not 0 <= int(split.y.min()) <= int(split.y.max()) < spec.num_classes:
        raise DataError(f"{spec.name}'s {part} labels in {folder} run from {int(split.y.min())} to "
                        f"{int(split.y.max())}, not 0 to {spec.num_classes - 1}", hint=hint)
    return split


def _offline_hint(spec: DatasetSpec) -> str:
    return (f"point --data-dir or CNNBENCH_DATA_DIR at a folder holding {spec.folder}/ "
            "in torchvision's layout, or connect to the internet")


_IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_FILES = {"cifar10": {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]},
                "cifar100": {True: ["train"], False: ["test"]}}


def _files_present(spec: DatasetSpec, root: Path) -> bool:
    return not _missing_files(spec, root)


def _missing_files(spec: DatasetSpec, root: Path) -> list[Path]:
    """The dataset's files in torchvision's layout under ``root`` that are not there."""
    if spec.folder.endswith("MNIST"):
        files = [root / spec.folder / "raw" / n for pair in _IDX_FILES.values() for n in pair]
    else:
        files = [root / spec.folder / n for names in _CIFAR_FILES[spec.name].values() for n in names]
    return [f for f in files if not f.is_file()]


def _absent(spec: DatasetSpec, root: Path) -> str:
    """How a dataset is missing from ``root``: wholly, or (a folder of it there) by which files."""
    if not (root / spec.folder).is_dir():
        return f"{spec.name} is not in {root}"
    missing = _missing_files(spec, root)
    folder = root / spec.folder
    return f"{spec.name} in {folder} lacks {listed([f.relative_to(folder) for f in missing], 3)}"


def _read_idx(path: Path) -> torch.Tensor:
    """Read an uncompressed IDX file (MNIST's format) into a uint8 tensor."""
    raw = path.read_bytes()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise DataError(f"{path} holds {len(body)} bytes of data, its header promises {math.prod(dims)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)


def _read_idx_split(spec: DatasetSpec, root: Path, train: bool) -> Split:
    images, labels = (root / spec.folder / "raw" / n for n in _IDX_FILES[train])
    x, y = _read_idx(images), _read_idx(labels)
    for path, array, ndim, what in ((images, x, 3, "images"), (labels, y, 1, "labels")):
        if array.dim() != ndim:
            raise DataError(f"{path} holds {array.dim()}-dimensional data ({'x'.join(map(str, array.shape))}), "
                            f"not {what}")
    return Split(x.unsqueeze(1).contiguous(), y.long())


class _CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR's pickled batches, refusing any global but the numpy array machinery they use."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_split(spec: DatasetSpec, root: Path, train: bool) -> Split:
    xs, ys = [], []
    for name in _CIFAR_FILES[spec.name][train]:
        path = root / spec.folder / name
        try:
            with open(path, "rb") as f:
                batch = _CifarUnpickler(f, encoding="bytes").load()
            x = torch.as_tensor(bytearray(bytes(batch[b"data"])) if isinstance(batch[b"data"], bytes)
                                else batch[b"data"]).view(-1, 3, 32, 32)
            labels = batch.get(b"labels", batch.get(b"fine_labels"))
            if labels is None:
                raise ValueError("it holds no labels")
            y = torch.as_tensor(labels, dtype=torch.int64)
        except Exception as err:  # pickle raises many kinds for a damaged file, not only UnpicklingError
            raise DataError(f"{path} is not a CIFAR batch file: {err}") from None
        xs.append(x.to(torch.uint8))
        ys.append(y)
    return Split(torch.cat(xs).contiguous(), torch.cat(ys))


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS: Registry[Augment] = Registry("augmentation")
#: The augmentations that mirror images.
MIRRORING = frozenset({"flip", "crop_flip", "crop2_flip"})


def _rand(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device).to(device)


@AUGMENTS.register("none")
def no_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """No augmentation."""
    return x


@AUGMENTS.register("flip")
def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flip of half the images."""
    mask = (_rand(len(x), gen, x.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


@AUGMENTS.register("crop")
def crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after reflect-padding by 4 pixels (random translation by up to 4)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = (_rand(n, gen, x.device) * (2 * pad + 1)).long()
    dx = (_rand(n, gen, x.device) * (2 * pad + 1)).long()
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None].expand(n, c, h, w + 2 * pad)
    padded = padded.gather(2, rows)
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :].expand(n, c, h, w)
    return padded.gather(3, cols)


@AUGMENTS.register("crop_flip")
def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel padding, then horizontal flip (the CIFAR-10 standard)."""
    return flip(crop(x, gen), gen)


@AUGMENTS.register("crop2_flip")
def crop2_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel padding, then horizontal flip: airbench's lighter translation, for short runs."""
    return flip(crop(x, gen, pad=2), gen)


def _affine(x: torch.Tensor, gen: torch.Generator, degrees: float, shift: float, zoom_p: float, zoom: float):
    n, _, h, w = x.shape
    angle = (_rand(n, gen, x.device) * 2 - 1) * math.radians(degrees)
    scale = torch.where(_rand(n, gen, x.device) < zoom_p, torch.full_like(angle, 1 / zoom), torch.ones_like(angle))
    tx = (_rand(n, gen, x.device) * 2 - 1) * shift
    ty = (_rand(n, gen, x.device) * 2 - 1) * shift
    cos, sin = (torch.cos(angle) * scale).view(n, 1, 1), (torch.sin(angle) * scale).view(n, 1, 1)
    # F.affine_grid's sampling grid (align_corners=False: pixel centres), built by broadcasting: its batched
    # matrix product took longer on the CPU than the training step's convolutions at batch 64.
    cols = ((torch.arange(w, device=x.device, dtype=torch.float32) * 2 + 1) / w - 1).view(1, 1, w)
    rows = ((torch.arange(h, device=x.device, dtype=torch.float32) * 2 + 1) / h - 1).view(1, h, 1)
    grid = torch.stack([cos * cols - sin * rows + tx.view(n, 1, 1), sin * cols + cos * rows + ty.view(n, 1, 1)], 3)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTS.register("rotate")
def rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation by up to 15 degrees, as seed 001 did."""
    return _affine(x, gen, degrees=15, shift=0.0, zoom_p=0.0, zoom=1.0)


@AUGMENTS.register("affine")
def affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (up to 10 degrees) and shift (up to 2 pixels of 28): light MNIST augmentation."""
    return _affine(x, gen, degrees=10, shift=2 / 14, zoom_p=0.0, zoom=1.0)


@AUGMENTS.register("seed001")
def seed001(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seed 001's recipe: a 22-pixel centre crop resized back to 28 for 10% of images, rotation up to 15 degrees."""
    return _affine(x, gen, degrees=15, shift=0.0, zoom_p=0.1, zoom=28 / 22)


@dataclass
class Batches:
    """Iterates a split in batches of normalised float images on the split's device.

    Shuffling uses ``generator``; augmentation, normalisation and the memory format are applied to
    whole batches, never to single images.
    """

    split: Split
    batch_size: int
    mean: torch.Tensor
    std: torch.Tensor
    shuffle: bool = False
    augment: Augment | None = None
    generator: torch.Generator | None = None
    drop_last: bool = False
    channels_last: bool = False

    def __len__(self) -> int:
        n = len(self.split)
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x_all, y_all = self.split.x, self.split.y
        n = len(y_all)
        order = (torch.randperm(n, generator=self.generator, device=self.generator.device).to(x_all.device)
                 if self.shuffle else None)
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is not None:
                idx = order[sl]
                x, y = x_all[idx], y_all[idx]
            else:
                x, y = x_all[sl], y_all[sl]
            x = x.float() / 255
            if self.augment is not None:  # before normalising: what a rotation or shift brings in is black
                x = self.augment(x, self.generator)
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def normalisation(spec: DatasetSpec, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the per-channel mean and std of ``spec`` as (1, C, 1, 1) tensors on ``device``."""
    shape = (1, len(spec.mean), 1, 1)
    return (torch.tensor(spec.mean, device=device).view(shape), torch.tensor(spec.std, device=device).view(shape))
