import math
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnbench import data
from cnnbench.errors import DataError
from conftest import write_mnist


def test_mnist_and_cifar_load_as_uint8_tensors(tiny_data):
    mnist = data.load("mnist", tiny_data, val_fraction=0.25)
    assert mnist.train.x.dtype == torch.uint8 and mnist.train.x.shape[1:] == (1, 28, 28)
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (300, 100, 100)
    cifar = data.load("cifar10", tiny_data, val_fraction=0.0)
    assert cifar.val is None
    assert cifar.train.x.shape == (400, 3, 32, 32) and cifar.test.x.shape == (100, 3, 32, 32)
    assert set(cifar.train.y.tolist()) == set(range(10))


def test_every_dataset_names_its_classes():
    # Predictions, exports and the figures of right and wrong predictions carry these names.
    for name in data.DATASETS:  # the registered ones; folder:PATH names its classes by its folders
        classes = data.DATASETS.get(name).classes
        assert len(set(classes)) == len(classes) and all(c and not c.startswith("class_") for c in classes), name
    fine = data.DATASETS.get("cifar100").classes
    assert len(fine) == 100 and list(fine) == sorted(fine)
    assert (fine[0], fine[39], fine[99]) == ("apple", "keyboard", "worm")


def test_cifar_pixels_are_read_in_channel_planes(tmp_path):
    from conftest import write_cifar10

    write_cifar10(tmp_path, per_batch=10, n_test=10)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    loaded = data.load("cifar10", tmp_path, val_fraction=0.0)
    first = torch.as_tensor(raw[b"data"][0]).view(3, 32, 32)
    assert torch.equal(loaded.train.x[0], first)
    assert loaded.train.y[0].item() == raw[b"labels"][0]


def test_split_is_deterministic_and_disjoint(tiny_data):
    a = data.load("mnist", tiny_data, val_fraction=0.2, split_seed=3)
    b = data.load("mnist", tiny_data, val_fraction=0.2, split_seed=3)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    flat = lambda s: {bytes(x.numpy().tobytes()) for x in s.x}  # noqa: E731
    assert not flat(a.train) & flat(a.val)


def test_loaded_tensors_are_cached_on_disk(tiny_data, tmp_path):
    data.load("mnist", tiny_data)
    cached = list((tmp_path / "cache" / "tensors").glob("mnist-*.pt"))
    assert len(cached) == 1
    data._load_tensors.cache_clear()
    again = data.load("mnist", tiny_data, val_fraction=0.0)
    assert len(again.train) == 400


def test_missing_dataset_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="CNNBENCH_DATA_DIR"):
        data.load("cifar10", tmp_path / "empty", download=False)


def test_a_data_variable_naming_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cnnbench.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a folder")
    monkeypatch.setenv("CNNBENCH_DATA_DIR", str(tmp_path / "notes.txt"))
    # Settings that warn (a mirrored digit, baselines that take the only trial) warn only once the data is found.
    for args in (["train", "mnist", "--epochs", "1"], ["train", "mnist", "--tta", "flip"], ["sweep", "mnist"],
                 ["sweep", "mnist", "--trials", "1"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        assert res.output.startswith(f"error: CNNBENCH_DATA_DIR: {tmp_path / 'notes.txt'} is a file, not a folder\n")
    assert not {"cnnbench-journal.log", "mlflow.db", "mlruns"} & {p.name for p in tmp_path.iterdir()}  # no study, no store


def test_a_missing_dataset_is_downloaded_through_torchvision_into_the_data_folder(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeMNIST:  # what torchvision's MNIST(download=True) leaves on disk, without the network
        def __init__(self, root, train, download):
            assert download
            write_mnist(Path(root), n_train=20, n_test=10)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    loaded = data.load("mnist", tmp_path / "new", val_fraction=0.0)
    assert (len(loaded.train), len(loaded.test)) == (20, 10)


def test_a_failed_download_is_one_line_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train, download):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example.org/mnist/, got:\n"
                               + "<urlopen error [Errno -2] Name or service not known> " * 5)

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path / "new" / "deeper")
    assert "downloading it failed" in info.value.message and "\n" not in info.value.message
    assert info.value.message.endswith("...)")
    assert not (tmp_path / "new").exists()


def test_a_download_into_a_folder_that_cannot_take_it_says_why(tmp_path, monkeypatch):
    # A read-only home said "downloading it failed ([Errno 30] Read-only file system ...)", fix "connect to the
    # internet"; a full disk would have said the same fix.
    import errno
    import tempfile

    import torchvision.datasets

    class Full:
        def __init__(self, root, train, download):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Full)
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path / "new")
    assert "[Errno 28] No space left on device" in info.value.message
    assert info.value.hint.startswith(f"free some space in {tmp_path / 'new'}, or point --data-dir")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda **k: pytest.fail("a download was tried"))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path / "new")
    assert info.value.message == (f"mnist is not in {tmp_path / 'new'}, and it cannot be downloaded there: cannot "
                                  f"write in {tmp_path}: Read-only file system")
    assert info.value.hint.endswith("or at one you can write")


def test_a_dataset_folder_missing_files_names_them(tmp_path, monkeypatch):
    import torchvision.datasets

    from conftest import write_cifar10

    write_mnist(tmp_path, n_train=20, n_test=10)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path, download=False)
    assert info.value.message == f"mnist in {tmp_path / 'MNIST'} lacks raw/t10k-labels-idx1-ubyte"
    write_cifar10(tmp_path, per_batch=10, n_test=10)
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "test_batch"):
        (tmp_path / "cifar-10-batches-py" / name).unlink()

    def offline(root, train, download):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as info:
        data.load("cifar10", tmp_path)
    assert info.value.message.startswith(f"cifar10 in {tmp_path / 'cifar-10-batches-py'} lacks data_batch_2, "
                                         "data_batch_3, data_batch_4 and 1 more, and downloading it failed (")


def test_truncated_idx_file_is_refused(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="header promises"):
        data.load("mnist", tmp_path)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"garbage\n"), "is not a CIFAR batch file: invalid literal"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "is not a CIFAR batch file: pickle data was truncated"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": bytes(3072)})),
     "is not a CIFAR batch file: it holds no labels"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": bytes(3072), b"labels": [1, 2]})),
     "training files in {folder} hold 321 images but 322 labels"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": bytes(3072), b"labels": [12]})),
     "training labels in {folder} run from 0 to 12, not 0 to 9"),
], ids=["garbage", "cut-short", "no-labels", "label-count", "label-range"])
def test_a_damaged_cifar_batch_is_one_error_naming_it_with_its_fix(tmp_path, damage, message):
    from conftest import write_cifar10

    write_cifar10(tmp_path, per_batch=80, n_test=10)
    folder = tmp_path / "cifar-10-batches-py"
    damage(folder / "data_batch_3")
    with pytest.raises(DataError) as info:
        data.load("cifar10", tmp_path)
    assert message.format(folder=folder) in info.value.message
    assert info.value.hint.startswith("copy the official cifar-10-batches-py files there again")


def test_mnist_files_of_the_wrong_kind_are_refused_by_name(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path)
    assert info.value.message == f"{raw / 't10k-images-idx3-ubyte'} holds 1-dimensional data (10), not images"
    write_mnist(tmp_path, n_train=20, n_test=10)
    (raw / "train-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path)
    assert info.value.message == f"mnist's training files in {tmp_path / 'MNIST'} hold 20 images but 10 labels"
    assert "delete the damaged ones" in info.value.hint
    write_mnist(tmp_path, n_train=20, n_test=10, size=32)
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path)
    assert info.value.message == f"mnist's training images in {tmp_path / 'MNIST'} are 1x32x32, not 1x28x28"


def test_a_crafted_cifar_pickle_runs_no_code(tmp_path):
    from conftest import write_cifar10

    write_cifar10(tmp_path, per_batch=10, n_test=10)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing"):
        data.load("cifar10", tmp_path)
    assert not marker.exists()


def test_batches_cover_every_image_once_per_epoch(tiny_data):
    d = data.load("mnist", tiny_data, val_fraction=0.0)
    mean, std = data.normalisation(d.spec, "cpu")
    gen = torch.Generator().manual_seed(0)
    batches = data.Batches(d.train, 64, mean, std, shuffle=True, generator=gen)
    labels = torch.cat([y for _, y in batches])
    assert len(batches) == 7 and len(labels) == 400
    assert torch.equal(labels.sort().values, d.train.y.sort().values)
    x, _ = next(iter(batches))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 5


@pytest.mark.parametrize("name", sorted(data.AUGMENTS))
def test_augmentations_keep_shape_and_change_pixels(name):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    out = data.AUGMENTS.get(name)(x, gen)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if name != "none":
        assert not torch.equal(out, x)


def _affine_by_affine_grid(x, gen, degrees, shift, zoom_p, zoom):
    """The affine augmentation as first written: the same draws, F.affine_grid's grid."""
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(degrees)
    scale = torch.where(torch.rand(n, generator=gen) < zoom_p, torch.full_like(angle, 1 / zoom), torch.ones_like(angle))
    tx = (torch.rand(n, generator=gen) * 2 - 1) * shift
    ty = (torch.rand(n, generator=gen) * 2 - 1) * shift
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("args", [(15, 0.0, 0.0, 1.0), (10, 2 / 14, 0.0, 1.0), (15, 0.0, 0.5, 28 / 22)])
def test_affine_augmentations_sample_the_grid_affine_grid_gives(args):
    x = torch.rand(32, 3, 20, 28)  # not square: rows and columns must not be swapped
    ours = data._affine(x, torch.Generator().manual_seed(3), *args)
    reference = _affine_by_affine_grid(x, torch.Generator().manual_seed(3), *args)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert not torch.allclose(ours, x, atol=1e-2)


def test_rotations_bring_in_black_as_the_seed_projects_did(tiny_data):
    d = data.load("mnist", tiny_data, val_fraction=0.0)
    black = data.Split(torch.zeros_like(d.train.x), d.train.y)
    mean, std = data.normalisation(d.spec, "cpu")
    gen = torch.Generator().manual_seed(0)
    x, _ = next(iter(data.Batches(black, 64, mean, std, shuffle=True, augment=data.AUGMENTS.get("seed001"),
                                  generator=gen)))
    assert torch.allclose(x, (0 - mean) / std)


def test_crop_translates_whole_images():
    gen = torch.Generator().manual_seed(1)
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).repeat(8, 1, 1, 1)
    out = data.crop(x, gen)
    centre = out[:, 0, 4:12, 4:12]
    diffs = centre[:, :, 1:] - centre[:, :, :-1]
    assert torch.all(diffs == 1)


def test_a_folder_of_images_is_a_dataset_named_by_its_class_folders(tmp_path, monkeypatch):
    from PIL import Image

    from conftest import forget_folders, write_folder

    root = write_folder(tmp_path / "bugs")
    (root / "train" / "ant" / "notes.txt").write_text("not an image: left out")
    Image.new("L", (28, 28), 255).save(root / "train" / "ant" / "._0000.png")  # macOS's shadow file: left out
    (root / "train" / ".thumbs").mkdir()  # a hidden folder is no class
    monkeypatch.chdir(tmp_path)
    loaded = data.load("folder:bugs", val_fraction=0.2)
    spec = loaded.spec
    assert spec.name == f"folder:{root}" and spec.classes == ("ant", "bee", "cat") and spec.shape == (1, 28, 28)
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (96, 24, 30)
    first = sorted((root / "train" / "ant").glob("0*.png"))[0]
    whole = data.load(f"folder:{root}", val_fraction=0)
    pixels = torch.tensor(list(Image.open(first).getdata()), dtype=torch.uint8).view(28, 28)
    assert torch.equal(whole.train.x[0, 0], pixels)
    assert whole.train.y.tolist() == [0] * 40 + [1] * 40 + [2] * 40
    pixels = whole.train.x.float() / 255
    assert spec.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-3)
    assert spec.std[0] == pytest.approx(pixels.std().item(), abs=1e-3)
    assert len(list((tmp_path / "cache" / "tensors").glob("folder-bugs-*.pt"))) == 1
    # What was measured is kept until a file changes: the next command reads no image header.
    forget_folders()
    monkeypatch.setattr(data, "_measure", lambda *a: pytest.fail("measured again"))
    assert data.DATASETS.get("folder:bugs") == spec
    Image.new("L", (28, 28), 255).save(root / "test" / "cat" / "white.png")
    forget_folders()
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        data.DATASETS.get("folder:bugs")
    from cnnbench.paths import dataset_name

    assert dataset_name("folder:~/x/../y") == f"folder:{Path.home() / 'y'}" and dataset_name("mnist") == "mnist"


def test_a_dataset_s_digest_is_of_its_images_labels_and_classes_wherever_they_are_read(tiny_data, tmp_path):
    import shutil

    from conftest import forget_folders, write_folder

    def fresh(name, root=None):  # as a new command: nothing listed or loaded yet
        forget_folders()
        data._load_tensors.cache_clear()
        return data.load(name, root, val_fraction=0.1)

    original = fresh("mnist", tiny_data)
    assert len(original.digest) == 16 and original.digest == original.to("cpu").digest
    (cache,) = (tmp_path / "cache" / "tensors").glob("mnist-*.pt")
    assert torch.load(cache, weights_only=True)["digest"] == original.digest
    assert fresh("mnist", tiny_data).digest == original.digest  # from the cache
    blob = torch.load(cache, weights_only=True)
    del blob["digest"]  # a cache written before caches kept it
    torch.save(blob, cache)
    assert fresh("mnist", tiny_data).digest == original.digest
    assert fresh("mnist", tiny_data).profile() == {"train": 360, "val": 40, "test": 100, "shape": [1, 28, 28],
                                                   "classes": 10}
    assert fresh("fashion_mnist", tiny_data).digest != original.digest  # the same pixels, other class names

    root = write_folder(tmp_path / "bugs")
    bugs = fresh(f"folder:{root}")
    shutil.copytree(root, tmp_path / "elsewhere" / "bugs")  # new paths and modification times, the same images
    assert fresh(f"folder:{tmp_path / 'elsewhere' / 'bugs'}").digest == bugs.digest
    assert fresh(f"folder:{root}@14").digest != bugs.digest  # read at another size
    sorted((root / "test" / "cat").iterdir())[0].unlink()
    assert fresh(f"folder:{root}").digest != bugs.digest
    # An image replaced by one of the same size whose modification time is kept (cp -p, tar) is read again.
    from PIL import Image, ImageOps

    image = sorted((root / "test" / "ant").iterdir())[0]
    pixels = Image.open(image).convert("L")
    pixels.save(image, compress_level=0)  # stored, not compressed: its size is its pixels' count
    before, st = fresh(f"folder:{root}"), image.stat()
    ImageOps.invert(pixels).save(image, compress_level=0)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert fresh(f"folder:{root}").digest != before.digest


def test_a_folder_of_class_folders_alone_has_a_fifth_of_each_class_set_apart_for_testing(tmp_path):
    import shutil

    from click.testing import CliRunner

    from cnnbench.cli import main

    from conftest import forget_folders, write_folder

    made = write_folder(tmp_path / "made")
    flat = tmp_path / "flat"  # torchvision's ImageFolder layout: PATH/CLASS/IMAGE
    shutil.copytree(made / "train", flat)
    (flat / "cat" / "2019").mkdir()  # as for torchvision, the images in a class's inner folders are of that class
    for file in sorted((flat / "cat").glob("*.png"))[::2]:
        file.rename(flat / "cat" / "2019" / file.name)
    (flat / "__MACOSX" / "cat").mkdir(parents=True)  # what a zip made on a Mac holds beside the folders: left out
    (flat / "__MACOSX" / "cat" / "._0001.png").write_bytes(b"\0\5\26\7 resource fork")
    spec = data.DATASETS.get(f"folder:{flat}")
    assert spec.classes == ("ant", "bee", "cat")
    assert spec.summary.endswith("3 classes, 96 train / 24 test (20% of each class set apart)")
    loaded = data.load(f"folder:{flat}", val_fraction=0)
    assert loaded.train.y.tolist() == [0] * 32 + [1] * 32 + [2] * 32
    assert loaded.test.y.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    res = CliRunner().invoke(main, ["train", f"folder:{flat}", "--arch", "two_conv", "--epochs", "1"])
    assert res.exit_code == 0 and f"on folder:{flat}: 86 train / 10 val / 24 test (20% of each class set apart)\n" \
        in res.output, res.output
    images = [file for file in flat.rglob("*.png") if "__MACOSX" not in file.parts]
    whole = data.read_images(images, 1, (28, 28))  # every image, train or test, once
    assert sorted(map(bytes, torch.cat([loaded.train.x, loaded.test.x]).flatten(1).numpy())) == \
        sorted(map(bytes, whole.flatten(1).numpy()))

    def split(path: Path) -> tuple[set[str], set[str]]:
        train, test = data._folder_files(path)
        return tuple({f"{label}/{file.name}" for file, label in part} for part in (train, test))  # type: ignore

    train, test = split(flat)
    assert len(test) == 24 and not train & test
    moved = tmp_path / "elsewhere" / "pets"  # the split is the names', wherever the folder is
    shutil.copytree(flat, moved / "train")  # PATH/train/CLASS/IMAGE alone: the same
    assert split(moved) == split(moved / "train") == (train, test)
    (flat / "cat" / "2019" / "again").symlink_to(flat / "cat", target_is_directory=True)  # a loop: read once
    forget_folders()
    assert split(flat) == (train, test)
    assert data.DATASETS.get(f"folder:{moved}").summary.endswith("(20% of each class set apart)")
    shutil.copy(next((flat / "ant").glob("*.png")), flat / "ant" / "new.png")  # moves at most one other ant
    forget_folders()
    new_train, new_test = split(flat)
    moved_over = (test ^ new_test) - {"ant/new.png"}
    assert len(new_test) == 24 and len(moved_over) <= 1 and all(name.startswith("ant/") for name in moved_over)
    shutil.copytree(made / "test", flat / "test")  # a test/ folder beside class folders: it has no train/
    forget_folders()
    with pytest.raises(DataError, match="has no train/ folder with a folder of images per class"):
        data.DATASETS.get(f"folder:{flat}")
    with pytest.raises(DataError, match="holds no folder of images per class") as info:  # one class's folder
        data.DATASETS.get(f"folder:{flat / 'bee'}")
    assert info.value.hint == f"give the folder that holds the class folders: folder:{flat}"


def test_a_folder_dataset_given_a_size_is_read_at_it_and_kept_apart_from_the_same_images_at_theirs(tmp_path):
    from PIL import Image

    from cnnbench.paths import dataset_name
    from cnnbench.space import Sweep

    from conftest import write_folder

    root = write_folder(tmp_path / "bugs", n_train=30, n_test=6)
    own = data.load(f"folder:{root}", val_fraction=0)
    wide = data.load(f"folder:{root}@40x20", val_fraction=0)  # 40 wide, 20 high
    assert wide.spec.name == f"folder:{root}@40x20" and wide.spec.shape == (1, 20, 40) and own.spec.shape == (1, 28, 28)
    assert wide.spec.summary.endswith("30 train / 6 test (36 resized to 40x20)")
    assert torch.equal(wide.train.x, data.read_images([f for f, _ in data._folder_files(root)[0]], 1, (20, 40)))
    assert data.load(f"folder:{root}@16", val_fraction=0).train.x.shape == (30, 1, 16, 16)
    names = sorted(p.name for p in (tmp_path / "cache" / "tensors").iterdir())
    assert [name.removeprefix("folder-bugs-")[16:] for name in names] == ["-16x16.pt", "-40x20.pt", ".pt"]
    assert dataset_name("folder:~/x/../y@64") == f"folder:{Path.home() / 'y'}@64x64"
    sweep = Sweep.model_validate({"dataset": "folder:bugs@32", "space": {"lr": {"low": 0.01, "high": 0.1}}})
    assert sweep.study_name == "bugs-32x32"
    big = tmp_path / "photos"
    for i, label in enumerate("ababab"):
        (big / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (1030, 9), (i * 40, 0, 0)).save(big / label / f"{i}.png")
    with pytest.raises(DataError, match=r"'s images are 1030x9 pixels, too large to train on as they are") as info, \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "read_images", lambda *a: pytest.fail("read an image whole"))  # phone photos: 36 MB each
        data.DATASETS.get(f"folder:{big}")
    assert info.value.hint == f"give the size the nets should see: folder:{big}@64 reads them at 64x64"
    assert data.load(f"folder:{big}@64", val_fraction=0).train.x.shape == (4, 3, 64, 64)
    for size in ("@0", "@7x64", "@64x2000"):
        with pytest.raises(DataError, match=r"images of \d+x\d+ pixels cannot be trained on") as info:
            data.DATASETS.get(f"folder:{root}{size}")
        assert info.value.hint == f"give a size from 8 to 1024: folder:{root}@64, say"


def test_a_folder_dataset_is_in_colour_if_one_image_is_and_at_the_size_most_have(tmp_path):
    from PIL import Image
    from PIL.JpegImagePlugin import JpegImageFile

    from conftest import write_folder

    root = write_folder(tmp_path / "mixed", n_train=30, n_test=6)
    odd = root / "train" / "bee" / "big.jpg"
    Image.new("RGB", (56, 40), (200, 10, 10)).save(odd)
    spec = data.DATASETS.get(f"folder:{root}")
    assert spec.shape == (3, 28, 28) and spec.summary.endswith("3 classes, 31 train / 6 test (1 resized to 28x28)")
    loaded = data.load(f"folder:{root}", val_fraction=0)
    index = sorted(p.name for p in (root / "train" / "bee").iterdir()).index("big.jpg")
    image = loaded.train.x[10 + index]
    assert image.shape == (3, 28, 28) and torch.equal(image, data.read_images([odd], 3, (28, 28))[0])
    assert image[0].float().mean() > 150 and image[2].float().mean() < 50  # resized, still red
    assert torch.equal(loaded.train.x[0, 0], loaded.train.x[0, 1])  # grayscale images: three equal channels
    photo = tmp_path / "photo.jpg"  # a JPEG 25 times the size wanted is decoded at an eighth of its size
    yy, xx = torch.meshgrid(torch.arange(600), torch.arange(800), indexing="ij")
    Image.fromarray(torch.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) % 256], -1).to(torch.uint8).numpy()) \
        .save(photo, quality=95)
    with Image.open(photo) as img:
        whole = torch.tensor(list(img.resize((32, 24), Image.Resampling.BILINEAR).getdata())).T.reshape(3, 24, 32)
    decoded, draft = [], JpegImageFile.draft
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JpegImageFile, "draft", lambda img, *a: decoded.append((draft(img, *a), img.size)[1]))
        assert (data.read_images([photo], 3, (24, 32))[0].int() - whole).abs().float().mean() < 1.0
    assert decoded == [(100, 75)]  # of 800x600
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone's portrait photo: stored lying, 40x20, and shown turned a quarter, 20x40
    Image.new("RGB", (40, 20)).save(tmp_path / "phone.jpg", exif=exif)
    assert data.image_header(tmp_path / "phone.jpg") == ((20, 40), "RGB")
    assert data.read_images([tmp_path / "phone.jpg"], 3, (40, 20)).shape == (1, 3, 40, 20)


def test_a_very_large_image_is_read_without_pil_s_warning_and_one_too_large_is_refused_in_one_line(tmp_path):
    import warnings

    from PIL import Image

    Image.new("1", (10_000, 9_000)).save(tmp_path / "poster.png")  # 90 million pixels: PIL warns, two lines
    Image.new("1", (20_000, 10_000)).save(tmp_path / "bomb.png")  # over twice that: PIL refuses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.image_header(tmp_path / "poster.png") == ((10_000, 9_000), "1")
        assert data.read_images([tmp_path / "poster.png"], 1, (28, 28)).shape == (1, 1, 28, 28)
    for read in (data.image_header, lambda path: data.read_images([path], 1, (28, 28))):
        with pytest.raises(DataError, match="image too large: .*bomb.png: Image size \\(200000000 pixels\\)"):
            read(tmp_path / "bomb.png")


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: root.write_text("x"), "not a folder"),
    (lambda root: (root / "test" / "a").mkdir(parents=True), "has no train/ folder"),
    (lambda root: [__import__("shutil").rmtree(root / "test"), (root / "test").mkdir()], "has no test/ folder"),
    (lambda root: [root.mkdir(), __import__("PIL.Image").Image.new("L", (9, 9)).save(root / "a.png")],
     "holds no folder of images per class"),
    (lambda root: [(root / "a").mkdir(parents=True), (root / "b").mkdir(),
                   *(__import__("PIL.Image").Image.new("L", (9, 9)).save(root / c / f"{i}.png")
                     for c in "ab" for i in range(2))],
     "has too few images per class to set any apart for testing"),
    (lambda root: (root / "train" / "dog").mkdir(), "train/dog holds no images"),
    (lambda root: __import__("shutil").copytree(root / "test" / "cat", root / "test" / "cow"),
     "test has classes its train/ folder lacks: cow"),
    (lambda root: (root / "test" / "cat" / "0000.png").write_bytes(b"not a png"), "not an image: "),
    (lambda root: [(root / c).mkdir(parents=True) for c in ("car", "train")]  # CIFAR-100 has a class "train"
     + [__import__("PIL.Image").Image.new("L", (9, 9)).save(root / c / f"{i}.png") for c in ("car", "train")
        for i in range(5)],
     "has a class folder named train/, which names a part of a dataset laid out as PATH/train/CLASS/IMAGE"),
])
def test_a_folder_not_laid_out_as_a_dataset_is_refused_in_one_line(tmp_path, make, message):
    from click.testing import CliRunner

    from cnnbench.cli import main
    from conftest import write_folder

    root = tmp_path / "imgs"
    if not any(part in message for part in ("no train/", "such", "not a folder", "holds no folder", "too few",
                                            "class folder named")):
        write_folder(root, n_train=12, n_test=3)
    make(root)
    res = CliRunner().invoke(main, ["train", f"folder:{root}", "--arch", "two_conv", "--epochs", "1"])
    assert res.exit_code == 2 and message in res.output, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 2  # the error and its fix
    assert not (tmp_path / "cache" / "tensors").exists()  # refused before any image was read whole


def test_a_folder_whose_images_would_not_fit_in_memory_is_refused_before_reading_them(tmp_path, monkeypatch):
    from conftest import write_folder

    root = write_folder(tmp_path / "big", n_train=12, n_test=3)
    monkeypatch.setattr(data, "_memory", lambda: 2 * 15 * 28 * 28 - 2)
    with pytest.raises(DataError, match=r"'s 15 images take 0\.0 GiB at 28x28, more than half of this machine's") \
            as info:
        data.load(f"folder:{root}")
    assert info.value.hint == f"give the size the nets should see: folder:{root}@64 reads them at 64x64"
    assert not (tmp_path / "cache" / "tensors").exists()
    assert data.load(f"folder:{root}@8", val_fraction=0).train.x.shape == (12, 1, 8, 8)  # which fits


def test_one_class_folder_is_no_classifier_to_train_nor_to_sweep(tmp_path):
    from click.testing import CliRunner

    from cnnbench.cli import main
    from conftest import write_folder

    root = write_folder(tmp_path / "one", classes=("ant",), n_train=6, n_test=2)
    res = CliRunner().invoke(main, ["train", f"folder:{root}"])
    assert res.exit_code == 2 and "has one class folder; a classifier needs two or more" in res.output
    res = CliRunner().invoke(main, ["sweep", "folder:one"])  # refused as the sweep for one's images reads it
    assert res.exit_code == 2 and "has one class folder; a classifier needs two or more" in res.output
    for command, name in (("sweep", "folder:"), ("train", "folder: @64")):  # not the folder it runs in
        res = CliRunner().invoke(main, [command, name])
        assert res.exit_code == 2 and res.output == f"error: dataset = {name!r}: names no folder; give the folder " \
            "of your images: folder:PATH, as folder:~/pets\n"
    assert not (tmp_path / "cnnbench-journal.log").exists() and not (tmp_path / "mlflow.db").exists()
    res = CliRunner().invoke(main, ["train", f"folder:{root}/train"])  # the training folder, not the dataset's
    assert res.exit_code == 2 and f"fix: give the folder that holds train/ and test/: folder:{root}" in res.output
    flat = tmp_path / "flat"  # torchvision's ImageFolder layout: a folder per class, no split
    (root / "train").rename(flat)
    res = CliRunner().invoke(main, ["train", f"folder:{flat}"])
    assert res.exit_code == 2 and f"error: folder:{flat} has one class folder; a classifier needs two" in res.output
