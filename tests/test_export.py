import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnbench import data
from cnnbench.config import Layer, TrainConfig, resolve, validate
from cnnbench.errors import CheckpointError, ConfigError, DataError
from cnnbench.export import export, load, load_images, predict
from cnnbench.models import with_tta
from cnnbench.train import Result, build_model, copy_model, evaluate, fit

FAST = dict(arch="two_conv", width=8, optimizer="adam", lr=3e-3, batch_size=32, epochs=2, device="cpu")
RUN = {"run_id": "0a1b2c3d4e5f", "experiment": "tiny-export", "tracking_uri": "file:///tmp/mlruns"}


@dataclass
class Exported:
    dir: Path
    config: TrainConfig
    data: data.Data
    result: Result
    x: torch.Tensor  # the normalised test images
    predictions: torch.Tensor  # cnnbench's evaluate, in fp32
    logits: torch.Tensor  # the trained model's, with its test-time augmentation, in fp32


def _train_and_export(name: str, tiny_data: Path, tmp_path_factory, **overrides) -> Exported:
    root = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:  # module scope: keep the tensor cache under tmp too
        mp.setenv("CNNBENCH_CACHE_DIR", str(root / "cache"))
        data._load_tensors.cache_clear()
        d = data.load(name, tiny_data, val_fraction=0.2)
        data._load_tensors.cache_clear()
    config = validate(dict(FAST, dataset=name, **overrides))
    result = fit(config, d)
    ev = evaluate(result.model, d.test, d.spec, config, device=torch.device("cpu"), precision="fp32")
    mean, std = data.normalisation(d.spec, "cpu")
    x = (d.test.x.float() / 255 - mean) / std
    with torch.no_grad():
        logits = with_tta(copy_model(result.model).eval(), config.tta)(x)
    metrics = {"test_acc": ev.acc, "test_loss": ev.loss, "val_acc": result.best.val_acc, "params": result.params}
    out = export(result.model, config, d.spec, root / "export", metrics=metrics, run=RUN)
    return Exported(out, config, d, result, x, ev.predictions, logits)


@pytest.fixture(scope="module")
def mnist(tiny_data, tmp_path_factory) -> Exported:
    return _train_and_export("mnist", tiny_data, tmp_path_factory)


@pytest.fixture(scope="module")
def cifar(tiny_data, tmp_path_factory) -> Exported:
    return _train_and_export("cifar10", tiny_data, tmp_path_factory, width=16, epochs=3)


@pytest.fixture(scope="module")
def airbench94(tiny_data, tmp_path_factory) -> Exported:
    return _train_and_export("cifar10", tiny_data, tmp_path_factory, arch="airbench94", width=8, optimizer="sgd",
                             lr=0.2, momentum=0.85, nesterov=True, lookahead=True, tta="flip", augment="crop2_flip")


def test_the_export_holds_every_file_and_learned_the_task(mnist):
    assert sorted(p.name for p in mnist.dir.iterdir()) == sorted([
        "model.safetensors", "model.pt2", "model.onnx", "config.yaml", "preprocess.json", "metrics.json", "README.md"])
    assert [p.name for p in mnist.dir.parent.iterdir() if p.name.startswith(".")] == []
    mask = os.umask(0o022)
    os.umask(mask)  # safetensors wrote the weights 0600: the one file of an export others could not read
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in mnist.dir.iterdir()} == {
        p.name: oct(0o666 & ~mask) for p in mnist.dir.iterdir()}
    assert (mnist.predictions == mnist.data.test.y).float().mean() >= 0.9
    metrics = json.loads((mnist.dir / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx((mnist.predictions == mnist.data.test.y).float().mean().item())
    pre = json.loads((mnist.dir / "preprocess.json").read_text())
    assert pre["mean"] == [0.1307] and pre["std"] == [0.3081] and pre["size"] == [28, 28]
    assert pre["channels"] == 1 and pre["polarity"] == "light-on-dark" and pre["classes"] == list("0123456789")


def test_plain_torch_loads_the_program_without_cnnbench(mnist, tmp_path):
    torch.save(mnist.x, tmp_path / "x.pt")
    script = textwrap.dedent("""
        import json, sys

        class NoCnnbench:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "cnnbench":
                    raise ImportError("cnnbench must not be needed")

        sys.meta_path.insert(0, NoCnnbench())
        import torch

        model = torch.export.load(sys.argv[1] + "/model.pt2").module()
        x = torch.load(sys.argv[2], weights_only=True)
        with torch.no_grad():
            logits = model(x)
            one = model(x[:1])
        assert not any(m.partition(".")[0] == "cnnbench" for m in sys.modules)
        print(json.dumps({"pred": logits.argmax(1).tolist(), "logits": logits.tolist(), "one": one.tolist()}))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(mnist.dir), str(tmp_path / "x.pt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pred"] == mnist.predictions.tolist()
    torch.testing.assert_close(torch.tensor(out["logits"]), mnist.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(out["one"]), mnist.logits[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["mnist", "cifar", "airbench94"])
def test_onnxruntime_gives_the_same_predictions(which, request):
    ort = pytest.importorskip("onnxruntime")
    ex = request.getfixturevalue(which)
    session = ort.InferenceSession(str(ex.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(["logits"], {"input": ex.x.numpy()})[0])
    assert logits.argmax(1).tolist() == ex.predictions.tolist()
    torch.testing.assert_close(logits, ex.logits, rtol=1e-3, atol=1e-3)
    one = torch.from_numpy(session.run(["logits"], {"input": ex.x[:1].numpy()})[0])
    torch.testing.assert_close(one, ex.logits[:1], rtol=1e-3, atol=1e-3)


def test_safetensors_weights_load_into_a_fresh_model(mnist):
    from safetensors.torch import load_file, load_model

    tensors = load_file(mnist.dir / "model.safetensors")
    assert all(t.dtype in (torch.float32, torch.int64) and t.device.type == "cpu" for t in tensors.values())
    model = build_model(mnist.config, mnist.data.spec)
    load_model(model, mnist.dir / "model.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(mnist.x), mnist.logits)


def test_load_rebuilds_the_model_and_its_preprocessing(mnist):
    model, pre = load(mnist.dir)
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(mnist.x), mnist.logits)
    assert pre["dataset"] == "mnist" and pre["size"] == [28, 28]


def test_a_net_with_a_whitening_layer_set_from_data_loads_with_its_filters(airbench94):
    model, pre = load(airbench94.dir)
    with torch.no_grad():
        torch.testing.assert_close(model(airbench94.x), airbench94.logits)
    stem = model.net[0][0]
    assert torch.equal(stem.weight, copy_model(airbench94.result.model)[0][0].weight)
    assert pre["dataset"] == "cifar10"
    assert "Test-time augmentation (`tta: flip`)" in (airbench94.dir / "README.md").read_text()


def test_config_round_trips_to_the_same_train_config(mnist):
    config, sources = resolve(Layer.yaml_file(mnist.dir / "config.yaml"))
    assert config == mnist.config
    assert sources["lr"].startswith(str(mnist.dir / "config.yaml"))


def _write_pngs(folder: Path, images: torch.Tensor) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, img in enumerate(images):
        array = img.permute(1, 2, 0).squeeze(2).numpy()
        path = folder / f"{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def test_images_load_exactly_as_the_training_data(mnist, cifar, tmp_path):
    for ex in (mnist, cifar):
        paths = _write_pngs(tmp_path / ex.data.spec.name, ex.data.test.x[:8])
        _, pre = load(ex.dir)
        torch.testing.assert_close(load_images(paths, pre), ex.x[:8])


@pytest.mark.parametrize("which", ["mnist", "cifar"])
def test_predict_classifies_png_files(which, request, tmp_path):
    ex = request.getfixturevalue(which)
    n = 40
    paths = _write_pngs(tmp_path / "png", ex.data.test.x[:n])
    results = predict(ex.dir, paths)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    assert [r["index"] for r in results] == ex.predictions[:n].tolist()
    classes = ex.data.spec.classes
    assert [r["label"] for r in results] == [classes[i] for i in ex.predictions[:n].tolist()]
    probs = ex.logits[:n].softmax(1).max(1).values
    assert [r["probability"] for r in results] == pytest.approx(probs.tolist(), abs=1e-4)
    truth = ex.data.test.y[:n].tolist()
    assert sum(r["index"] == y for r, y in zip(results, truth)) >= 0.75 * n
    # A folder stands for the images in it, by name; other files in it are left alone.
    (paths[0].parent / "notes.txt").write_text("not an image")
    by_file = {r["file"]: r for r in results}
    assert predict(ex.dir, [paths[0].parent]) == [by_file[str(p)] for p in sorted(paths)]


def test_predict_of_a_folder_of_class_folders_says_which_are_right_and_the_accuracy(mnist, tmp_path):
    from click.testing import CliRunner

    from cnnbench.cli import main

    n, classes = 60, mnist.data.spec.classes
    truth = [classes[y] for y in mnist.data.test.y[:n].tolist()]
    truth[1] = classes[(int(mnist.predictions[1]) + 1) % 10]  # filed under a class it is not predicted as
    truth[2] = None  # in a folder named after no class
    paths = _write_pngs(tmp_path / "all", mnist.data.test.x[:n])
    labelled = tmp_path / "labelled"  # torchvision's ImageFolder layout, one image a level deeper
    for i, path in enumerate(paths):
        folder = labelled / (truth[i] or "sevens") / ("later" if i == 7 else "")
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / f"{i:02d}.png")
    results = predict(mnist.dir, [labelled])
    assert len(results) == n
    by_name = {Path(r["file"]).name: r for r in results}
    assert [by_name[f"{i:02d}.png"]["truth"] for i in range(n)] == truth
    assert [by_name[f"{i:02d}.png"]["index"] for i in range(n)] == mnist.predictions[:n].tolist()
    res = CliRunner().invoke(main, ["predict", str(mnist.dir), str(labelled)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    right = sum(r["truth"] == r["label"] for r in results)
    assert right < n - 1 and lines[-1] == f"accuracy {right / (n - 1):.4f}: {right} of {n - 1} images right, by " \
        "the class folders they are in; 1 image in no class folder"
    assert sum(line.endswith("  right") for line in lines) == right
    wrong = [r for r in results if r["truth"] not in (None, r["label"])]
    assert wrong and [line for line in lines if "  wrong: " in line] == [
        f"{r['file']}  {r['label']}  (class {r['index']}, p={r['probability']:.3f})  wrong: {r['truth']}"
        for r in wrong]
    # Before the accuracy, a line per class: its images right, and what the others were taken for.
    shown = {line.split(":")[0].removeprefix("class "): line for line in lines if line.startswith("class ")}
    assert list(shown) == [c for c in classes if c in truth] and lines[-len(shown) - 1:-1] == list(shown.values())
    for name, line in shown.items():
        mine = [r for r in results if r["truth"] == name]
        hits = sum(r["label"] == name for r in mine)
        assert line.startswith(f"class {name}: {hits / len(mine):.4f}, {hits} of {len(mine)} images right")
        taken = [f"{r['label']} ({sum(o['label'] == r['label'] for o in mine)})" for r in mine if r["label"] != name]
        assert ("; taken for " in line) == bool(taken)
        assert sorted(line.split("; taken for ")[1].split(", ") if taken else []) == sorted(set(taken))
    res = CliRunner().invoke(main, ["predict", str(mnist.dir), str(labelled / truth[0])])  # one class: no such lines
    assert res.exit_code == 0 and not any(line.startswith("class ") for line in res.output.splitlines())


def test_predict_inverts_dark_ink_and_resizes(mnist, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    paths, truth = [], mnist.data.test.y[:20].tolist()
    for i, img in enumerate(mnist.data.test.x[:20, 0].numpy()):
        inverted = Image.fromarray(255 - img)  # dark ink on light paper
        big = Image.fromarray(img).resize((84, 84), Image.Resampling.NEAREST).convert("RGB")
        inverted.save(folder / f"inv{i}.png")
        big.save(folder / f"big{i}.jpg", quality=95)
        paths += [folder / f"inv{i}.png", folder / f"big{i}.jpg"]
    results = predict(mnist.dir, paths)
    inverted = [r["index"] for r in results[0::2]]
    assert inverted == mnist.predictions[:20].tolist()  # inverting back is exact
    big = [r["index"] for r in results[1::2]]
    assert sum(p == y for p, y in zip(big, truth)) >= 16


def test_predict_resizes_colour_images(cifar, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    paths = []
    for i, img in enumerate(cifar.data.test.x[:20].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).resize((64, 48), Image.Resampling.NEAREST).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    results = predict(cifar.dir, paths)
    truth = cifar.data.test.y[:20].tolist()
    assert sum(r["index"] == y for r, y in zip(results, truth)) >= 14


def _transparent(img: Image.Image, index: int) -> Image.Image:
    img.info["transparency"] = index
    return img


def test_predict_reads_drawings_on_a_transparent_canvas_and_16_bit_grayscale(mnist, cifar, tmp_path):
    import numpy as np

    folder = tmp_path / "drawn"
    folder.mkdir()
    digits = mnist.data.test.x[:12, 0].numpy()
    ways = {  # each MNIST digit saved as a user's drawing tool might save it
        "black-ink-rgba": lambda d: Image.fromarray(np.stack([0 * d, 0 * d, 0 * d, d], -1), "RGBA"),  # a canvas
        "white-ink-rgba": lambda d: Image.fromarray(np.stack([0 * d + 255] * 3 + [d], -1), "RGBA"),
        "black-ink-la": lambda d: Image.fromarray(np.stack([0 * d, d], -1), "LA"),
        "16-bit": lambda d: Image.fromarray(d.astype(np.uint16) * 257),
    }
    _, pre = load(mnist.dir)
    one_level = 1.01 / 255 / pre["std"][0]  # compositing rounds to the nearest level
    for name, make in ways.items():
        paths = []
        for i, d in enumerate(digits):
            paths.append(folder / f"{name}{i}.png")
            make(d).save(paths[-1])
        assert Image.open(paths[0]).mode == {"16-bit": "I;16"}.get(name, name.split("-")[-1].upper())
        torch.testing.assert_close(load_images(paths, pre), mnist.x[:12], atol=one_level, rtol=0, msg=name)
    # Black strokes in a palette image whose other pixels are transparent (a GIF's or an 8-bit PNG's way).
    strokes = (digits >= 128).astype(np.uint8) * 255
    paths = [folder / f"palette{i}.png" for i in range(len(digits))]
    for path, d in zip(paths, strokes):
        _transparent(Image.fromarray(255 - d).convert("P"), 255).save(path)
    assert Image.open(paths[0]).mode == "P"
    mean, std = pre["mean"][0], pre["std"][0]
    torch.testing.assert_close(load_images(paths, pre), (torch.from_numpy(strokes).float()[:, None] / 255 - mean) / std)
    # An opaque image with an alpha channel, and a transparent one, in colour.
    rgb = cifar.data.test.x[:4].permute(0, 2, 3, 1).numpy()
    _, pre = load(cifar.dir)
    paths = [folder / f"opaque{i}.png" for i in range(4)]
    for path, img in zip(paths, rgb):
        Image.fromarray(img).convert("RGBA").save(path)
    torch.testing.assert_close(load_images(paths, pre), cifar.x[:4])
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(folder / "empty.png")
    assert load_images([folder / "empty.png"], pre).unique().numel() == 3  # black in each channel


def test_the_card_s_plain_torch_code_reads_an_image_as_predict_does(mnist, tmp_path):
    # A phone's photo is stored sideways with an EXIF orientation: the card's code must turn it upright too.
    card = (mnist.dir / "README.md").read_text()
    code = card.split("## Use it with plain PyTorch\n\n```python\n")[1].split("```")[0]
    digit = mnist.data.test.x[3, 0].numpy()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise from how it is stored
    Image.fromarray(digit).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "image.png", exif=exif)
    Image.fromarray(digit).save(tmp_path / "upright.png")
    (tmp_path / "model.pt2").write_bytes((mnist.dir / "model.pt2").read_bytes())
    proc = subprocess.run([sys.executable, "-c", code + "print(probabilities.tolist()[0])"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sideways, upright = predict(mnist.dir, [tmp_path / "image.png", tmp_path / "upright.png"])
    assert sideways["index"] == upright["index"] == int(mnist.predictions[3])
    probabilities = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(range(10), key=probabilities.__getitem__) == sideways["index"]
    assert probabilities[sideways["index"]] == pytest.approx(sideways["probability"], abs=1e-4)


def test_predict_refuses_what_is_not_an_image(mnist, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not pixels")
    with pytest.raises(DataError, match=f"not an image: {text}"):
        predict(mnist.dir, [text])
    with pytest.raises(DataError, match="cannot read image"):
        predict(mnist.dir, [tmp_path / "missing.png"])
    # Found before the first image is classified, not after a batch of them has been printed.
    from click.testing import CliRunner

    from cnnbench.cli import main

    good = _write_pngs(tmp_path / "good", mnist.data.test.x[:3])
    for bad in (text, tmp_path / "missing.png"):
        res = CliRunner().invoke(main, ["predict", str(mnist.dir), *map(str, good), str(bad)])
        assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") <= 2, res.output
        assert "p=" not in res.output


def test_load_refuses_a_folder_that_is_not_an_export(mnist, tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        load(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text((mnist.dir / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="lacks model.safetensors, preprocess.json") as err:
        load(partial)
    assert err.value.hint == "give the folder that `export` wrote"
    with pytest.raises(ConfigError, match="lacks model.safetensors, config.yaml") as err:
        load(mnist.dir.parent)  # the folder of the exports, as `cnnbench predict exports x.png` gives it
    assert err.value.hint == f"give the folder that `export` wrote: {mnist.dir}"
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.yaml", "preprocess.json"):
        (bad / name).write_text((mnist.dir / name).read_text())
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot load"):
        load(bad)
    preprocess = json.loads((mnist.dir / "preprocess.json").read_text())
    (bad / "preprocess.json").write_text(json.dumps({**preprocess, "size": [0, 0]}))  # one fix, not two
    with pytest.raises(CheckpointError, match="config.yaml does not describe a model this cnnbench can build: "
                       "the layers cannot take a 1x0x0 input") as err:
        load(bad)
    assert "fix:" not in err.value.message


def test_an_existing_folder_is_refused_unless_overwriting(mnist, tmp_path):
    model, config, spec = mnist.result.model, mnist.config, mnist.data.spec
    out = tmp_path / "out"
    export(model, config, spec, out, metrics={"test_acc": 0.5}, onnx=False)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        export(model, config, spec, out, metrics={"test_acc": 0.75}, onnx=False)
    assert json.loads((out / "metrics.json").read_text()) == {"test_acc": 0.5}
    export(model, config, spec, out, metrics={"test_acc": 0.75}, overwrite=True, onnx=False)
    assert json.loads((out / "metrics.json").read_text()) == {"test_acc": 0.75}
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not part of an export"):
        export(model, config, spec, out, metrics={}, overwrite=True, onnx=False)
    assert (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["out"]  # no temp folders left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(model, config, spec, empty, metrics={}, onnx=False) == empty
    assert (empty / "model.pt2").is_file() and not (empty / "model.onnx").exists()


def test_a_bf16_channels_last_model_is_exported_in_fp32_and_left_as_it_was(mnist, tmp_path):
    from safetensors.torch import load_file

    model = copy_model(mnist.result.model).to(torch.bfloat16).to(memory_format=torch.channels_last)
    out = export(model, mnist.config, mnist.data.spec, tmp_path / "out", metrics={}, onnx=False)
    assert all(t.dtype != torch.bfloat16 for t in load_file(out / "model.safetensors").values())
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(p for p in model.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        assert (program(mnist.x).argmax(1) == mnist.predictions).float().mean() >= 0.95


def test_without_onnx_installed_the_card_says_so(mnist, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = export(mnist.result.model, mnist.config, mnist.data.spec, tmp_path / "out", metrics={})
    assert not (out / "model.onnx").exists()
    assert "not exported: onnx is not installed" in (out / "README.md").read_text()


def test_export_refuses_a_mismatched_spec_and_bad_metrics(mnist, tmp_path):
    with pytest.raises(ConfigError, match="dataset 'mnist' but the spec is for 'cifar10'"):
        export(mnist.result.model, mnist.config, data.DATASETS.get("cifar10"), tmp_path / "a", metrics={})
    with pytest.raises(ConfigError, match="metrics must hold plain values"):
        export(mnist.result.model, mnist.config, mnist.data.spec, tmp_path / "b", metrics={"x": object()})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_model_card_says_when_its_accuracies_were_measured_in_autocast(mnist, tmp_path):
    model, config, spec = mnist.result.model, mnist.config, mnist.data.spec
    for precision in ("bf16", "fp32"):
        out = export(model, config, spec, tmp_path / precision, metrics={"test_acc": 0.5, "precision": precision},
                     onnx=False)
        card = (out / "README.md").read_text()
        assert f"| precision | {precision} |" in card
        assert ("measured as the model trained, in bf16 autocast" in card) == (precision == "bf16")
    assert "autocast" not in (mnist.dir / "README.md").read_text()  # no precision given, nothing said


def test_the_run_s_figures_go_into_the_export_and_its_card(mnist, tmp_path):
    from cnnbench import plots

    d, ev = mnist.data, evaluate(mnist.result.model, mnist.data.test, mnist.data.spec, mnist.config)
    drawn = plots.run_figures(tmp_path / ".", "tiny", mnist.result.history, d.test.x.numpy(), d.test.y.numpy(),
                              ev.predictions.numpy(), ev.confidences.numpy(), d.spec.classes)
    assert [p.name for p in drawn] == list(plots.FIGURES)
    out = export(mnist.result.model, mnist.config, d.spec, tmp_path / "out", metrics={}, figures=drawn, onnx=False)
    for figure in drawn:
        assert (out / figure.name).read_bytes() == figure.read_bytes()
    card = (out / "README.md").read_text()
    assert "## Training" in card
    assert "![loss and accuracy per epoch, training and validation](learning_curves.png)" in card
    assert "| `misclassified.png` | test images classified right (the least confident) and wrong" in card
    plain = (mnist.dir / "README.md").read_text()  # exported without figures
    assert "## Training" not in plain and "learning_curves.png" not in plain
    # An export with figures is still an export: overwriting it is allowed; other files are refused as before.
    export(mnist.result.model, mnist.config, d.spec, out, metrics={}, onnx=False, overwrite=True)
    assert not (out / "misclassified.png").exists()
    with pytest.raises(ConfigError, match="not a figure an export holds: notes.png"):
        export(mnist.result.model, mnist.config, d.spec, tmp_path / "c", metrics={}, figures=[tmp_path / "notes.png"])


def test_the_model_card_names_dataset_accuracy_and_run(mnist):
    card = (mnist.dir / "README.md").read_text()
    acc = json.loads((mnist.dir / "metrics.json").read_text())["test_acc"]
    assert card.startswith("# two_conv on mnist")
    assert "MNIST handwritten digits" in card
    assert f"| test_acc | {acc:.4f} ({acc:.2%}) |" in card
    assert f"{mnist.result.params:,} parameters" in card
    assert "| run_id | 0a1b2c3d4e5f |" in card and "| experiment | tiny-export |" in card
    assert "mean = [0.1307] and std = [0.3081]" in card
    assert 'torch.export.load("model.pt2").module()' in card and "ort.InferenceSession" in card
