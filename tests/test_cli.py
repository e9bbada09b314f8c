import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnnbench.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_train_json_reports_the_results(tiny_data):
    res = run("train", "mnist", "--data-dir", str(tiny_data), "--arch", "two_conv", "--width", "8",
              "--epochs", "2", "--batch-size", "32", "--lr", "3e-3", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("test_acc", "val_acc", "epochs", "train_seconds", "images_per_sec", "params"):
        assert key in out
    assert out["epochs"] == 2 and out["test_acc"] > 0.5 and out["params"] > 0
    assert out["config"]["lr"] == 3e-3


def test_train_prints_epochs_and_test_accuracy(tiny_data):
    res = run("train", "cifar10", "--data-dir", str(tiny_data), "--arch", "cifar_simple", "--epochs", "1",
              "--batch-size", "32")
    assert res.exit_code == 0, res.output
    assert "epoch   1" in res.output and "test accuracy" in res.output


def test_train_warns_that_mirrored_digits_are_not_digits(tiny_data):
    res = run("train", "mnist", "--data-dir", str(tiny_data), "--arch", "two_conv", "--width", "4", "--epochs", "1",
              "--batch-size", "64", "--augment", "crop_flip", "--tta", "flip", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert ("warning: augment 'crop_flip' and tta 'flip' mirror images, but a mirrored mnist image is not of its "
            "class: expect lower accuracy") in res.output and "test accuracy" in res.output
    for dataset, args in (("mnist", ["--augment", "affine"]), ("cifar10", ["--tta", "flip"])):
        res = run("train", dataset, "--data-dir", str(tiny_data), "--arch", "two_conv", "--width", "4",
                  "--epochs", "1", "--batch-size", "64", "--device", "cpu", *args)
        assert res.exit_code == 0 and "warning" not in res.output, res.output


def test_train_from_a_preset_and_a_config_file(tiny_data, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 1\nbatch_size: 20\n")
    res = run("train", "--preset", "seed004", "--config", str(path), "--data-dir", str(tiny_data), "--width", "4",
              "--json")
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)["config"]
    assert (cfg["arch"], cfg["batch_size"], cfg["epochs"], cfg["width"]) == ("two_conv", 20, 1, 4)


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tiny_data, tmp_path, monkeypatch):
    import cnnbench.data

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "afile").write_text("in the way")
    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the output was checked"))
    for args, source in [(["train", "mnist", "--export", "afile/model"], "--export"),
                         (["train", "mnist", "--checkpoint", "afile/run.ckpt"], "--checkpoint"),
                         (["report", "--out", "afile/report"], "--out")]:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        assert res.output.startswith(f"error: {source}: ") and f"{work / 'afile'} is a file" in res.output
    assert sorted(p.name for p in work.iterdir()) == ["afile"]


def test_train_says_it_resumes_a_checkpoint_and_refuses_one_of_other_settings(tiny_data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    args = ["train", "mnist", "--data-dir", str(tiny_data), "--arch", "two_conv", "--width", "4", "--epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--checkpoint", str(ckpt)]
    first = run(*args)
    assert first.exit_code == 0 and "resuming" not in first.output, first.output
    again = run(*args)
    assert again.exit_code == 0 and f"resuming from {ckpt}: 1 of 1 epochs done" in again.output, again.output
    assert again.output.splitlines()[-1] == first.output.splitlines()[-1]  # the same run, not trained again
    res = CliRunner().invoke(main, args + ["--lr", "0.5"])
    assert res.exit_code == 2 and res.output.startswith(f"error: --checkpoint: {ckpt} holds a run with other "
                                                        "settings: lr "), res.output


def test_train_refuses_a_checkpoint_inside_its_export_folder_before_training(tmp_path, monkeypatch):
    # It trained, then could not export into a folder holding the checkpoint: the run's time lost, and the same
    # command refused from then on.
    import cnnbench.data

    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the check"))
    for ckpt in ("out/run.ckpt", "out/deeper/run.ckpt"):
        res = CliRunner().invoke(main, ["train", "--preset", "seed002", "--checkpoint", ckpt, "--export", "out"])
        assert res.exit_code == 2 and res.output == (
            f"error: --checkpoint: {ckpt} lies in the export folder out, which the export must have to itself\n"
            "  fix: keep the checkpoint outside out\n"), res.output
    assert not (tmp_path / "out").exists()


def test_train_given_a_sweep_file_as_its_config_says_so(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dataset: mnist\ntrials: 3\nspace: {lr: {low: 0.01, high: 0.1}}\n")
    res = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert res.exit_code == 2, res.output
    assert res.output == f"error: {path} is a sweep file, not a training config\n  fix: run it: cnnbench sweep {path}\n"


def test_train_refuses_fp16_on_the_cpu_before_loading_data(monkeypatch):
    import cnnbench.data

    monkeypatch.setattr(cnnbench.data, "load", lambda *a, **k: pytest.fail("data loaded before the check"))
    res = CliRunner().invoke(main, ["train", "mnist", "--device", "cpu", "--precision", "fp16"])
    assert res.exit_code == 2 and res.output.startswith("error: fp16 autocast is not supported on the CPU"), res.output


def test_a_folder_that_refuses_writes_is_named_with_the_reason(tmp_path, monkeypatch):
    import tempfile

    from cnnbench.paths import unwritable

    folder = tmp_path / "out"
    folder.mkdir()
    assert unwritable(folder / "new" / "deeper") is None and list(folder.iterdir()) == []  # the probe leaves nothing

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert unwritable(folder / "new") == f"cannot write in {folder}: Permission denied"


def test_a_file_written_whole_keeps_the_umask_s_permissions_and_leaves_no_temp_file(tmp_path):
    import os

    from cnnbench.paths import write_whole

    folder = tmp_path / "out"  # of its own: tmp_path holds the bf16 measurement's cache where the CPU has bf16
    folder.mkdir()
    old = os.umask(0o022)
    try:
        path = write_whole(folder / "report.md", "# é\n")
    finally:
        os.umask(old)
    assert path.read_text(encoding="utf-8") == "# é\n" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in folder.iterdir()] == ["report.md"]


def test_a_full_disk_during_an_export_is_one_line_and_leaves_no_folder(tiny_data, tmp_path, monkeypatch):
    # torch.export's own file writer aborted the whole process ("terminate called after throwing an instance of
    # 'c10::Error'", exit 134); safetensors said "SafetensorError: Error while serializing: I/O error".
    import errno

    import cnnbench.export

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cnnbench.export, "_save_program", full)
    target = tmp_path / "fast"
    res = CliRunner().invoke(main, ["train", "mnist", "--data-dir", str(tiny_data), "--arch", "two_conv", "--width",
                                    "4", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--export",
                                    str(target)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.splitlines()[-2:] == ["error: no space left on the disk: [Errno 28] No space left on device",
                                            "  fix: free some space, then run the same command again"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


def test_train_exports_a_model_that_predicts_and_refuses_a_used_folder_before_training(tiny_data, tmp_path):
    import torch

    from cnnbench import data
    from cnnbench.export import load

    target = tmp_path / "fast"
    args = ["train", "mnist", "--data-dir", str(tiny_data), "--arch", "two_conv", "--width", "4", "--epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--export", str(target)]
    res = run(*args, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["export"] == str(target)
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx(out["test_acc"]) and metrics["params"] == out["params"]
    assert metrics["data_digest"] == out["data_digest"] == data.load("mnist", tiny_data).digest  # what it was on
    card = (target / "README.md").read_text()
    assert "not made from a tracked run" in card and f"| data_digest | {out['data_digest']} |" in card
    assert {"learning_curves.png", "confusion_matrix.png", "misclassified.png"} <= {p.name for p in target.iterdir()}
    model, _ = load(target)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == out["params"]
    before = (target / "model.safetensors").read_bytes()
    res = CliRunner().invoke(main, args)  # the folder holds an export: refused before any epoch
    assert res.exit_code == 2 and "--export" in res.output and "--overwrite" in res.output
    assert "epoch" not in res.output and (target / "model.safetensors").read_bytes() == before
    res = CliRunner().invoke(main, ["train", "mnist", "--overwrite"])
    assert res.exit_code == 2 and res.output.startswith("error: --overwrite: given without --export")
    res = CliRunner().invoke(main, ["train", "mnist", "--export", ""])
    assert res.exit_code == 2 and res.output.startswith("error: --export: empty folder name")
    res = run(*args, "--overwrite", "--seed", "1")
    assert res.exit_code == 0 and f"exported to {target}" in res.output
    assert (target / "model.safetensors").read_bytes() != before


def test_predict_of_a_dataset_s_folder_gives_the_accuracy_on_its_test_and_training_images_apart(tmp_path,
                                                                                               monkeypatch):
    import shutil

    from conftest import forget_folders, write_folder

    from cnnbench import data

    root = write_folder(tmp_path / "bugs", n_train=60, n_test=15)
    flat = shutil.copytree(root / "train", tmp_path / "flat")  # class folders alone: a share set apart for testing
    target = tmp_path / "ex"
    res = run("train", f"folder:{flat}", "--arch", "two_conv", "--width", "4", "--epochs", "2", "--batch-size", "16",
              "--device", "cpu", "--precision", "fp32", "--export", str(target), "--json")
    assert res.exit_code == 0, res.output
    trained = json.loads(res.output)
    held = len(data.load(f"folder:{flat}", val_fraction=0).test)
    forget_folders()  # as a new command starts
    res = run("predict", "--json", str(target), str(flat))
    assert res.exit_code == 0, res.output
    results = json.loads(res.output)
    test = [r for r in results if r["part"] == "test"]
    assert len(results) == 60 and len(test) == held and {r["part"] for r in results} == {"test", "train"}
    assert all(Path(r["file"]).parent.name == r["truth"] for r in results)
    right = sum(r["truth"] == r["label"] for r in test)
    assert right / held == pytest.approx(trained["test_acc"], abs=1e-6)  # the images it was tested on, and no others
    lines = run("predict", str(target), str(flat)).output.splitlines()
    assert lines[-2] == f"accuracy {right / held:.4f}: {right} of {held} test images right, by the class folders " \
        "they are in"
    assert lines[-1].startswith("accuracy ") and lines[-1].endswith(f" of {60 - held} training images right, by the "
                                                                    "class folders they are in")
    per_class = [line for line in lines if line.startswith("class ")]  # of the test images alone
    assert len(per_class) == len({r["truth"] for r in test}) > 1 and lines[-2 - len(per_class):-2] == per_class
    assert all(" test images right" in line for line in per_class)
    monkeypatch.chdir(flat)  # the folder spelled otherwise: the same images set apart
    forget_folders()
    res = run("predict", "--json", str(target), ".")
    assert res.exit_code == 0, res.output
    parts = {str(Path(r["file"]).relative_to(flat)): r["part"] for r in results}
    assert {r["file"]: r["part"] for r in json.loads(res.output)} == parts
    monkeypatch.chdir(tmp_path)
    # The same images elsewhere are not what it trained on: all of them are only of their classes.
    other = shutil.copytree(flat, tmp_path / "other")
    lines = run("predict", str(target), str(other)).output.splitlines()
    assert lines[-1].endswith(" of 60 images right, by the class folders they are in")
    assert sum(line.startswith("accuracy ") for line in lines) == 1
    # A folder holding train/ and test/ is a dataset's, whichever model: its parts apart, whatever else it holds.
    (root / "notes").mkdir()
    shutil.copy(next((root / "test" / "bee").iterdir()), root / "notes" / "bee.png")
    lines = run("predict", str(target), str(root)).output.splitlines()
    assert lines[-2].endswith(" of 15 test images right, by the class folders they are in")
    assert lines[-1].endswith(" of 60 training images right, by the class folders they are in; 1 image in no class "
                              "folder")
    lines = run("predict", str(target), str(root / "test")).output.splitlines()
    assert lines[-1].endswith(" of 15 images right, by the class folders they are in")
    assert sum(line.startswith("accuracy ") for line in lines) == 1
    # Its folders say which image is of which class and part, even where it could not be trained on as it is.
    (root / "train" / "wasp").mkdir()
    forget_folders()
    lines = run("predict", str(target), str(root)).output.splitlines()
    assert lines[-2].endswith(" of 15 test images right, by the class folders they are in")


@pytest.mark.parametrize("args,expected", [
    (["--arch", "resnett"], "error: --arch: unknown architecture 'resnett'"),
    (["--arch", "four_conv", "--kernel-size", "7"], "kernel"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "inf"], "error: --lr: lr = inf: Input should be a finite number"),  # it diverged in epoch 1
    (["--weight-decay", "nan"], "error: --weight-decay: weight_decay = nan: Input should be a finite number"),
    (["--seed", "-1"], "error: --seed: seed = -1: Input should be greater than or equal to 0"),
    (["--seed", str(2**80)], "less than or equal to 4294967295"),  # torch's seeding raised an OverflowError
    (["--optimizer", "adam", "--momentum", "0.9"], "error: --momentum: optimizer 'adam' does not take momentum"),
    (["--optimizer", "sgd", "--nesterov"], "error: --nesterov: nesterov needs momentum > 0"),
    (["--scheduler", "cosin"], "error: --scheduler: unknown scheduler 'cosin'"),
    (["--optimizer", "sgdd"], "error: --optimizer: unknown optimizer 'sgdd'"),
    # Without a validation split these would quietly do nothing.
    (["--val-fraction", "0", "--patience", "2"], "error: --patience: patience stops training on the validation"),
    (["--preset", "cifar10_airbench", "--scheduler", "plateau"], "error: --scheduler: the plateau schedule lowers"),
    (["--augment", "rotat"], "error: --augment: unknown augmentation 'rotat'"),
    (["--epochs", "0"], "--epochs"),
    (["--preset", "seed005"], "error: --preset: unknown preset 'seed005'"),
    (["--config", "missing.yaml"], "missing.yaml"),
    # Empty values were taken as not given (the defaults trained), or named no flag.
    (["--preset", ""], "error: --preset: unknown preset ''"),
    (["--device", ""], "error: --device: unknown device ''"),
    (["--checkpoint", ""], "error: --checkpoint: empty file name"),
    # Devices torch knows but trains on nowhere here (meta trained into a traceback; cpu:99 trained on the CPU).
    (["--device", "meta"], "error: --device: unknown device 'meta'"),
    (["--device", "cpu:99"], "error: --device: unknown device 'cpu:99'"),
    (["--width", "100000"], "error: architecture 'two_conv' (width 100000) is too large to build in this machine's "
     "memory: one of its tensors alone takes 670.6 GiB"),
    (["--val-fraction", "0.999"], "error: val_fraction 0.999 of mnist's 400 training images leaves none to train on"),
    (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tiny_data, args, expected):
    res = CliRunner().invoke(main, ["train", "mnist", "--data-dir", str(tiny_data), *args])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output and "epoch   1" not in res.output
    assert len(res.output.strip().splitlines()) <= 2


def test_a_bad_setting_in_a_config_file_names_its_line(tiny_data, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: mnist\nepochs: 1\narch: vgga\n")
    res = CliRunner().invoke(main, ["train", "--config", str(path), "--data-dir", str(tiny_data)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {path}:3: unknown architecture 'vgga'"), res.output
    path.write_text("dataset: mnist\noptimizer: adamw\nmomentum: 0.9\n")
    res = CliRunner().invoke(main, ["train", "--config", str(path), "--data-dir", str(tiny_data)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {path}:3: optimizer 'adamw' does not take"), res.output


def test_unknown_dataset_and_missing_data_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["train", "mnits", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "did you mean 'mnist'" in res.output
    assert res.output.startswith("error: unknown dataset 'mnits'"), res.output  # an argument: no --dataset flag
    res = CliRunner().invoke(main, ["train", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1"])
    assert res.exit_code == 2


@pytest.mark.parametrize("args,first", [  # click's own words, which differ a little between its releases
    (["train", "mnist", "--batch-size", "many"], ["error: Invalid value for '--batch-size'", "'many'"]),
    (["sweep", "mnist", "--trails", "5"], ["error: No such option", "--trails", "Did you mean", "--trials"]),
    (["swep", "mnist"], ["error: No such command", "swep"]),
    (["--bogus", "list"], ["error: No such option", "--bogus"]),
    (["predict"], ["error: Missing argument 'EXPORT_DIR'."]),
])
def test_click_usage_errors_are_two_lines_as_cnnbench_s_own_and_exit_2(args, first):
    res = CliRunner().invoke(main, args, prog_name="cnnbench")
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(first[0]) and all(f in lines[0] for f in first), res.output
    command = " ".join(["cnnbench"] + [a for a in args[:1] if not a.startswith("-") and a != "swep"])
    assert lines[1].startswith(f"  usage: {command} [OPTIONS]") and f"`{command} --help` for more" in lines[1]


def test_bare_cnnbench_shows_the_help():
    res = CliRunner().invoke(main, [])
    assert "Commands:" in res.output and "sweep" in res.output and not res.output.startswith("error")


def test_predict_from_a_folder_that_is_no_export_exits_2(tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(b"")
    for folder in (tmp_path / "nowhere", tmp_path):
        res = CliRunner().invoke(main, ["predict", str(folder), str(image)])
        assert res.exit_code == 2, res.output
        assert str(folder) in res.output and "Traceback" not in res.output


def test_predict_a_folder_without_images_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._digit.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's resource fork beside a copied image
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "export"), str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: no images in folder {tmp_path}\n") and "Traceback" not in res.output


def test_an_export_of_images_read_at_a_size_given_says_it_and_stays_out_of_their_folder(tmp_path):
    from conftest import write_folder

    root = write_folder(tmp_path / "bugs", n_train=30, n_test=6)
    args = ["train", f"folder:{root}@24x16", "--arch", "two_conv", "--width", "4", "--epochs", "1", "--batch-size",
            "16", "--device", "cpu"]
    inside = root / "test" / "ex"  # where its folder would be read as a class of the images the next time
    res = run(*args, "--export", str(inside))
    assert res.exit_code == 2 and res.output.startswith(f"error: --export: {inside} lies in {root}, the folder of "
                                                        "images the model is trained on"), res.output
    assert "epoch" not in res.output and not inside.exists()
    res = run(*args, "--export", str(tmp_path / "ex"))
    assert res.exit_code == 0, res.output
    card = (tmp_path / "ex" / "README.md").read_text()  # 24 wide and 16 high, as @24x16 says, everywhere
    assert "36 resized to 24x16)" in card and "resized to 24x16 (width x height, bilinear)" in card
    assert ".resize((24, 16), " in card and ".view(16, 24, 1)" in card


def test_list_shows_every_registry():
    res = run("list")
    assert res.exit_code == 0
    for title in ("architectures:", "optimizers:", "schedulers:", "datasets:", "presets:", "tv:*"):
        assert title in res.output
    res = run("list", "optimizers")
    assert "adadelta" in res.output and "architectures" not in res.output
    res = CliRunner().invoke(main, ["list", "architecture"])
    assert res.exit_code == 2 and res.output.endswith("fix: did you mean 'architectures'?\n"), res.output


def test_list_answers_from_its_cache_without_torch(tmp_path):
    code = ("import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
            "r = CliRunner().invoke(main, ['list']); assert r.exit_code == 0, r.output; "
            "print('torch' in sys.modules); print(r.output, end='')")

    def list_in_a_fresh_process() -> tuple[bool, str]:
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        imported, _, listing = out.partition("\n")
        return imported == "True", listing

    first, second = list_in_a_fresh_process(), list_in_a_fresh_process()
    assert first[0] and not second[0]  # the first run fills the registries, the second reads the cache
    assert first[1] == second[1] == run("list").output
    assert len(list((tmp_path / "cache" / "catalog").glob("*.json"))) == 1


def test_help_imports_nothing_heavy():
    code = ("import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'mlflow', 'optuna', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_best_reads_the_study_without_torch_or_mlflow(tmp_path):
    # It imported the sweep, and with it torch and MLflow: 4 s for a table of the journal's trials.
    import optuna

    from cnnbench.storage import DEFAULT_JOURNAL, open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(None), direction="maximize")
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=lr, value=0.98,
                                              user_attrs={"best_val_acc": 0.98, "test_acc": 0.975}))
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.5}, distributions=lr,
                                              state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={"reason": "pruned at half of epoch 1 (val_acc 0.8168)"}))
    code = ("import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
            "r = CliRunner().invoke(main, ['best', '--json']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'mlflow') if m in sys.modules]; assert not heavy, heavy; print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert [(row["trial"], row["lr"], row["test_acc"]) for row in json.loads(out)] == [(0, 0.1, 0.975)]
    assert Path(DEFAULT_JOURNAL).is_file()
    res = CliRunner().invoke(main, ["best", "--trial", "1"])
    assert res.exit_code == 2 and res.output.startswith(
        "error: --trial: trial 1 of study 's' was pruned at half of epoch 1 (val_acc 0.8168): only a complete trial")


def test_best_says_which_trials_tie_with_the_best(tmp_path):
    import optuna

    from cnnbench.storage import open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(None), direction="maximize")
    study.set_user_attr("cnnbench.sweep", {"objective": ["val_acc"]})
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}
    for value in (0.75, 28 / 36, 0.5, 28 / 36, 28 / 36):  # 36 validation images: ties are common
        study.add_trial(optuna.trial.create_trial(params={"lr": value / 2}, distributions=lr, value=value,
                                                  user_attrs={"best_val_acc": value}))
    res = CliRunner().invoke(main, ["best", "--json"])
    assert res.exit_code == 0 and [row["trial"] for row in json.loads(res.stdout)] == [1, 3, 4, 0, 2]
    assert res.stderr == "note: trials 1, 3 and 4 tie at the best val_acc, 0.7778; the first, trial 1, is taken as " \
        "the best (--trial N takes another)\n"
    assert CliRunner().invoke(main, ["best", "--trial", "3"]).stderr == ""  # one trial asked for: nothing to tell
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.45}, distributions=lr, value=0.9))
    res = CliRunner().invoke(main, ["best"])
    assert res.exit_code == 0 and res.stderr == "" and res.stdout.splitlines()[2].startswith("5 ")


def test_best_says_when_the_best_leads_by_one_validation_image(tmp_path):
    import struct

    import optuna

    from cnnbench.storage import DATA_ATTR, open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(None), direction="maximize")
    study.set_user_attr("cnnbench.sweep", {"objective": ["val_acc"]})
    study.set_user_attr(DATA_ATTR, {"train": 1600})  # a tenth for validation: 160 images
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}

    def add(right: int, fraction: float = 0.1) -> None:
        value = struct.unpack("f", struct.pack("f", right / 160))[0]  # as a float32 accuracy is stored
        study.add_trial(optuna.trial.create_trial(params={"lr": right / 1000}, distributions=lr, value=value,
                                                  user_attrs={"config": {"val_fraction": fraction}}))

    for right in (158, 159, 150, 158):
        add(right)
    res = CliRunner().invoke(main, ["best"])
    assert res.exit_code == 0 and res.stderr == (
        "note: trial 1 leads trials 0 and 3 by one of its 160 validation images (0.9937 against 0.9875): a lead this "
        "small may not hold on other images (--trial N takes another)\n")
    add(160)  # trial 4 leads trial 1 by one image
    assert CliRunner().invoke(main, ["best"]).stderr.startswith("note: trial 4 leads trial 1 by one of its 160 ")
    add(160, fraction=0.2)  # a tie is told as a tie
    assert CliRunner().invoke(main, ["best"]).stderr.startswith("note: trials 4 and 5 tie at the best val_acc")
    study = optuna.create_study(study_name="t", storage=open_storage(None), direction="maximize")
    study.set_user_attr("cnnbench.sweep", {"objective": ["val_acc"]})
    study.set_user_attr(DATA_ATTR, {"train": 1600})
    add(157)
    add(159)
    assert CliRunner().invoke(main, ["best", "--study", "t"]).stderr == ""  # two images ahead
    add(158, fraction=0.2)
    assert CliRunner().invoke(main, ["best", "--study", "t"]).stderr == ""  # the next measured on other images


def test_lists_in_messages_read_as_a_sentence_and_stop_after_a_few():
    from cnnbench.errors import listed

    assert [listed(range(n)) for n in (0, 1, 2, 3)] == ["", "0", "0 and 1", "0, 1 and 2"]
    assert listed(range(6)) == "0, 1, 2, 3, 4 and 5" and listed(range(9)) == "0, 1, 2, 3, 4, 5 and 3 more"
    assert listed(["a", "b", "c", "d"], 3, "or") == "a, b, c or 1 more" and listed("ab", 3, "or") == "a or b"


def test_best_in_a_store_that_holds_none_of_the_study_s_runs_leaves_every_trial_in(tmp_path):
    # Runs removed by `mlflow gc` are left out; a store holding none of the study's runs is another store, whose
    # experiment of the same name says nothing of them (an export says the weights are not there).
    import optuna
    from mlflow import MlflowClient

    from cnnbench.storage import open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(None), direction="maximize")
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}
    for i, value in enumerate((0.98, 0.97)):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.1 * (i + 1)}, distributions=lr, value=value,
                                                  user_attrs={"best_val_acc": value, "mlflow_run_id": f"run{i}"}))
    client = MlflowClient("sqlite:///mlflow.db")
    client.create_run(client.create_experiment("s"))
    res = CliRunner().invoke(main, ["best", "--json"])
    assert res.exit_code == 0 and res.stderr == "", res.output
    assert [row["trial"] for row in json.loads(res.stdout)] == [0, 1]


def test_report_on_an_empty_store_says_so_and_bad_flags_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["report", "--format", "pdf"])
    assert res.exit_code == 2 and "pdf" in res.output
    res = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "rep")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Nothing is recorded yet" in res.output
    assert (tmp_path / "rep" / "report.html").exists()
    assert not (tmp_path / "mlflow.db").exists()  # reading creates no store


def test_a_bad_sweep_file_is_refused_before_optuna_and_mlflow_are_imported(tmp_path):
    # The sweep module (Optuna, MLflow) was imported before the file was read: 5.3-5.9 s to an error, now 2.4 s.
    (tmp_path / "bad.yaml").write_text("dataset: mnist\nspace:\n  kernel_size: {choices: [3, 99]}\n")
    code = ("import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
            "r = CliRunner().invoke(main, ['sweep', 'bad.yaml']); assert r.exit_code == 2, r.output; "
            "heavy = [m for m in ('mlflow', 'optuna', 'torch._dynamo') if m in sys.modules]; assert not heavy, heavy; "
            "print(r.output, end='')")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.startswith("error: bad.yaml:3: no architecture in the space can be built for mnist with kernel_size 99")
    assert not {"cnnbench-journal.log", "mlflow.db"} & {p.name for p in tmp_path.iterdir()}  # no study, no store
