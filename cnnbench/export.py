"""Self-contained exports of a trained model, and predictions from them on image files.

An export is a folder anyone can use without cnnbench: the weights as safetensors, the network as
a ``torch.export`` program and as ONNX, the preprocessing as JSON, the config that reproduces the
run, its metrics, and a model card. File names are fixed here, never taken from a config.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import yaml
from torch import nn

from cnnbench import config as cfg
from cnnbench import data as datamod
from cnnbench import plots
from cnnbench import train as trainer
from cnnbench.errors import CheckpointError, CnnbenchError, ConfigError, DataError, listed
from cnnbench.models import with_tta
from cnnbench.paths import FOLDER, as_written, folder_parts, unwritable

WEIGHTS = "model.safetensors"
PROGRAM = "model.pt2"
ONNX = "model.onnx"
ONNX_DATA = "model.onnx.data"
CONFIG = "config.yaml"
PREPROCESS = "preprocess.json"
METRICS = "metrics.json"
CARD = "README.md"
#: Every name an export may hold; replacing a folder with anything else in it is refused.
FILES = (WEIGHTS, PROGRAM, ONNX, ONNX_DATA, CONFIG, PREPROCESS, METRICS, CARD, *plots.FIGURES)
#: The files :func:`load` needs.
REQUIRED = (WEIGHTS, CONFIG, PREPROCESS)
FORMAT_VERSION = 1
#: Above this many bytes of weights ONNX needs an external data file (protobuf's limit is 2 GiB).
_ONNX_INLINE_LIMIT = 1 << 30
#: Datasets whose images are a light figure on a dark background, like MNIST's white digits.
_LIGHT_ON_DARK = ("mnist", "fashion_mnist")


def export(
    model: nn.Module,
    config: cfg.TrainConfig,
    spec: datamod.DatasetSpec,
    out_dir: str | os.PathLike,
    *,
    metrics: dict[str, Any],
    run: dict[str, Any] | None = None,
    figures: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    onnx: bool = True,
) -> Path:
    """Write ``model`` as a self-contained export folder at ``out_dir`` and return its path.

    The folder holds the weights (safetensors), a ``torch.export`` program, ONNX (when ``onnx`` and
    the onnx extra is installed), the preprocessing, the config, ``metrics``, the run's ``figures``
    (files named as in :data:`cnnbench.plots.FIGURES`) and a model card naming the MLflow ``run``
    and showing the figures. It appears whole or not at all. Raises :class:`ConfigError` when ``out_dir``
    exists and is not empty (unless ``overwrite`` and it holds only an earlier export), and
    :class:`CheckpointError` when the model cannot be exported.
    """
    if config.dataset != spec.name:
        raise ConfigError(f"the config is for dataset {config.dataset!r} but the spec is for {spec.name!r}")
    out_dir = Path(out_dir).absolute()
    check_target(out_dir, overwrite, config.dataset)
    metrics_text = _to_json(metrics, "metrics")
    run = dict(run or {})
    _to_json(run, "run")
    figures = [Path(f) for f in figures]
    if unknown := [f.name for f in figures if f.name not in plots.FIGURES]:
        raise ConfigError(f"not a figure an export holds: {', '.join(unknown)}", hint=f"one of {plots.FIGURES}")

    model = trainer.copy_model(getattr(model, "_orig_mod", model)).eval()
    predictor = with_tta(model, config.tta)  # what the program and ONNX compute: what the metrics measured
    c, h, w = spec.shape
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = predictor(example)
    if tuple(expected.shape) != (2, spec.num_classes):
        raise ConfigError(f"the model gives outputs of shape {tuple(expected.shape)}, not (N, {spec.num_classes})",
                          hint="export the model trained for this dataset")
    params = sum(p.numel() for p in model.parameters())
    preprocess = _preprocess(spec)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # unlike mkdtemp, keeps the umask's permissions, which the export will have
    try:
        _save_weights(model, config, tmp / WEIGHTS)
        _save_program(predictor, example, expected, tmp / PROGRAM)
        onnx_note = _save_onnx(predictor, example, tmp / ONNX) if onnx else "not exported (turned off at export time)"
        (tmp / CONFIG).write_text(
            f"# Reproduce this run: cnnbench train --config {CONFIG}\n"
            + yaml.safe_dump(config.params(), sort_keys=False))
        (tmp / PREPROCESS).write_text(json.dumps(preprocess, indent=2) + "\n")
        (tmp / METRICS).write_text(metrics_text + "\n")
        for figure in figures:
            shutil.copyfile(figure, tmp / figure.name)
        (tmp / CARD).write_text(_card(tmp, config, spec, preprocess, params, metrics, run, onnx_note))
        _move_into_place(tmp, out_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load(export_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Return the model of an export (on the CPU, in eval mode, with the test-time augmentation it was
    evaluated with) and its preprocessing settings.

    The network is rebuilt from ``config.yaml`` and its weights read from safetensors, so nothing
    is unpickled. Raises :class:`ConfigError` for a path that is not an export (bad input) and
    :class:`CheckpointError` for an export that cannot be read.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ConfigError(f"{export_dir} is not a folder", hint="give the folder that `export` wrote")
    missing = [name for name in REQUIRED if not (export_dir / name).is_file()]
    if missing:
        inside = sorted(str(d) for d in export_dir.iterdir() if all((d / name).is_file() for name in REQUIRED))
        named = f": {listed(inside, 3, 'or')}{' in it' * (len(inside) > 3)}" if inside else ""
        raise ConfigError(f"{export_dir} is not a cnnbench export: it lacks {', '.join(missing)}",
                          hint=f"give the folder that `export` wrote{named}")
    preprocess = _read_preprocess(export_dir / PREPROCESS)
    try:
        config, _ = cfg.resolve(cfg.Layer.yaml_file(export_dir / CONFIG))
        # The export's own record of its input and classes: the dataset (a folder of one's images) need not be here.
        spec = datamod.DatasetSpec(config.dataset, "", "", (preprocess["channels"], *preprocess["size"]),
                                   tuple(preprocess["classes"]), tuple(preprocess["mean"]), tuple(preprocess["std"]),
                                   "none", "")
        model = trainer.build_model(config, spec)
    except CnnbenchError as err:
        raise CheckpointError(f"{export_dir / CONFIG} does not describe a model this cnnbench can build: {err.message}",
                              hint="use the cnnbench version that wrote the export, or its model.pt2") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, export_dir / WEIGHTS, strict=True, device="cpu")
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"cannot load {export_dir / WEIGHTS}: {str(err).splitlines()[0][:200]}",
                              hint="the file is damaged or belongs to another model") from None
    return with_tta(model, config.tta).eval(), preprocess


def load_images(paths: Sequence[str | os.PathLike], preprocess: dict[str, Any]) -> torch.Tensor:
    """Return image files as one normalised float32 batch (N, C, H, W), prepared like the training data.

    Any size and any format PIL reads is accepted: images are read as the training images of a folder
    dataset are (:func:`cnnbench.data.read_images`: grayscale or RGB, resized), turned to a light figure on a
    dark background where the dataset is so, and normalised with the stored mean and std. Raises
    :class:`DataError` naming a file that cannot be read or is not an image.
    """
    batch = datamod.read_images(paths, preprocess["channels"], tuple(preprocess["size"]))
    if preprocess.get("polarity") == "light-on-dark":
        light = batch.float().mean(dim=(1, 2, 3)) > 127
        batch[light] = 255 - batch[light]
    mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return (batch.float() / 255 - mean) / std


def image_files(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, Path | None]]:
    """``paths`` with each folder among them replaced by the images in it and in the folders within it
    (:func:`cnnbench.data.images_under`), each with the folder given it was found in (``None`` for an image given).

    Raises :class:`DataError` for a folder that holds none.
    """
    files: list[tuple[Path, Path | None]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append((path, None))
            continue
        found = datamod.images_under(path)
        if not found:
            raise DataError(f"no images in folder {path}", hint=f"give image files "
                            f"({', '.join(datamod.IMAGE_SUFFIXES)}) or a folder holding some")
        files += [(file, path) for file in found]
    return files


def labels(files: Sequence[tuple[Path, Path | None]],
           preprocess: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """Per image of :func:`image_files`, its class, where its folders name one of the export's, and the part of
    a dataset it is in, ``train`` or ``test``, where it is in one; ``None`` for either otherwise.

    An image's class is the folder it is in below the one given (torchvision's ImageFolder layout:
    ``pets/cat/1.png`` for ``pets``), or below ``train/`` or ``test/`` where the folder given holds both. In the
    folder of images the model was trained on, the images it set apart for testing are ``test``, the others
    ``train`` (:func:`cnnbench.data.dataset_images`).
    """
    known = set(preprocess["classes"])
    name = preprocess.get("dataset", "")
    own = Path(folder_parts(name)[0]).resolve() if name.startswith(FOLDER) else None
    parts: dict[Path, dict[Path, tuple[str, str]]] = {}
    found = []
    for file, folder in files:
        if folder is None:
            found.append((None, None))
            continue
        if folder not in parts:
            parts[folder] = datamod.dataset_images(folder, trained_on=folder.resolve() == own)
        skip = len(folder.parts)
        label, part = parts[folder].get(file) or (file.parts[skip] if len(file.parts) > skip + 1 else None, None)
        found.append((label if label in known else None, part))
    return found


def predict(export_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], *,
            batch_size: int = 256) -> list[dict[str, Any]]:
    """Classify image files with an export; return per file its ``file``, ``label``, ``index`` and ``probability``,
    its ``truth``: the class its folder names, or ``None``, and its ``part``: ``train``, ``test`` or ``None``.

    A folder among ``paths`` stands for the images in it and in the folders within it, in order of path. An image
    in a folder within it named after one of the export's classes (``test/cat/0001.png`` for ``test``) is of that
    class; in a dataset's folder (``pets`` holding ``train/`` and ``test/``, or the folder of images the model
    trained on) it is of the class its class folder names, in the part it is in (:func:`labels`).
    """
    return list(predictions(export_dir, paths, batch_size=batch_size))


def predictions(export_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], *,
                batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """:func:`predict`'s results one by one, as each batch of ``batch_size`` images is classified; the images
    and the export are checked before the first."""
    found = image_files(paths)
    model, preprocess = load(export_dir)
    for file, _ in found:  # a file missing or no image, before any is classified: 55 us a file, from its header
        datamod.image_header(file)
    classes = preprocess["classes"]
    known = labels(found, preprocess)
    for start in range(0, len(found), batch_size):
        chunk = found[start:start + batch_size]
        x = load_images([path for path, _ in chunk], preprocess)
        with torch.inference_mode():
            prob, index = model(x).float().softmax(1).max(1)
        for (path, _), (truth, part), p, k in zip(chunk, known[start:start + batch_size], prob.tolist(),
                                                 index.tolist()):
            yield {"file": str(path), "label": classes[k], "index": k, "probability": p, "truth": truth, "part": part}


def check_target(out_dir: Path, overwrite: bool, dataset: str | None = None) -> None:
    """Raise :class:`ConfigError` unless ``out_dir`` can take an export (see :func:`export`) of a model trained on
    ``dataset``; writes nothing."""
    if dataset and dataset.startswith(FOLDER):  # among the images, its folder would be read as a class of them
        images = Path(folder_parts(dataset)[0]).resolve()
        if images in (out := out_dir.resolve(), *out.parents):
            raise ConfigError(f"{out_dir} lies in {images}, the folder of images the model is trained on, which "
                              "would take the export for a class of them", hint="export to a folder outside it")
    # The export is made beside its folder, then moved into place.
    if why := unwritable(out_dir.parent):
        raise ConfigError(f"cannot export to {out_dir}: {why}", hint="choose another export folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder", hint="choose another export folder")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    if not overwrite:
        raise ConfigError(f"{out_dir} exists and is not empty",
                          hint="choose another folder, or give --overwrite to replace an earlier export")
    foreign = [name for name in entries if name not in FILES]
    if foreign:
        raise ConfigError(f"{out_dir} holds files that are not part of an export ({listed(foreign, most=5)}); "
                          "refusing to replace it", hint="choose another folder, or empty it yourself")


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    check_target(out_dir, overwrite)
    trash = None
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, trash / "export")
    try:
        os.replace(tmp, out_dir)
    except OSError as err:
        if trash is not None:
            os.replace(trash / "export", out_dir)
        raise CheckpointError(f"cannot move the export into {out_dir}: {err.strerror}") from None
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _to_json(values: dict[str, Any], what: str) -> str:
    def plain(obj):
        if hasattr(obj, "tolist"):  # tensors and numpy values
            return obj.tolist()
        raise ConfigError(f"{what} must hold plain values; {type(obj).__name__} cannot be written as JSON")

    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a mapping, got {type(values).__name__}")
    return json.dumps(values, indent=2, default=plain)


def _preprocess(spec: datamod.DatasetSpec) -> dict[str, Any]:
    c, h, w = spec.shape
    return {
        "format_version": FORMAT_VERSION,
        "dataset": spec.name,
        "input": "float32 (N, C, H, W): (pixel / 255 - mean) / std per channel",
        "channels": c,
        "size": [h, w],
        "color": "grayscale" if c == 1 else "RGB",
        "resize": "bilinear",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "polarity": "light-on-dark" if spec.name in _LIGHT_ON_DARK else None,
        "classes": list(spec.classes),
        "output": "logits (N, classes); softmax gives probabilities",
    }


def classes(export_dir: str | os.PathLike) -> list[str]:
    """The class names of the model exported to ``export_dir``, in the order of its outputs."""
    return _read_preprocess(Path(export_dir) / PREPROCESS)["classes"]


def _read_preprocess(path: Path) -> dict[str, Any]:
    try:
        preprocess = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    keys = ("channels", "size", "mean", "std", "classes")
    missing = [k for k in keys if not isinstance(preprocess, dict) or k not in preprocess]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}", hint="re-export the model")
    return preprocess


def _save_weights(model: nn.Module, config: cfg.TrainConfig, path: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"format": "pt", "arch": config.arch, "dataset": config.dataset})
    as_written(path)


def _save_program(model: nn.Module, example: torch.Tensor, expected: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        with torch.no_grad():
            got = program.module()(example)
    except Exception as err:  # torch.export raises many types; the user needs the first line
        raise CheckpointError(f"torch.export cannot capture this model: {str(err).splitlines()[0][:300]}") from None
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise CheckpointError("the torch.export program does not reproduce the model's outputs")
    buffer = io.BytesIO()  # torch's own file writer aborts the process on a full disk; Python's raises
    torch.export.save(program, buffer)
    with buffer.getbuffer() as view:  # released even when the write fails (see train.save_checkpoint)
        path.write_bytes(view)


def onnx_missing() -> str | None:
    """Return why ONNX cannot be written here (a package of the onnx extra is not installed), or None."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        return f"{err.name or 'onnx'} is not installed (pip install 'cnnbench[onnx]')"
    return None


def _save_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Write ONNX and return a note for the card; without the onnx extra, write nothing and say so."""
    if missing := onnx_missing():
        return f"not exported: {missing}"
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    external = weight_bytes > _ONNX_INLINE_LIMIT
    try:
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True,
                          external_data=external, verbose=False)
    except Exception as err:  # the exporter raises many types; the user needs the first line
        raise CheckpointError(f"ONNX export failed: {str(err).splitlines()[0][:300]}",
                              hint="export without ONNX: onnx=False") from None
    where = f", weights in `{ONNX_DATA}`" if external else ""
    return f"the network as ONNX (input `input`, output `logits`, any batch size{where})"


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) and key == "params":
        return f"{value:,}"
    if isinstance(value, float) and math.isfinite(value):
        if "acc" in key and 0 <= value <= 1:
            return f"{value:.4f} ({value:.2%})"
        if key.endswith("seconds"):
            return f"{value:.1f}"
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _table(values: dict[str, Any], head: tuple[str, str]) -> str:
    rows = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    rows += [f"| {k} | {_fmt(k, v).replace('|', '/')} |" for k, v in values.items()]
    return "\n".join(rows)


def _precision_note(precision: Any) -> str:
    if precision in (None, "fp32"):
        return ""
    return (f" They were measured as the model trained, in {precision} autocast; the program and ONNX compute in "
            "float32 with the same weights, so their accuracy can differ from these by a few images.")


def _data_note(digest: Any) -> str:
    if not digest:
        return ""
    return (" `data_digest` names the images and labels the model was trained and tested on (cnnbench's digest of "
            "the dataset as read, the same wherever its files lie): two models of one digest were measured alike.")


def _tta_note(tta: str, weights: str) -> str:
    if tta == "none":
        return ""
    views = ("each image and its mirror image" if tta == "flip" else
             "six views of each image: it and its mirror image, unshifted (half the weight) and shifted by a pixel "
             "up-left and down-right")
    return (f"\n- Test-time augmentation (`tta: {tta}`): the program, the ONNX file and `cnnbench predict` average "
            f"the network's logits over {views}, as the metrics above were measured; the weights in `{weights}` "
            "are the bare network's.")


def _card(out: Path, config: cfg.TrainConfig, spec: datamod.DatasetSpec, pre: dict[str, Any], params: int,
          metrics: dict[str, Any], run: dict[str, Any], onnx_note: str) -> str:
    c, h, w = spec.shape
    hparams = ", ".join(f"{k}={v}" for k, v in config.arch_kwargs().items()) or "its defaults"
    classes = ", ".join(f"{i}: {name}" for i, name in enumerate(spec.classes))
    mode = "L" if c == 1 else "RGB"
    invert = ("\nif x.mean() > 0.5:  # the model saw light figures on a dark background\n    x = 1 - x"
              if pre["polarity"] else "")
    polarity = ("Images are a light figure on a dark background, as in MNIST (a white digit on black); "
                "`cnnbench predict` inverts an image whose mean pixel is above 127 (dark ink on light paper)."
                if pre["polarity"] else "No inversion: images are used as they are.")
    run_section = _table(run, ("key", "value")) if run else "This export was not made from a tracked run."
    onnx_load = (f"""```python
import onnxruntime as ort

session = ort.InferenceSession("{ONNX}", providers=["CPUExecutionProvider"])
logits = session.run(["logits"], {{"input": x.numpy()}})[0]  # any batch size
```""" if (out / ONNX).exists() else f"ONNX {onnx_note}.")
    what = dict(zip(plots.FIGURES, ("loss and accuracy per epoch, training and validation",
                                    "the test set's confusion matrix",
                                    "test images classified right (the least confident) and wrong (the most confident)")))
    shown = [name for name in plots.FIGURES if (out / name).exists()]
    training = "".join(f"\n![{what[name]}]({name})\n" for name in shown)
    training = f"\n## Training\n{training}" if shown else ""
    figure_rows = "".join(f"\n| `{name}` | {what[name]} |" for name in shown)
    return f"""# {config.arch} on {spec.name}

A `{config.arch}` network trained on {spec.summary}, exported by cnnbench.

## Results

{_table(metrics, ("metric", "value")) if metrics else "No metrics were given."}

Accuracies are fractions of the images classified correctly.{_precision_note(metrics.get("precision"))}{
    _data_note(metrics.get("data_digest"))}
{training}
## Model

- Architecture: `{config.arch}` ({hparams}), {params:,} parameters.
- Input: a float32 tensor (N, {c}, {h}, {w}), any batch size N, normalised as below.
- Output: logits (N, {spec.num_classes}); softmax gives class probabilities.{_tta_note(config.tta, WEIGHTS)}
- Classes: {classes}.

## Preprocessing

{"Grayscale" if c == 1 else "RGB"}, resized to {w}x{h} (width x height, bilinear), pixel values scaled to [0, 1],
then per channel `(x - mean) / std` with mean = {list(spec.mean)} and std = {list(spec.std)}. {polarity}
Before all this, an image is turned upright by its EXIF orientation (a phone's photo is often stored
sideways), an image with transparency (a drawing on a clear canvas) is laid on white where its opaque
pixels are dark, else on black, and 16-bit grayscale is scaled to 8 bits. `{PREPROCESS}` holds these
settings.

## MLflow run

{run_section}

## Files

| file | what |
| --- | --- |
| `{WEIGHTS}` | the weights (safetensors) |
| `{PROGRAM}` | the network as a `torch.export` program, loadable without cnnbench |
| `{ONNX}` | {onnx_note} |
| `{CONFIG}` | the training config: `cnnbench train --config {CONFIG}` reproduces the run |
| `{PREPROCESS}` | input size, channels, mean, std, polarity and class names |
| `{METRICS}` | the metrics above |{figure_rows}

## Use it with plain PyTorch

```python
import torch
from PIL import Image, ImageOps

img = ImageOps.exif_transpose(Image.open("image.png"))  # upright, as the training images were read
img = img.convert("{mode}").resize(({w}, {h}), Image.Resampling.BILINEAR)
x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view({h}, {w}, {c}).permute(2, 0, 1).float() / 255{invert}
mean, std = torch.tensor({list(spec.mean)}).view(-1, 1, 1), torch.tensor({list(spec.std)}).view(-1, 1, 1)
x = ((x - mean) / std).unsqueeze(0)

model = torch.export.load("{PROGRAM}").module()  # only load exports you trust: it may unpickle
probabilities = model(x).softmax(1)
```

## Use it with onnxruntime

{onnx_load}

## Use it with cnnbench

```
cnnbench predict EXPORT_DIR image.png
```

or `cnnbench.export.load(EXPORT_DIR)`, which rebuilds the network from `{CONFIG}` and `{WEIGHTS}`.
"""
