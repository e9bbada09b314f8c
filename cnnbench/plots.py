"""Per-run figures: learning curves, a confusion matrix and a grid of misclassified images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DPI = 90


def learning_curves(history: Sequence, path: str | os.PathLike, title: str) -> Path:
    """Draw loss and accuracy per epoch (train and validation) to the PNG ``path``; return it."""
    epochs = [m.epoch for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=DPI)
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
    return _save(fig, path)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                     path: str | os.PathLike, title: str) -> Path:
    """Draw the confusion matrix of ``predicted`` against ``truth`` (counts, rows = true class) to ``path``."""
    n = len(classes)
    counts = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=DPI)
    shown = np.log1p(counts)
    ax.imshow(shown, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                dark = shown[i, j] > 0.6 * shown.max()
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    labels = [c[:10] for c in classes]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return _save(fig, path)


def misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  classes: Sequence[str], path: str | os.PathLike, title: str, limit: int = 24) -> Path:
    """Draw up to ``limit`` misclassified images (uint8, N x C x H x W), most confident first, to ``path``."""
    wrong = np.flatnonzero(truth != predicted)
    wrong = wrong[np.argsort(-confidence[wrong])][:limit]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.35 + 0.4), dpi=DPI, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        img = images[i].transpose(1, 2, 0)
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None)
        ax.set_title(f"{classes[truth[i]][:8]}→{classes[predicted[i]][:8]}\n{100 * confidence[i]:.0f}%", fontsize=6.5)
    if not len(wrong):
        axes.flat[0].text(0, 0.5, "no misclassified images", fontsize=9)
    fig.suptitle(f"{title} (true→predicted, confidence)", fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
