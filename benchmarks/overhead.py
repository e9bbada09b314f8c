"""Per-trial framework overhead: 1-epoch MNIST trials through a sweep against the same training alone.

``python benchmarks/overhead.py [--repeats 7] [--trials 5]``. Both ways run alternately in this one
process on the same data, ``--trials`` trainings at a time: (A) ``fit`` then ``evaluate`` on the
test set, which any trial does; (B) as many more trials of a prepared study, through the sweep's
ask/tell loop (one ``sweep.work`` call, as a worker runs them), so with Optuna, MLflow (run, params,
per-epoch metrics, tags, status), the figures and the weights.

Two figures: the framework's share of each tracked trial, (B - time B spent in ``fit`` and
``evaluate``, less the sweep's per-epoch hook and checkpoint inside ``fit``) / B, timed inside
the same trials, so untouched by how fast training happened to run (the goal is judged on its
median); and the side-by-side check (B - A) / B for each pair of timings, whose spread shows how
much training speed itself varies from one timing to the next.
What a sweep pays once (process start, imports, data load, the stores, the end-of-sweep summary)
is in the wall time of a whole sweep (``benchmarks/sweep_bench.py``), not here.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

RECIPE = {"arch": "vgg", "width": 16, "depth": 1, "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
          "nesterov": True, "weight_decay": 5e-4, "batch_size": 128, "scheduler": "onecycle",
          "label_smoothing": 0.1, "val_fraction": 0.1}


@click.command()
@click.option("--repeats", default=7, show_default=True, help="Timings each way.")
@click.option("--trials", default=5, show_default=True, help="Trials (and plain trainings) in each timing.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [env CNNBENCH_DATA_DIR].")
def main(repeats: int, trials: int, data_dir: str | None) -> None:
    """Print and save the median trial time each way and the overhead share."""
    import torch

    from cnnbench import config, data, space, sweep, train
    from cnnbench.train import evaluate, fit

    torch.set_num_threads(2)
    work_dir = Path(tempfile.mkdtemp(prefix="cnnbench-overhead-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)  # its store holds nothing the figures need
    os.chdir(work_dir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir / 'mlflow.db'}"
    cfg = config.validate({**RECIPE, "dataset": "mnist", "epochs": 1})
    mnist = data.load("mnist", data_dir, val_fraction=cfg.val_fraction)
    # Each trial draws its own lr within 1% of the recipe's (which costs nothing to train with), so that none
    # repeats an earlier one: a repeat is pruned as its duplicate, untrained.
    near = {"lr": {"low": 0.99 * RECIPE["lr"], "high": 1.01 * RECIPE["lr"]}}
    definition = space.Sweep(dataset="mnist", study="overhead", trials=1, epochs=1, sampler="random",
                             pruner="none", fixed={k: v for k, v in RECIPE.items() if k != "lr"}, space=near)
    sweep.run(definition, data_dir=data_dir, progress=False, echo=lambda _: None)  # creates study, warms up

    inside = [0.0]  # seconds the tracked trials spent training and evaluating, not in the sweep's hooks

    def timed(fn, sign=1):
        def call(*args, **kwargs):
            for hook in ("on_epoch_end", "on_half_epoch"):  # the sweep's hooks (MLflow, Optuna) run inside fit
                if kwargs.get(hook) is not None:
                    kwargs[hook] = timed(kwargs[hook], -1)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                inside[0] += sign * (time.perf_counter() - t)
        return call

    sweep.fit, sweep.evaluate = timed(sweep.fit), timed(sweep.evaluate)
    train.save_checkpoint = timed(train.save_checkpoint, -1)  # written for the sweep's resume, inside fit
    plain, tracked, framework = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        for _ in range(trials):
            result = fit(cfg, mnist)
            evaluate(result.model, mnist.test, mnist.spec, cfg)
        plain.append((time.perf_counter() - t0) / trials)
        more = definition.model_copy(update={"trials": definition.trials + (i + 1) * trials})
        inside[0] = 0.0
        t0 = time.perf_counter()
        sweep.work(more, data_dir=data_dir)
        wall = time.perf_counter() - t0
        tracked.append(wall / trials)
        framework.append((wall - inside[0]) / wall)
        print(f"repeat {i + 1}: plain {plain[-1]:.2f}s, tracked trial {tracked[-1]:.2f}s (per trial), "
              f"framework {1000 * (wall - inside[0]) / trials:.0f} ms of it ({100 * framework[-1]:.1f}%)", flush=True)
    states = [t.state.name for t in sweep.open_study(definition).get_trials(deepcopy=False)]
    if states.count("COMPLETE") != len(states):  # else some timings were of trials that did not train
        raise SystemExit(f"only {states.count('COMPLETE')} of {len(states)} trials completed")
    a, b = statistics.median(plain), statistics.median(tracked)
    paired = [(t - p) / t for p, t in zip(plain, tracked)]  # each timing against the plain one just before it
    share = statistics.median(framework)
    figures = {"plain_seconds": a, "tracked_seconds": b, "overhead_share": share, "overhead_share_each": framework,
               "paired_share": statistics.median(paired), "paired_share_each": paired,
               "plain_all": plain, "tracked_all": tracked, "load_average": os.getloadavg(),
               "trials_per_timing": trials,
               "command": f"python benchmarks/overhead.py --repeats {repeats} --trials {trials}"}
    print(f"median: framework {100 * share:.1f}% of a tracked trial (goal <= 3%); side by side: plain {a:.2f}s, "
          f"tracked {b:.2f}s per trial, paired overheads {min(paired):+.1%} to {max(paired):+.1%}, "
          f"median {statistics.median(paired):+.1%}")
    # Not results/overhead.json: that is where `benchmarks/run.py` saves its record of these figures.
    out = Path(__file__).resolve().parent / "results" / f"overhead-{repeats}x{trials}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
