"""The per-trial figures: what they show, and that a figure that fails to draw never fails a trial."""

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from cnnbench import plots
from cnnbench.train import EpochMetrics


def _darkness(path) -> float:
    return 255 - float(np.asarray(Image.open(path).convert("L")).mean())


def test_the_confusion_matrix_is_shaded_by_count_and_sized_by_classes(tmp_path):
    truth = np.repeat(np.arange(10), 50)
    right = plots.confusion_matrix(truth, truth, [str(i) for i in range(10)], tmp_path / "right.png", "all right")
    wrong = plots.confusion_matrix(truth, np.zeros_like(truth), [str(i) for i in range(10)], tmp_path / "wrong.png",
                                   "all class 0")
    with Image.open(right) as a, Image.open(wrong) as b:
        assert a.size == b.size and a.mode == "RGB"
        # Ten dark cells on the diagonal, or ten in the first column: the same ink, in other places.
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).sum() > 0
    assert _darkness(right) == pytest.approx(_darkness(wrong), rel=0.05)
    many = plots.confusion_matrix(np.arange(100), np.arange(100), [f"c{i}" for i in range(100)],
                                  tmp_path / "many.png", "a hundred classes")
    with Image.open(many) as c, Image.open(right) as a:
        assert c.width > a.width and c.height > a.height


def test_learning_curves_and_the_misclassified_grid_are_drawn(tmp_path):
    history = [EpochMetrics(e, 1 / e, 0.9, 1 / e, 0.9, 0.1, 1.0, 100.0) for e in (1, 2, 3)]
    curves = plots.learning_curves(history, tmp_path / "curves.png", "three epochs")
    with Image.open(curves) as img:
        assert img.width > 100 and img.height > 50
    # Four images, each one grey level; 0 and 2 right, 1 and 3 wrong.
    grey = np.array([40, 90, 140, 190], dtype=np.uint8)
    images = np.broadcast_to(grey[:, None, None, None], (4, 1, 28, 28)).copy()
    truth, predicted, confidence = np.array([0, 1, 2, 3]), np.array([0, 2, 2, 0]), np.array([0.9, 0.6, 0.5, 0.8])
    grid = plots.misclassified(images, truth, predicted, confidence, [str(i) for i in range(10)],
                               tmp_path / "grid.png", "two wrong")
    sheet = np.asarray(Image.open(grid).convert("L"))
    tile, right_row, wrong_row = 28 * 3, 24 + 18, 24 + 18 + (28 * 3 + 25 + 4) + 18

    def centre(row: int, k: int) -> int:
        return int(sheet[row + tile // 2, 4 + k * (tile + 4) + tile // 2])

    assert [centre(right_row, 0), centre(right_row, 1)] == [140, 40]  # right: the least confident first
    assert [centre(wrong_row, 0), centre(wrong_row, 1)] == [190, 90]  # wrong: the most confident first
    assert centre(right_row, 2) == 255  # only two right ones: the rest of the row is blank
    none = plots.misclassified(images, np.arange(4), np.arange(4), confidence, [str(i) for i in range(10)],
                               tmp_path / "none.png", "none wrong")
    assert Image.open(none).size == Image.open(grid).size  # one row of right ones, one (empty) of wrong ones


def test_the_epoch_axis_has_whole_epochs_even_for_one(tmp_path):
    for epochs in (1, 2, 14):
        history = [EpochMetrics(e, 1 / e, 0.9, 1 / e, 0.9, 0.1, 1.0, 100.0) for e in range(1, epochs + 1)]
        plots.learning_curves(history, tmp_path / "curves.png", f"{epochs} epochs")
        _, _, axes, _ = plots._templates.curves[True]  # the figure just drawn (each thread keeps its own)
        for ax in axes:
            low, high = ax.get_xlim()
            shown = [t for t in ax.get_xticks() if low <= t <= high]
            assert shown and all(float(t).is_integer() for t in shown), (epochs, shown)


def test_the_loss_panel_names_the_label_smoothing_and_the_next_figure_does_not_keep_it(tmp_path):
    history = [EpochMetrics(e, 0.5 + 1 / e, 0.9, 1 / e, 0.9, 0.1, 1.0, 100.0) for e in (1, 2, 3)]
    plain = plots.learning_curves(history, tmp_path / "plain.png", "t").read_bytes()
    smoothed = plots.learning_curves(history, tmp_path / "smoothed.png", "t", label_smoothing=0.1).read_bytes()
    again = plots.learning_curves(history, tmp_path / "again.png", "t").read_bytes()
    assert smoothed != plain and again == plain  # each figure is redrawn on one kept template


def test_a_figure_that_fails_to_draw_warns_and_the_trial_completes_with_the_others(tmp_path, tiny_data, monkeypatch, capsys):
    from cnnbench import space, sweep

    def broken(*args, **kwargs):
        raise RuntimeError("no ink")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(plots, "learning_curves", broken)
    definition = space.Sweep(dataset="mnist", study="figures", trials=2, epochs=1, sampler="random", pruner="none",
                             fixed={"arch": "two_conv", "width": 4, "batch_size": 32, "val_fraction": 0.2,
                                    "device": "cpu"},
                             space={"lr": {"low": 1e-3, "high": 1e-2, "log": True}}, tracking={"log_model": "none"})
    outcome = sweep.run(definition, data_dir=str(tiny_data), progress=False, echo=lambda _: None)
    assert outcome.complete == 2
    assert capsys.readouterr().err.count("warning: learning_curves.png of figures trial") == 2
    client = MlflowClient()
    study = optuna.load_study(study_name="figures", storage=sweep.open_storage(None))
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["cnnbench.state"] == "COMPLETE"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {  # the other figures are drawn
            "config.json", "model.safetensors", "confusion_matrix.png", "misclassified.png"}
