"""Whether splitting the seed-004 step across the cores would pay: ``python benchmarks/core_split.py``.

Times the seed-004 net's training step as the trainer runs it (one process, every core's thread, the
preset's batch of 64), then the same step on half the batch in two processes at once, one thread
each: data parallelism over the two cores, without the gradient exchange it would need each step.
Rounds alternate the two ways. The two processes' images/s together, against the one process's,
bound what such a trainer could give the throughput goal (section 1 of docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import torch

HERE = Path(__file__).resolve().parent


def _rate(threads: int, batch: int, seconds: float) -> float:
    """Return the images/s of the seed-004 step at ``batch`` with ``threads`` threads (in this process)."""
    from cnnbench import train

    import layout

    torch.set_num_threads(threads)
    train.keep_freed_memory()
    train.flush_denormals()
    fmt, precision = layout.auto_way()
    return layout.images_per_sec(layout.preset_config("seed004", batch_size=batch), fmt, precision, seconds)


def _spawn(threads: int, batch: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", f"{threads},{batch},{seconds}"],
                            stdout=subprocess.PIPE, text=True, cwd=HERE)


@click.command()
@click.option("--rounds", default=3, show_default=True, help="Rounds of the two ways, side by side.")
@click.option("--seconds", default=5.0, show_default=True, help="Timing of each step, after its warm-up.")
@click.option("--child", hidden=True)
def main(rounds: int, seconds: float, child: str | None) -> None:
    """Print one process's images/s, two half-batch processes' together, and their ratio, each round."""
    if child:
        threads, batch, secs = child.split(",")
        print(_rate(int(threads), int(batch), float(secs)))
        return
    import throughput

    cores = throughput.THREADS
    click.echo(f"seed004: one process of {cores} threads at batch 64 against {cores} processes of one thread "
               f"at batch {64 // cores}, at once")
    for n in range(rounds):
        whole = _spawn(cores, 64, seconds)
        one = float(whole.communicate()[0])
        halves = [_spawn(1, 64 // cores, seconds) for _ in range(cores)]
        split = sum(float(p.communicate()[0]) for p in halves)
        click.echo(f"round {n + 1}: one process {one:,.0f} images/s, split {split:,.0f} images/s: "
                   f"{split / one:.2f}x")


if __name__ == "__main__":
    main()
