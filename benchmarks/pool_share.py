"""How much of the seed-004 net's training step its max-pools take: ``python benchmarks/pool_share.py``.

The step is timed as the trainer runs it (the precision and layout ``auto`` picks, a batch
already in memory), then the net's two max-pools alone, forward and backward on activations of
the same shapes, dtype and layout. The step less the max-pools bounds what any faster max-pool
kernel could give the throughput goal (section 1 of docs/benchmarks.md).
"""

from __future__ import annotations

import time

import click
import torch
import torch.nn.functional as F
from cnnbench import train

import layout
import throughput


def _seconds(fn, calls: int = 400, rounds: int = 5) -> float:
    """Return the best time of one call of ``fn`` over ``rounds`` rounds of ``calls`` calls, after a warm-up."""
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@click.command()
@click.option("--repeats", default=3, show_default=True, help="Timings of step and max-pools, side by side.")
def main(repeats: int) -> None:
    """Print the step's time, its max-pools' time, and the images/s of the step without them."""
    torch.set_num_threads(throughput.THREADS)
    train.keep_freed_memory()
    train.flush_denormals()
    fmt, precision = layout.auto_way()
    step, x, y = layout.training_step(layout.preset_config("seed004"), fmt, precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    memory = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    # The maps the seed-004 net pools: 32 channels at 28x28, then 64 at 12x12.
    maps = [torch.randn(len(x), c, s, s, dtype=dtype).contiguous(memory_format=memory).requires_grad_()
            for c, s in ((32, 28), (64, 12))]
    grads = [torch.randn(len(x), m.shape[1], m.shape[2] // 2, m.shape[3] // 2, dtype=dtype).contiguous(
        memory_format=memory) for m in maps]

    def pools() -> None:
        for m, g in zip(maps, grads):
            F.max_pool2d(m, 2).backward(g)
            m.grad = None

    click.echo(f"seed004, batch {len(x)}, {fmt} {precision}, {throughput.THREADS} threads")
    for _ in range(repeats):
        whole, pooled = _seconds(lambda: step(x, y)), _seconds(pools)
        click.echo(f"step {whole * 1e3:.2f} ms ({len(x) / whole:,.0f} images/s); the max-pools alone, forward and "
                   f"backward: {pooled * 1e3:.2f} ms ({100 * pooled / whole:.0f}%); the step without them "
                   f"{(whole - pooled) * 1e3:.2f} ms ({len(x) / (whole - pooled):,.0f} images/s)")


if __name__ == "__main__":
    main()
