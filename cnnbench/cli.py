"""The ``cnnbench`` command line. Heavy imports happen inside commands so ``--help`` answers at once."""

from __future__ import annotations

import collections
import json
import math
import sys
import time

import click

from cnnbench.errors import CnnbenchError, disk_full, listed, no_space, redact


# Bare `cnnbench` shows the help (an error since click 8.2); that stays click's to print.
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(err: click.UsageError) -> Exception:
    """Print click's usage error as cnnbench prints its own, in two lines (not click's four); return exit 2."""
    if isinstance(err, _HELP):
        return err
    usage = err.ctx.get_usage().removeprefix("Usage: ") if err.ctx else "cnnbench"
    path = err.ctx.command_path if err.ctx else "cnnbench"
    click.echo(f"error: {err.format_message()}\n  usage: {usage}  (`{path} --help` for more)", err=True)
    return click.exceptions.Exit(err.exit_code)


class _Group(click.Group):
    """Turns cnnbench's errors into one or two lines and the documented exit codes."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:  # cnnbench's own options
            raise _usage_error(err) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a command's options and arguments, or an unknown command
            raise _usage_error(err) from None
        except CnnbenchError as err:
            if ctx.meta.get("cnnbench.debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except Exception as err:  # a full disk, wherever it stopped a write: nothing recorded before is lost
            full = disk_full(err)
            if full is None or ctx.meta.get("cnnbench.debug"):
                raise
            resume = ctx.meta.get("cnnbench.resume")
            click.echo(f"error: {no_space(full)}\n  fix: free some space, then run "
                       f"{resume + ' to resume' if resume else 'the same command again'}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt as err:
            code = getattr(err, "exit_code", 130)
            resume = ctx.meta.get("cnnbench.resume")
            click.echo("interrupted" + (f"; to resume, run {resume}" if resume else ""), err=True)
            ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="cnnbench")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Find the best CNN for an image-classification task, with every run recorded."""
    ctx.meta["cnnbench.debug"] = debug


@main.command("list")
@click.argument("kind", required=False)
def list_(kind: str | None) -> None:
    """List what the registries hold: architectures, optimizers, schedulers, datasets, ..."""
    from cnnbench.catalog import summaries

    everything = summaries()
    regs = everything if kind is None else {k: v for k, v in everything.items() if k == kind}
    if not regs:
        from cnnbench.registry import unknown_name

        raise unknown_name("registry", kind, list(everything))
    for title, rows in regs.items():
        click.echo(f"{title}:")
        pad = max(len(n) for n, _ in rows)
        for name, summary in rows:
            click.echo(f"  {name:<{pad}}  {summary}")


def _train_options(f):
    opts = [
        click.option("--arch", help="Architecture name (see `cnnbench list architectures`)."),
        click.option("--optimizer", help="Optimizer name."),
        click.option("--lr", type=float, help="Learning rate."),
        click.option("--weight-decay", type=float, help="Weight decay."),
        click.option("--momentum", type=float, help="Momentum (sgd, rmsprop)."),
        click.option("--nesterov/--no-nesterov", default=None, help="Nesterov momentum (sgd)."),
        click.option("--batch-size", type=int, help="Training batch size."),
        click.option("--epochs", type=int, help="Number of epochs."),
        click.option("--kernel-size", type=int, help="Convolution kernel size."),
        click.option("--width", type=int, help="Channels of the first convolution."),
        click.option("--depth", type=int, help="Blocks or layers per stage (resnet, vgg)."),
        click.option("--dropout", type=float, help="Dropout rate."),
        click.option("--pool-first/--no-pool-first", default=None,
                     help="Max-pool right after each stage's first conv (vgg): a quarter of the work after it."),
        click.option("--scheduler", help="Learning-rate schedule name."),
        click.option("--lookahead/--no-lookahead", default=None,
                     help="From 30% of the steps on, every 5 steps move the weights to their running average."),
        click.option("--augment", help="Augmentation name (default: the dataset's)."),
        click.option("--val-fraction", type=float, help="Share of the training set held out for validation."),
        click.option("--patience", type=int, help="Stop after this many epochs without a better validation accuracy."),
        click.option("--seed", type=int, help="Random seed."),
        click.option("--device", help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
                     help="Numeric precision; auto: bf16 on CUDA and on CPUs where it measures faster, else fp32."),
        click.option("--tta", type=click.Choice(["none", "flip", "flip_shift"]),
                     help="Test-time augmentation: average the logits over mirrored (and shifted) views."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command()
@click.argument("dataset", required=False)
@click.option("--preset", help="Start from a named preset, e.g. seed004 (see `cnnbench list presets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Start from a YAML config file.")
@_train_options
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [env CNNBENCH_DATA_DIR].")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Save each epoch here; resume from it if it exists (a run of the same settings).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Export the trained model to DIR, as `cnnbench best --export` does (untracked run).")
@click.option("--overwrite", is_flag=True, help="With --export: replace an earlier export in DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results.")
def train(dataset, preset, config_file, data_dir, checkpoint, export_dir, overwrite, as_json, **flags) -> None:
    """Train one configuration on DATASET and report its test accuracy.

    DATASET is a name from `cnnbench list datasets`, or folder:PATH for your own images in
    PATH/train/CLASS/ and PATH/test/CLASS/, or in PATH/CLASS/ (20% of each class set apart for
    testing); folder:PATH@64 reads them at 64x64. Settings come from the defaults, then --preset,
    then --config, then the flags you give.
    """
    from pathlib import Path

    from cnnbench import config as cfg
    from cnnbench import cores
    from cnnbench import data as datamod
    from cnnbench import train as trainer
    from cnnbench.errors import ConfigError
    from cnnbench.paths import data_dir as data_folder
    from cnnbench.paths import unwritable

    trainer.flush_denormals()
    if checkpoint == "":
        raise ConfigError("empty file name", source="--checkpoint", hint="name the file to save checkpoints to")
    if overwrite and not export_dir:
        raise ConfigError("given without --export", source="--overwrite", hint="add --export DIR")
    if export_dir == "":
        raise ConfigError("empty folder name", source="--export", hint="name the folder to export to")
    if checkpoint and export_dir and Path(export_dir).resolve() in Path(checkpoint).resolve().parents:
        raise ConfigError(f"{checkpoint} lies in the export folder {export_dir}, which the export must have to itself",
                          source="--checkpoint", hint=f"keep the checkpoint outside {export_dir}")
    if checkpoint and (why := unwritable(Path(checkpoint).parent)):
        raise ConfigError(f"cannot save checkpoints to {checkpoint}: {why}", source="--checkpoint",
                          hint="choose another file")
    layers = []
    if preset is not None:
        try:
            layers.append(cfg.Layer.preset(preset))
        except ConfigError as err:
            err.source = err.source or "--preset"
            raise
    if config_file:
        layers.append(cfg.Layer.yaml_file(config_file))
    layers.append(cfg.Layer.flags(flags))
    if dataset:  # the DATASET argument, not a --dataset flag: its errors name no source
        layers.append(cfg.Layer({"dataset": dataset}, {"dataset": ""}))
    config, sources = cfg.resolve(*layers)
    params = trainer.check(config, sources)
    if export_dir:
        from cnnbench import export

        try:
            export.check_target(Path(export_dir).absolute(), overwrite, config.dataset)  # before any training
        except ConfigError as err:
            err.source = "--export"
            raise
    try:
        device = trainer.resolve_device(config.device)
    except ConfigError as err:
        err.source = err.source or sources.get("device")
        raise
    trainer.check_precision(config.precision, device)
    try:
        done = len(trainer.check_resume(checkpoint, config))
    except ConfigError as err:
        err.source = "--checkpoint"
        raise
    if checkpoint:
        click.get_current_context().meta["cnnbench.resume"] = "the same `cnnbench train` command again"
    data_folder(data_dir)  # a CNNBENCH_DATA_DIR that names a file is an error, before any warning
    if warning := trainer.mirror_warning(config.dataset, [config.augment], [config.tta]):
        click.echo(f"warning: {warning}", err=True)
    data = datamod.load(config.dataset, data_dir, val_fraction=config.val_fraction)

    def show(m):
        if not as_json:
            val = f"  val_loss {m.val_loss:.4f}  val_acc {m.val_acc:.4f}" if m.val_acc is not None else ""
            click.echo(f"epoch {m.epoch:3d}  loss {m.train_loss:.4f}  acc {m.train_acc:.4f}{val}  "
                       f"lr {m.lr:.3g}  {m.epoch_seconds:.1f}s  {m.images_per_sec:,.0f} img/s")

    with cores.share(device.type == "cpu") as taken:
        if not as_json:
            click.echo(f"training {config.arch} ({params:,} params) on {config.dataset}: {len(data.train):,} train / "
                       f"{len(data.val) if data.val else 0:,} val / {len(data.test):,} test"
                       + (f" ({data.spec.test_share:.0%} of each class set apart)" if data.spec.test_share else ""))
            if taken.shared:
                click.echo(f"sharing the CPU with other cnnbench runs: training on {taken} threads")
            if done:
                click.echo(f"resuming from {checkpoint}: {done} of {config.epochs} epochs done")
        result = trainer.fit(config, data, on_epoch_end=show, checkpoint=checkpoint, progress=sys.stderr.isatty())
        started = time.perf_counter()
        test = trainer.evaluate(result.model, data.test, data.spec, config)
        test_seconds = time.perf_counter() - started
    best = result.best
    summary = {
        "dataset": config.dataset, "arch": config.arch, "test_acc": test.acc, "test_loss": test.loss,
        "val_acc": best.val_acc, "best_epoch": result.best_epoch, "epochs": len(result.history),
        "train_seconds": result.train_seconds, "test_seconds": test_seconds,
        "epoch_seconds": [m.epoch_seconds for m in result.history],
        "images_per_sec": sum(m.images_per_sec for m in result.history) / len(result.history),
        "params": result.params, "device": result.device, "precision": result.precision,
        "threads": taken.threads, "data_digest": data.digest, "config": config.params(),
    }
    if export_dir:
        import tempfile

        from cnnbench import plots

        split = data.test
        with tempfile.TemporaryDirectory() as tmp:
            figures = plots.run_figures(tmp, f"{preset or config.arch} on {config.dataset}", result.history,
                                        split.x.cpu().numpy(), split.y.cpu().numpy(), test.predictions.numpy(),
                                        test.confidences.numpy(), data.spec.classes,
                                        label_smoothing=config.label_smoothing)
            path = export.export(result.model, config, data.spec, export_dir, figures=figures, overwrite=overwrite,
                                 metrics={"val_acc": best.val_acc, "test_acc": test.acc, "params": result.params,
                                          "train_seconds": result.train_seconds, "precision": result.precision,
                                          "data_digest": data.digest})
        summary["export"] = str(path)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"test accuracy {test.acc:.4f} (best epoch {result.best_epoch}, "
                   f"{result.train_seconds:.1f}s of training on {result.device}, {result.precision})")
        if export_dir:
            click.echo(f"exported to {summary['export']}")
    if export_dir:
        _say_if_onnx_missing(Path(export_dir))


@main.command()
@click.argument("sweep_file", metavar="DATASET|FILE")
@click.option("--trials", type=int, help="Total finished trials the study should hold.")
@click.option("--epochs", type=int, help="Epochs per trial.")
@click.option("--sampler", help="tpe, random, cmaes, gp, qmc, grid or nsga2.")
@click.option("--pruner", help="median, halving, hyperband or none.")
@click.option("--study", help="Study name (default: from the file, else the dataset).")
@click.option("--storage", help="Optuna storage URL (default: ./cnnbench-journal.log).")
@click.option("--timeout", type=float, help="Stop starting trials after this many seconds.")
@click.option("--workers", type=int, help="Worker processes on this machine (default: one per --devices entry).")
@click.option("--devices", metavar="DEV,DEV,...", help="Devices the workers use in turn, e.g. cuda:0,cuda:1.")
@click.option("--join", is_flag=True, help="Run workers in a study another live `cnnbench sweep` is running.")
@click.option("--seed", type=int, help="Seed of the sampler and of every trial.")
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [env CNNBENCH_DATA_DIR].")
def sweep(sweep_file, device, devices, join, data_dir, **flags) -> None:
    """Tune on a dataset: run the sweep in sweeps/DATASET.yaml (or FILE), every trial tracked in MLflow.

    For folder:PATH, a folder of your own images, the sweep is sweeps/images.yaml (./sweeps/images.yaml if there is
    one) with PATH as its dataset.

    Running the same command again resumes the study; --trials is a total for the study. A study
    that another command is running is refused unless --join is given, as on a second machine
    sharing a PostgreSQL storage (docs/distributed.md).
    """
    from pathlib import Path

    from cnnbench import space
    from cnnbench.errors import ConfigError, install_signal_handlers
    from cnnbench.paths import FOLDER
    from cnnbench.paths import data_dir as data_folder
    from cnnbench.train import check_precision, flush_denormals, mirror_warning, resolve_device

    flush_denormals()
    install_signal_handlers()
    pinned = None
    if devices is not None:
        if device:
            raise ConfigError("--device and --devices both given", source="--devices",
                              hint="give one device with --device, or a list with --devices")
        pinned = [d.strip() for d in devices.split(",")]
        if not all(pinned):
            raise ConfigError(f"empty device name in {devices!r}", source="--devices",
                              hint="list devices separated by commas, e.g. cuda:0,cuda:1")
    definition, sources = space.load_sweep(sweep_file, flags)
    if sweep_file.startswith(FOLDER):
        used = space.find_sweep(sweep_file)
        mine = Path("sweeps") / f"{space.IMAGES_SWEEP}.yaml"
        click.echo(f"sweeping your images with {used}" + ("" if used == mine else f" (copy it to {mine} to change it)"))
    if pinned and "workers" not in sources:
        definition = definition.model_copy(update={"workers": len(pinned)})
    if pinned and definition.workers < len(pinned):
        raise ConfigError(f"{len(pinned)} devices for {definition.workers} workers; some would stay idle",
                          source=sources.get("workers", "--devices"),
                          hint=f"use --workers {len(pinned)} (or a multiple), or list fewer devices")
    click.get_current_context().meta["cnnbench.resume"] = "the same `cnnbench sweep` command again"
    # The devices this machine's workers will train on, and the precision the sweep asks of them.
    for name in pinned or [device if device is not None else definition.fixed.get("device", "auto")]:
        try:
            check_precision(definition.fixed.get("precision", "auto"), resolve_device(name))
        except ConfigError as err:
            given = "--devices" if pinned else "--device" if device is not None else None
            err.source = given or sources.get("fixed", err.source)
            raise
    data_folder(data_dir)  # a CNNBENCH_DATA_DIR that names a file is an error, before any warning
    for warning in (mirror_warning(definition.dataset, space.settings(definition, "augment"),
                                   space.settings(definition, "tta")), space.budget_warning(definition),
                    space.unsearched_warning(definition)):
        if warning:
            click.echo(f"warning: {warning}", err=True)
    from cnnbench import sweep as sweeps  # Optuna and MLflow: imported once the sweep file and flags are good

    outcome = sweeps.run(definition, data_dir=data_dir, device=device, devices=pinned, join=join, echo=click.echo)
    objectives = definition.objectives
    if outcome.front:
        count = len(outcome.front)
        best = f"Pareto front of {' and '.join(objectives)}: {count} trial{'s' * (count > 1)}"
    elif outcome.best_value is not None:
        value = space.format_value(objectives[0], outcome.best_value)
        best = f"best {objectives[0]} {value} (trial {outcome.best_trial})"
    else:
        best = "no complete trial yet"
    running = f", {outcome.running} running in other workers" if outcome.running else ""
    interrupted = f", {outcome.interrupted} interrupted" if outcome.interrupted else ""
    click.echo(f"study {outcome.study!r}: {outcome.complete} complete, {outcome.pruned} pruned, "
               f"{outcome.failed} failed{interrupted}{running}; {best}")
    shown = 10
    for number, values in outcome.front[:shown]:
        click.echo(f"  trial {number}: " + ", ".join(f"{name} {space.format_value(name, value)}"
                                                    for name, value in zip(objectives, values)))
    if len(outcome.front) > shown:
        click.echo(f"  and {len(outcome.front) - shown} more: `cnnbench best --top {len(outcome.front)}`")
    if outcome.best_params:
        # Floats to 4 digits, as `cnnbench best` shows them; the export's config.yaml holds them whole.
        click.echo("best configuration: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in outcome.best_params.items()))
    done = outcome.complete + outcome.pruned
    if definition.timeout and done < definition.trials:
        click.echo(f"the timeout ({definition.timeout:g} s) stopped the sweep at {done} of {definition.trials} "
                   "trials; run the same command to go on")
    elif definition.sampler == "grid" and done < definition.trials:
        points = math.prod(len(values) for values in space.grid(definition).values())
        click.echo(f"the grid's {points} points are all tried, so the sweep stopped at {done} of "
                   f"{definition.trials} trials")
    uri = sweeps.tracking_uri()  # a server's runs are compared in its own UI, not in a local `mlflow ui`
    compare = f"at {redact(uri)}" if uri.startswith(("http://", "https://")) else "with `mlflow ui`"
    if outcome.front:
        click.echo(f"compare the runs {compare}; export one with `cnnbench best --export --trial N` "
                   f"(without --trial, the front's best {objectives[0]})")
    else:
        click.echo(f"compare the runs {compare}; export the winner with `cnnbench best --export`")


@main.command()
@click.option("--study", "study_name", help="Study name (default: the only study in the storage).")
@click.option("--storage", help="Optuna storage URL (default: ./cnnbench-journal.log).")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="How many trials to show.")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), metavar="N",
              help="Show (and with --export, export) this complete trial instead of the best.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--export", "export_dir", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Export the best trial's model to DIR (default: exports/STUDY-trialN).")
@click.option("--register", metavar="NAME",
              help="With --export: also register the model in MLflow's model registry, as a new version of NAME.")
@click.option("--overwrite", is_flag=True, help="With --export: replace an existing export folder.")
def best(study_name, storage, top, trial_number, as_json, export_dir, register, overwrite) -> None:
    """Show the best trials of a study, and export the winner ready to load and predict.

    A study of several objectives lists its Pareto front first (`pareto` column), by the first objective.
    """
    from cnnbench import storage as stores  # not the sweep (torch, MLflow) unless there is a model to export
    from cnnbench.errors import ConfigError

    for flag, given in (("--register", register is not None), ("--overwrite", overwrite)):
        if given and export_dir is None:
            raise ConfigError("given without --export", source=flag, hint="add --export [DIR]")
    if register is not None and not register.strip():
        raise ConfigError("empty model name", source="--register", hint="name the registered model")
    stores.check_url(storage)
    names = stores.studies(storage)
    if study_name is None:
        if len(names) != 1:
            from cnnbench.errors import StudyError

            if names:
                raise StudyError(f"{len(names)} studies in {stores.describe(storage)}: {', '.join(names)}",
                                 hint="name one with --study")
            raise StudyError(f"no study in {stores.describe(storage)}", hint="run `cnnbench sweep DATASET` first")
        study_name = names[0]
    study = stores.load_study(study_name, storage)
    ranked = stores.best_trials(study, sys.maxsize)
    held = _stored_runs([t.user_attrs["mlflow_run_id"] for t in ranked if "mlflow_run_id" in t.user_attrs],
                        asked=export_dir is not None) or None  # none there: another store (an export says so)
    if trial_number is None:
        rows = _kept(ranked, held, top, study_name)
    else:
        rows = [stores.complete_trial(study, trial_number)]
        if held is not None and (said := _run_state(rows[0], held)):
            if export_dir is not None and rows[0].user_attrs["mlflow_run_id"] not in held:
                from cnnbench.errors import StudyError

                raise StudyError(f"trial {trial_number}'s MLflow run {said}, and its weights with it",
                                 source="--trial", hint="export another: `cnnbench best` lists the trials")
            click.echo(f"note: trial {trial_number}'s MLflow run {said}", err=True)
    if not rows:
        from cnnbench.errors import StudyError

        raise StudyError(f"study {study_name!r} has no complete trial yet", hint="run or resume the sweep")
    front = {t.number for t in stores.pareto_front(study)} if len(study.directions) > 1 else None
    table = [_best_row(t, front) for t in rows]
    if export_dir is not None:
        from cnnbench import sweep as sweeps

        path, version = sweeps.export_trial(study_name, rows[0], export_dir or None, overwrite=overwrite,
                                            register=register)
        if not as_json:
            click.echo(f"exported trial {rows[0].number} to {path}")
            if version:
                click.echo(f"registered it in MLflow's model registry as {register!r}, version {version}")
        _say_if_onnx_missing(path)
        table[0]["export"] = str(path)
        if version and as_json:
            table[0]["registered"] = {"name": register, "version": version}
    if trial_number is None and len(study.directions) == 1:  # after an export, which may yet be refused
        _say_if_close(rows[0], ranked, held, study)
    if as_json:
        click.echo(json.dumps(table, indent=1))
        return
    import pandas as pd

    columns = list(dict.fromkeys(key for row in table for key in row))  # settings only some trials have stay in place
    settings = [c for c in columns if c not in _BEST_COLUMNS]
    frame = pd.DataFrame(table, columns=[c for c in _BEST_COLUMNS[:2] + settings + _BEST_COLUMNS[2:] if c in columns])
    frame = frame.set_index("trial").drop(columns=["export"], errors="ignore")
    if "pareto" in frame:
        frame["pareto"] = frame["pareto"].map({True: "yes", False: "no"})
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        # - : a setting that trial did not sample (e.g. momentum for adam).
        # Accuracies to the same four places, so that a column reads down; settings (lr, ...) to 4 figures.
        shown = {"params": "{:,.0f}", "val_acc": "{:.4f}", "test_acc": "{:.4f}", "seconds": "{:.1f}"}
        formatters = {c: (lambda v, f=f: "-" if v is None or v != v else f.format(v)) for c, f in shown.items()}
        click.echo(frame.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-", formatters=formatters))


def _stored_runs(run_ids: list[str], *, asked: bool):
    """How the MLflow store holds each of these runs that it holds (which are deleted), or ``None`` where it cannot
    tell: :func:`cnnbench.tracking.stored_runs`.

    A local SQLite store is read without importing MLflow, which alone takes seconds. Where a server cannot be
    asked, every trial stays in, and a table (``asked`` false) says so; an export then fails saying why.
    """
    import os

    from cnnbench import storage as stores

    uri = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"  # MLflow's default store
    if uri.startswith("sqlite:///"):
        return stores.stored_runs(uri, run_ids)
    from cnnbench.tracking import stored_runs

    try:
        return stored_runs(run_ids)
    except CnnbenchError as err:
        if not asked:  # an export says itself why it cannot reach the store
            click.echo(f"note: cannot tell which of the trials' MLflow runs are deleted: {err}", err=True)
        return None


def _say_if_close(first, ranked, held, study) -> None:
    """Say on stderr which trials share the value of ``first``, the best, where others do: it is only the first
    of them (a small validation set ties often); or, where its validation accuracy leads the next by one image
    alone, which trials it leads so."""
    from cnnbench.space import format_value
    from cnnbench.storage import objectives, validation_images

    objective = objectives(study)[0]
    kept = [t for t in ranked if held is None or not _run_state(t, held)]
    tied = [t.number for t in kept if t.values[0] == first.values[0]]
    if len(tied) > 1:
        value = format_value(objective, first.values[0])
        click.echo(f"note: trials {listed(tied)} tie at the best {objective}, {value}; the first, trial "
                   f"{first.number}, is taken as the best (--trial N takes another)", err=True)
        return
    images = validation_images(study, first)
    behind = [t for t in kept if t.values[0] != first.values[0]]
    if objective != "val_acc" or not images or not behind or validation_images(study, behind[0]) != images:
        return
    second = behind[0].values[0]
    if round((first.values[0] - second) * images) == 1:
        led = [t.number for t in behind if t.values[0] == second]
        click.echo(f"note: trial {first.number} leads trial{'s' * (len(led) > 1)} {listed(led)} by one of its "
                   f"{images:,} validation images ({format_value(objective, first.values[0])} against "
                   f"{format_value(objective, second)}): a lead this small may not hold on other images (--trial N "
                   "takes another)", err=True)


def _run_state(trial, held) -> str | None:
    """How the trial's MLflow run stands where it is not active in ``held`` (:func:`_stored_runs`), as words to
    follow "its MLflow run"; ``None`` where it is active, or has no run."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id is None or (run := held.get(run_id)) is not None and run.stage == "active":
        return None
    if run is None:
        return f"{run_id} is no longer in the store: deleted, then removed by `mlflow gc`"
    if run.experiment_deleted:
        return (f"{run_id} is deleted with its experiment; `mlflow experiments restore --experiment-id "
                f"{run.experiment_id}` brings both back")
    return f"{run_id} is deleted; `mlflow runs restore --run-id {run_id}` brings it back"


def _kept(ranked: list, held, top: int, study_name: str) -> list:
    """The ``top`` best of ``ranked`` whose MLflow runs are not deleted (in `mlflow ui`, say: `cnnbench report`
    leaves them out too), saying on stderr which trials that leaves out, and why."""
    if held is None:
        return ranked[:top]
    kept, left = [], []
    for trial in ranked:
        if len(kept) == top:
            break
        (left if _run_state(trial, held) else kept).append(trial)
    if left and not kept:
        from cnnbench.errors import StudyError

        runs = (held.get(t.user_attrs["mlflow_run_id"]) for t in left)
        if (first := next((run for run in runs if run is not None and run.experiment_deleted), None)) is not None:
            raise StudyError(f"the MLflow experiment of study {study_name!r} (id {first.experiment_id}) is deleted, "
                             "and its trials' runs with it", hint="restore it: `mlflow experiments restore "
                             f"--experiment-id {first.experiment_id}`; or show one trial with --trial N")
        raise StudyError(f"every complete trial of study {study_name!r} has its MLflow run deleted (trial "
                         f"{left[0].number}'s run {_run_state(left[0], held)})", hint="restore them, or show one "
                         "trial with --trial N")
    if left:
        others = [str(t.number) for t in left[1:]]
        also = f" (and {'trials' if len(others) > 1 else 'trial'} {', '.join(others)}, likewise)" if others else ""
        click.echo(f"note: left out trial {left[0].number}{also}: its MLflow run {_run_state(left[0], held)}",
                   err=True)
    return kept


def _say_if_onnx_missing(path) -> None:
    """Say on stderr why the export at ``path`` holds no ONNX model, where the onnx extra is what it lacks."""
    from cnnbench.export import ONNX, onnx_missing

    if not (path / ONNX).exists() and (missing := onnx_missing()):
        click.echo(f"no {ONNX} in the export: {missing}", err=True)


#: The columns of `cnnbench best` besides the trial's sampled settings, which come after the first two.
_BEST_COLUMNS = ["trial", "pareto", "baseline", "val_acc", "test_acc", "params", "seconds", "run_id", "export"]


def _best_row(trial, front: set[int] | None = None) -> dict:
    attrs = trial.user_attrs
    pareto = {} if front is None else {"pareto": trial.number in front}
    return {"trial": trial.number, **pareto, **trial.params, "baseline": attrs.get("baseline", ""),
            "val_acc": attrs.get("best_val_acc"), "test_acc": attrs.get("test_acc"), "params": attrs.get("params"),
            "seconds": attrs.get("train_seconds"), "run_id": attrs.get("mlflow_run_id")}


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list with a result per image.")
def predict(export_dir, images, as_json) -> None:
    """Classify IMAGES (PNG, JPEG, any size) with the model exported to EXPORT_DIR.

    A folder among IMAGES stands for the images in it and in the folders within it, by path (not hidden ones).
    Images in folders named after the model's classes (test/cat/1.png for a folder test) are of that class:
    each says whether it was classified right, a line per class gives how many of its images are right and what
    the others were taken for, and the last line gives the accuracy on them. A dataset's folder (one holding
    train/ and test/, or the folder of images the model trained on) gets the accuracy on its test images and on
    its training images apart.
    """
    from cnnbench.export import predictions

    if as_json:
        click.echo(json.dumps(list(predictions(export_dir, list(images)))))
        return
    results = []
    for r in predictions(export_dir, list(images)):  # each line as soon as its batch is classified
        verdict = "" if r["truth"] is None else "  right" if r["truth"] == r["label"] else f"  wrong: {r['truth']}"
        click.echo(f"{r['file']}  {r['label']}  (class {r['index']}, p={r['probability']:.3f}){verdict}")
        results.append(r)
    labelled = [r for r in results if r["truth"] is not None]
    parts = {part: [r for r in labelled if r["part"] == part] for part in ("test", "train", None)}
    parts = {part: rs for part, rs in parts.items() if rs}
    words = {"test": "test ", "train": "training ", None: "other " if len(parts) > 1 else ""}
    if parts:  # the classes of the first part: of the test images, where there are test images
        first, rs = next(iter(parts.items()))
        for line in _class_lines(rs, words[first], export_dir):
            click.echo(line)
    others = len(results) - len(labelled)
    for i, (part, rs) in enumerate(parts.items()):  # a dataset's test and training images apart, never mixed
        right = sum(r["truth"] == r["label"] for r in rs)
        click.echo(f"accuracy {right / len(rs):.4f}: {right:,} of {len(rs):,} {words[part]}images right, by the class "
                   "folders they are in" + (f"; {others:,} image{'s' * (others > 1)} in no class folder"
                                            if others and i == len(parts) - 1 else ""))


def _class_lines(results: list[dict], what: str, export_dir: str) -> list[str]:
    """A line per class of the labelled ``results``, in the model's order, where they are of two classes or more:
    how many of its images are right, and the classes the others were taken for, the most often first."""
    from cnnbench.export import classes

    by_class: dict[str, list[dict]] = {}
    for r in results:
        by_class.setdefault(r["truth"], []).append(r)
    if len(by_class) < 2:
        return []
    lines = []
    for name in (name for name in classes(export_dir) if name in by_class):
        rs = by_class[name]
        right = sum(r["label"] == name for r in rs)
        taken = collections.Counter(r["label"] for r in rs if r["label"] != name).most_common()
        lines.append(f"class {name}: {right / len(rs):.4f}, {right:,} of {len(rs):,} {what}images right"
                     + ("; taken for " + ", ".join(f"{label} ({n:,})" for label, n in taken) if taken else ""))
    return lines


@main.command()
@click.option("--experiment", "experiments", multiple=True, metavar="NAME",
              help="Report on this MLflow experiment (repeatable; default: every cnnbench experiment).")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME", help="Report on this dataset only (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write into (default: ./report).")
@click.option("--format", "formats", multiple=True, metavar="html|md|csv",
              help="Write only this format (repeatable; default: all three).")
@click.option("--storage", help="Optuna storage URL of the studies (default: the one each sweep recorded).")
@click.option("--top", type=click.IntRange(min=1), help="Rows per leaderboard.")
def report(experiments, datasets, out_dir, formats, storage, top) -> None:
    """Write a report of the recorded sweeps: a verdict, leaderboard and plots per dataset, and what transfers.

    Reads every cnnbench experiment in the MLflow store (MLFLOW_TRACKING_URI) unless --experiment is given.
    An empty store gives a report that says so, and exit code 0.
    """
    from cnnbench import report as reports

    given = {"experiments": experiments, "datasets": datasets, "out_dir": out_dir, "formats": formats,
             "storage": storage, "top": top}
    paths = reports.build(**{k: v for k, v in given.items() if v}, echo=click.echo)
    for fmt in ("html", "md"):
        if fmt in paths:
            click.echo(f"wrote {paths[fmt]}")
    if "csv" in paths:
        click.echo(f"wrote {len(paths['csv'])} CSV tables to {paths['csv'][0].parent}")


if __name__ == "__main__":
    main()
