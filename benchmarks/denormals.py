"""What flushing denormals gives the seed way of training: ``python benchmarks/denormals.py``.

cnnbench's commands flush denormal floats to zero (``cnnbench.train.flush_denormals``); the seed projects did
not, and the throughput goal (section 1 of docs/benchmarks.md) measures their loop as they ran it. This trains
one seed's loop in two processes side by side, epoch by epoch: as the seed ran it, and with denormals flushed.
The ratio is how much of the trainer's lead over the seed way that one setting gives.
"""

from __future__ import annotations

import os
import statistics

import click
from cnnbench import config as cfg
from cnnbench import data as datamod

import baseline
import throughput


@click.command()
@click.option("--preset", type=click.Choice(sorted(baseline.RECIPES)), default="seed003", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--data-dir", envvar="CNNBENCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Dataset folder in torchvision's layout [env CNNBENCH_DATA_DIR].")
def main(preset: str, epochs: int, data_dir: str | None) -> None:
    """Print each epoch's images/s of the seed's loop, plain and with denormals flushed, and the test accuracies."""
    config, _ = cfg.resolve(cfg.Layer.preset(preset))
    root = datamod.data_dir(data_dir).resolve()
    loops = {flush: baseline.SeedProcess(preset, root, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                                         threads=throughput.THREADS, flush_denormals=flush) for flush in (False, True)}
    ratios = []
    try:
        for epoch in range(1, epochs + 1):
            rates = {}
            for flush in (False, True) if epoch % 2 else (True, False):
                images, seconds = loops[flush].epoch()
                rates[flush] = images / seconds
            ratios.append(rates[True] / rates[False])
            click.echo(f"{preset} epoch {epoch}: plain {rates[False]:,.0f} images/s, flushed {rates[True]:,.0f} "
                       f"images/s ({ratios[-1]:.2f}x), load {os.getloadavg()[0]:.1f}")
        accuracy = {flush: loop.test_accuracy() for flush, loop in loops.items()}
    finally:
        for loop in loops.values():
            loop.close()
    click.echo(f"median {statistics.median(ratios):.2f}x; test accuracy plain {accuracy[False]:.2%}, "
               f"flushed {accuracy[True]:.2%}")


if __name__ == "__main__":
    main()
