"""Per-run figures: learning curves, a confusion matrix and a grid of misclassified images.

Figures are drawn with matplotlib's object API (no pyplot state), so they may be drawn from any
thread; the image grid is composed with Pillow, which is much faster than one axes per image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DPI = 80


def learning_curves(history: Sequence, path: str | os.PathLike, title: str) -> Path:
    """Draw loss and accuracy per epoch (train and validation) to the PNG ``path``; return it."""
    epochs = [m.epoch for m in history]
    fig = Figure(figsize=(8, 3.2), dpi=DPI)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [m.train_loss for m in history], "o-", color=PALETTE[0], label="train")
    ax_acc.plot(epochs, [100 * m.train_acc for m in history], "o-", color=PALETTE[0], label="train")
    if history and history[0].val_loss is not None:
        ax_loss.plot(epochs, [m.val_loss for m in history], "s--", color=PALETTE[1], label="validation")
        ax_acc.plot(epochs, [100 * m.val_acc for m in history], "s--", color=PALETTE[1], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.82, wspace=0.28)
    return _save(fig, path)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                     path: str | os.PathLike, title: str) -> Path:
    """Draw the confusion matrix of ``predicted`` against ``truth`` (counts, rows = true class) to ``path``."""
    n = len(classes)
    counts = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    fig = Figure(figsize=(5.4, 4.8), dpi=DPI)
    ax = fig.subplots()
    shown = np.log1p(counts)
    ax.imshow(shown, cmap="Blues")
    for i, j in zip(*np.nonzero(counts)):
        dark = shown[i, j] > 0.6 * shown.max()
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    labels = [c[:10] for c in classes]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.2, top=0.92)
    return _save(fig, path)


def misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  classes: Sequence[str], path: str | os.PathLike, title: str, limit: int = 32,
                  scale: int = 3) -> Path:
    """Draw up to ``limit`` misclassified images (uint8, N x C x H x W), most confident first, to ``path``.

    Each tile is captioned ``true→predicted confidence%``.
    """
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 11)
    wrong = np.flatnonzero(truth != predicted)
    wrong = wrong[np.argsort(-confidence[wrong])][:limit]
    _, _, h, w = images.shape
    cols, caption, pad = 8, 25, 4
    tile_w, tile_h = w * scale + pad, h * scale + caption + pad
    rows = max(1, -(-len(wrong) // cols))
    sheet = Image.new("RGB", (cols * tile_w + pad, rows * tile_h + 24 + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), f"{title}: misclassified test images (true→predicted, confidence)", fill="black", font=font)
    for k, i in enumerate(wrong):
        img = images[i].transpose(1, 2, 0)
        tile = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).convert("RGB")
        x, y = pad + (k % cols) * tile_w, 24 + pad + (k // cols) * tile_h
        sheet.paste(tile.resize((w * scale, h * scale), Image.Resampling.NEAREST), (x, y))
        label = f"{classes[truth[i]][:7]}→{classes[predicted[i]][:7]}"
        draw.text((x, y + h * scale), label, fill=PALETTE[3], font=font)
        draw.text((x, y + h * scale + 11), f"{100 * confidence[i]:.0f}%", fill="black", font=font)
    if not len(wrong):
        draw.text((pad, 30), "no misclassified images", fill="black", font=font)
    path = Path(path)
    sheet.save(path)
    return path


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
