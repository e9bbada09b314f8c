"""What each test-time augmentation gives ``cifar10_airbench``, on one set of weights: ``python benchmarks/tta.py``.

Trains the preset for ``--epochs`` (4: what fits G's 10 minutes, section 5 of docs/benchmarks.md) with a
checkpoint, or reuses the checkpoint a finished run left, then evaluates its final weights on the test set with
no TTA, ``flip`` and ``flip_shift`` in turn, ``--repeats`` times, timing each evaluation.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from cnnbench import data as datamod
from cnnbench import train
from cnnbench.config import TrainConfig

import suite

PRESET = "cifar10_airbench"
TTAS = ("none", "flip", "flip_shift")


@click.command()
@click.option("--epochs", default=4, show_default=True, help="Epochs of the training run.")
@click.option("--repeats", default=2, show_default=True, help="Evaluations with each TTA, alternating.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              default=suite.RESULTS / "tta-checkpoint.pt", show_default=True,
              help="The run's checkpoint: reused when it holds all the epochs.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="CNNBENCH_DATA_DIR",
              help="Dataset folder in torchvision's layout [env CNNBENCH_DATA_DIR].")
def main(epochs: int, repeats: int, checkpoint: Path, data_dir: str | None) -> None:
    """Print the test accuracy and evaluation time of the run's final weights with each TTA."""
    root = datamod.data_dir(data_dir).resolve()
    state = train.load_checkpoint(checkpoint) if checkpoint.exists() else None
    if state is None or len(state["history"]) != epochs:
        checkpoint.unlink(missing_ok=True)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        summary, command = suite.train_cli(suite.Context(root, False), PRESET, "--epochs", str(epochs),
                                           "--checkpoint", str(checkpoint))
        click.echo(f"{command}: {100 * summary['test_acc']:.2f}% test with tta {summary['config']['tta']}, "
                   f"{summary['train_seconds']:.0f} s of training")
        state = train.load_checkpoint(checkpoint)
    config = TrainConfig(**state["config"])
    data = datamod.load(config.dataset, root, val_fraction=config.val_fraction)
    device = train.resolve_device("cpu")
    precision = train.resolve_precision(config.precision, device)
    model = train.build_model(config, data.spec)
    if train.uses_channels_last(device, precision):
        model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(state["model"])
    click.echo(f"{PRESET}, {epochs} epochs, final weights, {len(data.test):,} test images, {precision}")
    for _ in range(repeats):
        for tta in TTAS:
            start = time.perf_counter()
            result = train.evaluate(model, data.test, data.spec, config.model_copy(update={"tta": tta}),
                                    device=device, precision=precision)
            click.echo(f"  {tta:<11} {100 * result.acc:6.2f}%  {time.perf_counter() - start:5.1f} s")


if __name__ == "__main__":
    main()
