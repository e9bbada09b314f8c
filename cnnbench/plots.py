"""Per-run figures: learning curves, a confusion matrix and a grid of misclassified images.

Every trial of a sweep draws all three, so they are made cheap (docs/benchmarks.md, overhead): the
curves with matplotlib's object API (no pyplot state), on a figure each thread keeps and redraws;
the confusion matrix and the image grid composed with Pillow, about ten times faster than
matplotlib. PNGs are written with light compression: a few KB larger, twice as fast to write.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

#: Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DPI = 80
#: The figures of every trained run (a sweep's trials in MLflow, exports), by file name.
FIGURES = ("learning_curves.png", "confusion_matrix.png", "misclassified.png")
#: Per thread, the learning-curve figures :func:`learning_curves` redraws (matplotlib figures are not thread-safe).
_templates = threading.local()


def learning_curves(history: Sequence, path: str | os.PathLike, title: str, *, label_smoothing: float = 0.0) -> Path:
    """Draw loss and accuracy per epoch (train and validation) to the PNG ``path``; return it.

    ``label_smoothing`` is the training loss's, named on the loss panel: it lifts that loss's floor (about 0.5
    at 0.1 on ten classes) above the validation loss, which is measured without it.
    """
    with_val = bool(history) and history[0].val_loss is not None
    # Each thread keeps its figure and redraws it with new data: a fresh one costs twice the time, most
    # of it making axes and ticks (every trial of a sweep draws one; docs/benchmarks.md).
    templates = _templates.__dict__.setdefault("curves", {})
    if with_val not in templates:
        templates[with_val] = _curves_template(with_val)
    fig, canvas, axes, lines = templates[with_val]
    epochs = [m.epoch for m in history]
    series = [[m.train_loss for m in history], [100 * m.train_acc for m in history]]
    if with_val:
        series += [[m.val_loss for m in history], [100 * m.val_acc for m in history]]
    for line, values in zip(lines, series):
        line.set_data(epochs, values)
    for ax in axes:
        ax.relim()
        ax.autoscale_view()
    axes[0].set_title(f"Loss (train with label smoothing {label_smoothing:g})" if label_smoothing else "Loss", y=1.0)
    fig.suptitle(title)
    path = Path(path)
    canvas.print_png(str(path), pil_kwargs={"compress_level": 1})
    return path


def _curves_template(with_val: bool):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: importing plots stays light (exports)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    lines = [ax_loss.plot([], [], "o-", color=PALETTE[0], label="train")[0],
             ax_acc.plot([], [], "o-", color=PALETTE[0], label="train")[0]]
    if with_val:
        lines += [ax_loss.plot([], [], "s--", color=PALETTE[1], label="validation")[0],
                  ax_acc.plot([], [], "s--", color=PALETTE[1], label="validation")[0]]
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    # Titles at a set height, where matplotlib would place them anyway (no ticks on top): the same pixels, and
    # each draw skips measuring the axes' decorations to place them, a tenth of the figure's time.
    ax_acc.set_title("Accuracy", y=1.0)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # one epoch: the tick 1, not 0.96
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.82, wspace=0.28)
    return fig, canvas, (ax_loss, ax_acc), lines


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                     path: str | os.PathLike, title: str) -> Path:
    """Draw the confusion matrix of ``predicted`` against ``truth`` (counts, rows = true class) to ``path``.

    Cells are shaded by the logarithm of their count, so the few errors show beside the large diagonal;
    counts are written in the cells while they fit. Returns the path.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    n = len(classes)
    counts = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    font = _font(11)
    cell = max(6, min(36, 420 // n))
    labels = [c[:10] for c in classes]
    label_room = max(int(font.getlength(c)) for c in labels) + 6 if cell >= 12 else 6  # class names, if shown
    margin_left, margin_top, margin_bottom = 26 + label_room, 28, 24 + label_room
    width = margin_left + n * cell + 12
    sheet = Image.new("RGB", (max(width, int(font.getlength(title)) + 16), margin_top + n * cell + margin_bottom),
                      "white")
    shown = np.log1p(counts) / max(np.log1p(counts).max(), 1e-9)
    heat = (colormaps["Blues"](shown)[..., :3] * 255).astype(np.uint8)
    sheet.paste(Image.fromarray(heat).resize((n * cell, n * cell), Image.Resampling.NEAREST), (margin_left, margin_top))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), title, fill="black", font=font)
    if cell >= 12:
        small = _font(max(7, min(11, cell // 3)))
        for i, j in zip(*np.nonzero(counts)):
            draw.text((margin_left + j * cell + cell / 2, margin_top + i * cell + cell / 2), str(counts[i, j]),
                      fill="white" if shown[i, j] > 0.6 else "black", font=small, anchor="mm")
        for k, label in enumerate(labels):
            draw.text((margin_left - 6, margin_top + k * cell + cell / 2), label, fill="black", font=font, anchor="rm")
            _vertical_text(sheet, label, (margin_left + k * cell + cell // 2, margin_top + n * cell + 6), font)
    _vertical_text(sheet, "true class", (8, margin_top + n * cell // 2), font, centre=True)
    draw.text((margin_left + n * cell / 2, sheet.height - 6), "predicted class", fill="black", font=font, anchor="md")
    path = Path(path)
    sheet.save(path, compress_level=1)
    return path


def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _vertical_text(sheet, text: str, at: tuple[int, int], font, centre: bool = False) -> None:
    """Write ``text`` on ``sheet`` reading upwards, its end at ``at`` (its middle with ``centre``)."""
    from PIL import Image, ImageDraw

    box = font.getbbox(text)
    label = Image.new("L", (box[2] + 2, box[3] + 2), 0)
    ImageDraw.Draw(label).text((1, 1), text, fill=255, font=font)
    label = label.rotate(90, expand=True)
    x = at[0] - label.width // 2
    y = at[1] - label.height // 2 if centre else at[1]
    sheet.paste(Image.new("RGB", label.size, "black"), (x, y), label)


def misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  classes: Sequence[str], path: str | os.PathLike, title: str, limit: int = 32,
                  scale: int = 3, right: int = 8) -> Path:
    """Draw up to ``limit`` misclassified images (uint8, N x C x H x W), most confident first, under a row of
    ``right`` correctly classified ones, the least confident first, to ``path``; return it.

    Each tile is captioned ``true→predicted confidence%`` (the right ones ``true confidence%``).
    """
    from PIL import Image, ImageDraw

    font = _font(11)
    wrong = np.flatnonzero(truth != predicted)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    good = np.flatnonzero(truth == predicted)
    good = good[np.argsort(confidence[good], kind="stable")][:right]
    _, _, h, w = images.shape
    cols, caption, pad, label = 8, 25, 4, 18
    tile_w, tile_h = w * scale + pad, h * scale + caption + pad
    top = 24 + label + tile_h + label  # the title, the right row with its label, the wrong rows' label
    rows = max(1, -(-len(wrong) // cols))
    sheet = Image.new("RGB", (cols * tile_w + pad, top + rows * tile_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), f"{title}: test predictions", fill="black", font=font)

    def tiles(indices: np.ndarray, y0: int, colour: str, arrow: bool) -> None:
        for k, i in enumerate(indices):
            img = images[i].transpose(1, 2, 0)
            tile = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).convert("RGB")
            x, y = pad + (k % cols) * tile_w, y0 + (k // cols) * tile_h
            sheet.paste(tile.resize((w * scale, h * scale), Image.Resampling.NEAREST), (x, y))
            text = f"{classes[truth[i]][:7]}→{classes[predicted[i]][:7]}" if arrow else classes[truth[i]][:15]
            draw.text((x, y + h * scale), text, fill=colour, font=font)
            draw.text((x, y + h * scale + 11), f"{100 * confidence[i]:.0f}%", fill="black", font=font)

    draw.text((pad, 24), f"right, the least confident first ({len(good)} of {int((truth == predicted).sum()):,}):",
              fill="black", font=font)
    tiles(good, 24 + label, PALETTE[2], arrow=False)
    y_wrong = 24 + label + tile_h
    draw.text((pad, y_wrong), f"wrong, the most confident first ({len(wrong)} of {int((truth != predicted).sum()):,};"
              " true→predicted):", fill="black", font=font)
    tiles(wrong, top, PALETTE[3], arrow=True)
    if not len(wrong):
        draw.text((pad, top + 6), "no misclassified images", fill="black", font=font)
    path = Path(path)
    sheet.save(path, compress_level=1)
    return path


def run_figures(folder: str | os.PathLike, title: str, history: Sequence, images: np.ndarray, truth: np.ndarray,
                predicted: np.ndarray, confidence: np.ndarray, classes: Sequence[str], *,
                label_smoothing: float = 0.0) -> list[Path]:
    """Draw a run's learning curves, test-set confusion matrix and misclassified test images into ``folder``,
    named as in :data:`FIGURES`; return the paths drawn.

    A figure that fails is named in a warning on stderr, not raised: the run it shows is trained by then.
    """
    folder = Path(folder)
    drawers = (lambda path: learning_curves(history, path, title, label_smoothing=label_smoothing),
               lambda path: confusion_matrix(truth, predicted, classes, path, f"{title}: test set"),
               lambda path: misclassified(images, truth, predicted, confidence, classes, path, title))
    drawn = []
    for name, draw in zip(FIGURES, drawers):
        try:
            drawn.append(draw(folder / name))
        except Exception as err:  # noqa: BLE001 - a figure never fails a trained run
            print(f"warning: {name} of {title} was not drawn: {type(err).__name__}: {err}", file=sys.stderr)
    return drawn
