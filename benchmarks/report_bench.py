"""Time ``cnnbench report`` on a large store: ``python benchmarks/report_bench.py [--runs 1000]``.

Writes RUNS trial runs (half MNIST, half CIFAR-10, about 10% pruned and 1% failed, with per-epoch metrics,
every config field as a param and cnnbench's tags) straight into a fresh sqlite MLflow store in a temporary
folder, then times :func:`cnnbench.report.build` end to end on it. The goal is under 10 s for 1,000 runs.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path

import click

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

#: Per dataset: epochs, the architectures with (base accuracy, parameters at width 1), and the baselines.
DATASETS = {
    "mnist": (3, {"vgg": (0.992, 2_800), "two_conv": (0.989, 9_000), "lenet_dropout": (0.987, 1_900),
                  "resnet": (0.993, 4_700)}, ("seed000", "seed001", "seed002", "seed003", "seed004")),
    "cifar10": (10, {"airbench": (0.92, 4_500), "resnet": (0.90, 5_200), "vgg": (0.86, 3_900),
                     "cifar_simple": (0.68, 16_000)}, ("seed003",)),
}
OPTIMIZERS = {"sgd": 0.05, "adamw": 0.003, "adam": 0.002}
SCHEDULERS = {"onecycle": 0.004, "cosine": 0.002, "none": -0.004}
STEP_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "images_per_sec")


def record(root: Path, runs: int, seed: int = 0) -> None:
    """Write ``runs`` trial runs (and a parent sweep run per dataset) into the MLflow store MLFLOW_TRACKING_URI."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    rng = random.Random(seed)
    client = MlflowClient()
    now = int(time.time() * 1000)
    for dataset, (epochs, archs, baselines) in DATASETS.items():
        study = f"{dataset}-bench"
        exp = client.create_experiment(study, tags={"cnnbench": "1"})
        common = {"cnnbench.study": study, "cnnbench.dataset": dataset, "cnnbench.sampler": "tpe",
                  "cnnbench.pruner": "median"}
        parent = client.create_run(exp, run_name=f"sweep-{study}", tags={
            **common, "cnnbench.role": "sweep", "cnnbench.storage": "journal file ./cnnbench-journal.log"}).info.run_id
        for number in range(runs // len(DATASETS)):
            baseline = baselines[number] if number < len(baselines) else ""
            config, acc, n_params = _sample(rng, dataset, epochs, archs, baseline)
            roll = rng.random() if not baseline else 1.0
            state, status = ("FAIL", "FAILED") if roll < 0.01 else ("PRUNED", "KILLED") if roll < 0.11 else (
                "COMPLETE", "FINISHED")
            done = epochs if state == "COMPLETE" else rng.randint(0 if state == "FAIL" else 1, epochs - 1)
            seconds = n_params ** 0.5 * 0.004 * epochs * (256 / config["batch_size"]) ** 0.3 * rng.uniform(0.8, 1.2)
            metrics, best = [], 0.0
            for epoch in range(1, done + 1):
                val = min(0.9999, acc * (1 - 0.6 * math.exp(-1.5 * epoch)) + rng.gauss(0, 0.002))
                best = max(best, val)
                values = {"train_loss": 2.3 * math.exp(-epoch) + (1 - acc), "train_acc": min(1.0, val + 0.01),
                          "val_loss": 2.3 * math.exp(-epoch) + 1.2 * (1 - val), "val_acc": val, "lr": config["lr"],
                          "epoch_seconds": seconds / epochs, "images_per_sec": 54_000 * epochs / seconds}
                metrics += [Metric(k, float(v), now, epoch) for k, v in values.items()]
            reason = ""
            if state == "COMPLETE":
                test = min(0.9999, acc + rng.gauss(0, 0.002))
                finals = {"test_acc": test, "test_loss": 1.2 * (1 - test), "best_val_acc": best,
                          "best_val_loss": 1.2 * (1 - best), "best_epoch": epochs, "params": n_params,
                          "train_seconds": seconds}
                metrics += [Metric(k, float(v), now, 0) for k, v in finals.items()]
            elif state == "PRUNED":
                reason = f"pruned at epoch {done} (val_acc {best:.4f})"
            else:
                reason = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
            tags = {**common, "mlflow.parentRunId": parent, "cnnbench.trial": str(number),
                    "cnnbench.baseline": baseline, "cnnbench.state": state, "cnnbench.reason": reason,
                    "cnnbench.device": "cuda", "cnnbench.precision": "bf16"}
            name = f"trial-{number}" + (f"-{baseline}" if baseline else "")
            run = client.create_run(exp, run_name=name, tags=tags, start_time=now + number).info.run_id
            client.log_batch(run, metrics=metrics, params=[Param(k, str(v)) for k, v in config.items()])
            client.set_terminated(run, status=status)
        client.set_terminated(parent, "FINISHED")


def _sample(rng: random.Random, dataset: str, epochs: int, archs: dict, baseline: str) -> tuple[dict, float, int]:
    arch = rng.choice(sorted(archs))
    optimizer, scheduler = rng.choice(sorted(OPTIMIZERS)), rng.choice(sorted(SCHEDULERS))
    best_lr = OPTIMIZERS[optimizer]
    lr = math.exp(rng.uniform(math.log(best_lr / 30), math.log(best_lr * 30)))
    width, kernel = rng.choice([16, 24, 32, 64]), rng.choice([3, 5])
    base, per_width = archs[arch]
    # Accuracy falls off with the distance of lr from its best value (in decades) and rises a little with width.
    acc = base + SCHEDULERS[scheduler] - 0.03 * math.log10(lr / best_lr) ** 2 + 0.002 * math.log2(width / 16)
    acc = max(0.1, min(0.999, acc + rng.gauss(0, 0.003)))
    n_params = int(per_width * width ** 1.6 * (kernel / 3) ** 2)
    config = {"dataset": dataset, "arch": arch, "kernel_size": kernel, "width": width, "optimizer": optimizer,
              "lr": lr, "weight_decay": 5e-4, "batch_size": rng.choice([64, 128, 256]), "epochs": epochs,
              "label_smoothing": 0.1, "scheduler": scheduler, "warmup_epochs": 0.0, "step_size": 1, "gamma": 0.1,
              "val_fraction": 0.1, "seed": 0, "device": "cuda", "precision": "bf16", "compile": False,
              "eval_batch_size": 1024}
    if optimizer == "sgd":
        config.update(momentum=round(rng.uniform(0.8, 0.95), 3), nesterov=rng.choice([True, False]))
    if baseline:
        acc -= 0.004
    return config, acc, n_params


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", type=click.IntRange(min=2), default=1000, show_default=True, help="Trial runs to record.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Builds to time; the fastest is the figure (the machine may be shared).")
@click.option("--keep", type=click.Path(file_okay=False),
              help="Keep the store and report in this folder, and reuse a store recorded there before.")
def main(runs: int, repeat: int, keep: str | None) -> None:
    """Record RUNS runs in a fresh sqlite MLflow store, then time `report.build` on it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        reuse = (root / "mlflow.db").exists()
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)
        if not reuse:
            start = time.perf_counter()
            record(root, runs)
            click.echo(f"recorded {runs:,} runs in {time.perf_counter() - start:.1f} s")

        from cnnbench import report

        times, cpu = [], []
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            paths = report.build(out_dir=root / "report", echo=lambda _: None)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        recorded = sum(1 for _ in open(paths["csv"][0])) - 1
        size = paths["html"].stat().st_size / 1e6
        # CPU seconds say what the build costs; wall seconds also count waiting for a busy machine's cores.
        click.echo(f"report.build: {recorded:,} runs, 2 datasets, html+md+csv: best {min(times):.2f} s wall "
                   f"({min(cpu):.2f} s CPU), median {sorted(times)[len(times) // 2]:.2f} s wall of {repeat} "
                   f"(goal < 10 s); report.html {size:.1f} MB; load average {os.getloadavg()[0]:.1f} on "
                   f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
