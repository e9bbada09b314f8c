"""Goal 4's compute share as Optuna's pruners give it on model learning curves: ``python benchmarks/pruning_model.py``.

No training. Each trial is a learning curve drawn at random, reported to the pruner as a sweep
reports its validation accuracy (halfway through the first epoch, then after every epoch, where
the sweep prunes at half an epoch) and stopped where the pruner says; the share is the epochs
trained over trials x epochs, goal 4's measure (docs/benchmarks.md, section 5),
for the shape of ``benchmarks/efficiency.yaml`` (16 trials of 9 epochs) unless told otherwise.
Two samplers are modelled: one whose trials are independent draws (random search), and one
whose draws get better as the study goes on, as TPE's did in the efficiency benchmark. The
pruners are those ``cnnbench sweep`` builds, and a few settings of successive halving beside the
default; the last row is the least share any pruner could spend on the same curves without ever
losing the best trial (``record_bound``).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import optuna
from cnnbench.space import load_sweep
from cnnbench.sweep import make_pruner

SWEEP = Path(__file__).resolve().parent / "efficiency.yaml"


def share(pruner: optuna.pruners.BasePruner, quality: np.ndarray, epochs: int, noise: np.ndarray,
          steps_per_epoch: int = 1) -> float:
    """Run one study of ``len(quality)`` trials through ``pruner``; return the share of the epochs trained.

    Trial i's value after e epochs is ``quality[i] - 1 / e + noise[i, e - 1]``: each curve rises
    to its trial's quality, and the epoch-to-epoch noise blurs the ranking between trials. With
    ``steps_per_epoch`` 2 the pruner's steps are half epochs and it also sees each trial at half
    an epoch (step 1, the noise of epoch 1), as a sweep with ``prune_at_half_epoch`` reports;
    the last epoch is never pruned, as in a sweep.
    """
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trained = 0.0
    for i, q in enumerate(quality):
        trial = study.ask()
        done = 0.0
        for e in ([0.5] if steps_per_epoch == 2 else []) + list(range(1, epochs + 1)):
            value = float(q - 1 / e + noise[i, max(int(e), 1) - 1])
            trial.report(value, round(e * steps_per_epoch))
            trained, done = trained + e - done, e
            if e < epochs and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    return trained / (len(quality) * epochs)


def record_bound(quality: np.ndarray, epochs: int, noise: np.ndarray, first_check: float = 1.0) -> float:
    """Return the least share a pruner can spend on these curves without ever losing the best trial.

    A pruner sees no later trial, so it keeps the best trial only by training every trial that
    ends better than all before it (a record) to the last epoch; any other trial costs at least
    ``first_check`` epochs, where the pruner first sees it.
    """
    final = quality - 1 / epochs + noise[:, -1]
    records = int(np.sum(final == np.maximum.accumulate(final)))  # the values are continuous: no ties
    return (records * epochs + first_check * (len(quality) - records)) / (len(quality) * epochs)


@click.command()
@click.option("--trials", type=int, help="Trials a study; default: benchmarks/efficiency.yaml's.")
@click.option("--epochs", type=int, help="Epochs a trial; default: benchmarks/efficiency.yaml's.")
@click.option("--studies", default=300, show_default=True, help="Studies drawn for each pruner and sampler.")
@click.option("--improvement", default=1.5, show_default=True,
              help="How much better the learning sampler's last draw is than its first, in standard deviations.")
@click.option("--noise", default=0.2, show_default=True, help="Epoch-to-epoch noise, in the same unit.")
@click.option("--seed", default=0, show_default=True)
def main(trials: int | None, epochs: int | None, studies: int, improvement: float, noise: float, seed: int) -> None:
    """Print the mean, 10th and 90th percentile of the compute share, by pruner and sampler, as Markdown."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sweep, _ = load_sweep(str(SWEEP))
    trials, epochs = trials or sweep.trials, epochs or sweep.epochs
    sweep = sweep.model_copy(update={"trials": trials, "epochs": epochs})
    halving = optuna.pruners.SuccessiveHalvingPruner
    # (builder, steps per epoch): the sweep's pruners with its half-epoch check, then others once an epoch.
    pruners = {
        f"`{sweep.pruner}` (the default: from half an epoch)": (lambda: make_pruner(sweep, 2), 2),
        f"`{sweep.pruner}`, once an epoch (`prune_at_half_epoch: false`)": (lambda: make_pruner(sweep, 1), 1),
        "halving, keeps a third (reduction factor 3), once an epoch":
            (lambda: halving(min_resource=1, reduction_factor=3), 1),
        "halving, keeps a sixth (reduction factor 6), once an epoch":
            (lambda: halving(min_resource=1, reduction_factor=6), 1),
        "halving, prunes the first trial at each rung (bootstrap 1), once an epoch":
            (lambda: halving(min_resource=1, reduction_factor=4, bootstrap_count=1), 1),
        "`hyperband`, from half an epoch": (lambda: make_pruner(sweep.model_copy(update={"pruner": "hyperband"}), 2),
                                            2),
        "`median`, from half an epoch": (lambda: make_pruner(sweep.model_copy(update={"pruner": "median"}), 2), 2),
    }
    samplers = {"independent draws (random search)": 0.0, f"draws improving by {improvement:g} sd": improvement}
    print(f"{trials} trials of {epochs} epochs, {studies} studies each, epoch noise {noise:g} sd, seed {seed}\n")
    print("| Pruner | " + " | ".join(f"{name}: mean (p10-p90)" for name in samplers) + " |")
    print("|---|" + "---:|" * len(samplers))
    measures = {name: (lambda q, e, n, build=build, steps=steps: share(build(), q, e, n, steps))
                for name, (build, steps) in pruners.items()}
    measures["least any pruner can spend without losing the best (every record to the end), first check at half "
             "an epoch"] = lambda q, e, n: record_bound(q, e, n, 0.5)
    measures["the same, first check after one epoch"] = record_bound
    for name, measure in measures.items():
        cells = []
        for gain in samplers.values():
            rng = np.random.default_rng(seed)  # every pruner sees the same curves
            shares = [measure(rng.normal(size=trials) + gain * np.linspace(0, 1, trials), epochs,
                              noise * rng.normal(size=(trials, epochs))) for _ in range(studies)]
            low, high = np.percentile(shares, [10, 90])
            cells.append(f"{100 * np.mean(shares):.1f}% ({100 * low:.0f}-{100 * high:.0f}%)")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
