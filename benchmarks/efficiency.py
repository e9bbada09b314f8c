"""Goal 4: the default sampler and pruner against random search without pruning, same trials and seed.

Both sweeps of ``benchmarks/efficiency.yaml`` run through the command line, each in a fresh
folder; compute is the number of epochs trained (pruned trials stop early), accuracy the best
trial's validation and test accuracy. ``python benchmarks/run.py --only efficiency`` runs the
file as it is (16 trials, seed 0); ``python benchmarks/efficiency.py --trials 50 --seed 1`` runs
the same pair of sweeps at another size or seed and saves it apart
(``results/efficiency-50-s1.json``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import suite
from suite import Context, Figure, Record

SWEEP = Path(__file__).resolve().parent / "efficiency.yaml"
MAX_COMPUTE_SHARE, MAX_LOSS_POINTS = 0.30, 0.1


def _sweep(ctx: Context, *flags: str) -> tuple[dict, str]:
    """Run the sweep with ``flags`` in a fresh folder; return its epochs, best accuracies and seconds."""
    import optuna

    from cnnbench.sweep import steps_per_epoch

    folder = Path(tempfile.mkdtemp(prefix="cnnbench-efficiency-"))
    env = {**os.environ, "CNNBENCH_DATA_DIR": str(ctx.data_root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["sweep", str(SWEEP), *flags, *(["--trials", "4", "--epochs", "3"] if ctx.quick else [])]
    try:  # the folder, whose store holds every trial's model, goes once the study is read
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnbench", *args], cwd=folder, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "cnnbench-journal.log")))
        study = optuna.load_study(study_name="efficiency", storage=storage)
        trials = study.trials
        steps = steps_per_epoch(study)  # with 2, a trial stopped at step 1 trained half an epoch
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]

    def best_epoch(t) -> float:
        return max((v for step, v in t.intermediate_values.items() if step % steps == 0), default=0.0)

    best = max(done, key=best_epoch)
    return {
        "epochs": sum(max(t.intermediate_values, default=0) for t in done) / steps,
        "trials": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
        "best_val_acc": best_epoch(best),
        "best_test_acc": best.user_attrs.get("test_acc"),
        "best_trial": best.number,
        "seconds": seconds,
    }, shlex.join(["cnnbench", *args])


def run(ctx: Context, trials: int | None = None, seed: int | None = None) -> Record:
    """Run both sweeps (the file's trials and seed unless given); return their compute and best accuracy, and the
    goals' verdicts."""
    flags = [*(["--trials", str(trials)] if trials else []), *(["--seed", str(seed)] if seed is not None else [])]
    pruned, command = _sweep(ctx, *flags)
    plain, plain_command = _sweep(ctx, *flags, "--sampler", "random", "--pruner", "none")
    name = "efficiency" + (f"-{trials}" if trials else "") + (f"-s{seed}" if seed is not None else "")
    record = Record(name, suite.machine(), [], {"default": pruned, "random_unpruned": plain})
    share = pruned["epochs"] / plain["epochs"]
    loss = 100 * (plain["best_val_acc"] - pruned["best_val_acc"])
    both = f"{command}  vs  {plain_command}"
    record.figures += [
        Figure("default sampler and pruner: epochs trained", pruned["epochs"], "epochs", "", None, command),
        Figure("random search, no pruning: epochs trained", plain["epochs"], "epochs", "", None, plain_command),
        Figure("compute share (epochs, default / random unpruned)", 100 * share, "%",
               f"<= {100 * MAX_COMPUTE_SHARE:g}", ctx.judge(share <= MAX_COMPUTE_SHARE), both),
        Figure("default sampler and pruner: best validation accuracy", 100 * pruned["best_val_acc"], "%", "", None,
               command),
        Figure("random search, no pruning: best validation accuracy", 100 * plain["best_val_acc"], "%", "", None,
               plain_command),
        Figure("best accuracy lost by pruning (validation)", loss, "points", f"<= {MAX_LOSS_POINTS:g}",
               ctx.judge(loss <= MAX_LOSS_POINTS), both),
        Figure("wall time, default / random unpruned", pruned["seconds"] / plain["seconds"], "x", "", None, both),
    ]
    return record


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--trials", type=click.IntRange(min=2), help="Trials in each sweep; default: the file's (16).")
@click.option("--seed", type=click.IntRange(min=0), help="The sweeps' seed; default: the file's (0).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Dataset folder in torchvision's layout [env CNNBENCH_DATA_DIR].")
def main(trials: int | None, seed: int | None, data_dir: str | None) -> None:
    """Run the default sweep and the random unpruned one side by side; save and print their figures."""
    import json

    from cnnbench import data as datamod
    from cnnbench import train
    from run import markdown

    train.flush_denormals()  # as the commands do
    record = run(Context(datamod.data_dir(data_dir).resolve(), False), trials, seed)
    click.echo(markdown(json.loads(suite.save(record, False).read_text())))


if __name__ == "__main__":
    main()
