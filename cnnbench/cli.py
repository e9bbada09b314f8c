"""The ``cnnbench`` command line. Heavy imports happen inside commands so ``--help`` answers at once."""

from __future__ import annotations

import json
import sys

import click

from cnnbench.errors import CnnbenchError


class _Group(click.Group):
    """Turns cnnbench's errors into one or two lines and the documented exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CnnbenchError as err:
            if ctx.meta.get("cnnbench.debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


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
    from cnnbench.catalog import registries

    regs = registries()
    if kind is not None:
        regs = {k: v for k, v in regs.items() if k == kind}
        if not regs:
            from cnnbench.errors import ConfigError

            raise ConfigError(f"unknown registry {kind!r}; valid: {', '.join(registries())}")
    for title, reg in regs.items():
        click.echo(f"{title}:")
        rows = reg.summaries()
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
        click.option("--batch-size", type=int, help="Training batch size."),
        click.option("--epochs", type=int, help="Number of epochs."),
        click.option("--kernel-size", type=int, help="Convolution kernel size."),
        click.option("--width", type=int, help="Channels of the first convolution."),
        click.option("--depth", type=int, help="Blocks or layers per stage (resnet, vgg)."),
        click.option("--dropout", type=float, help="Dropout rate."),
        click.option("--scheduler", help="Learning-rate schedule name."),
        click.option("--augment", help="Augmentation name (default: the dataset's)."),
        click.option("--val-fraction", type=float, help="Share of the training set held out for validation."),
        click.option("--patience", type=int, help="Stop after this many epochs without a better validation accuracy."),
        click.option("--seed", type=int, help="Random seed."),
        click.option("--device", help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), help="Numeric precision."),
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
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Save each epoch here; resume if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results.")
def train(dataset, preset, config_file, data_dir, checkpoint, as_json, **flags) -> None:
    """Train one configuration on DATASET and report its test accuracy.

    Settings come from the defaults, then --preset, then --config, then the flags you give.
    """
    from cnnbench import config as cfg
    from cnnbench import data as datamod
    from cnnbench import train as trainer

    layers = []
    if preset:
        layers.append(cfg.Layer.preset(preset))
    if config_file:
        layers.append(cfg.Layer.yaml_file(config_file))
    layers.append(cfg.Layer.flags({"dataset": dataset, **flags}))
    config, _ = cfg.resolve(*layers)
    params = trainer.check(config)
    trainer.resolve_device(config.device)
    data = datamod.load(config.dataset, data_dir, val_fraction=config.val_fraction)

    def show(m):
        if not as_json:
            val = f"  val_loss {m.val_loss:.4f}  val_acc {m.val_acc:.4f}" if m.val_acc is not None else ""
            click.echo(f"epoch {m.epoch:3d}  loss {m.train_loss:.4f}  acc {m.train_acc:.4f}{val}  "
                       f"lr {m.lr:.3g}  {m.epoch_seconds:.1f}s  {m.images_per_sec:,.0f} img/s")

    if not as_json:
        click.echo(f"training {config.arch} ({params:,} params) on {config.dataset}: "
                   f"{len(data.train):,} train / {len(data.val) if data.val else 0:,} val / {len(data.test):,} test")
    result = trainer.fit(config, data, on_epoch_end=show, checkpoint=checkpoint, progress=sys.stderr.isatty())
    test = trainer.evaluate(result.model, data.test, data.spec, config)
    best = result.best
    summary = {
        "dataset": config.dataset, "arch": config.arch, "test_acc": test.acc, "test_loss": test.loss,
        "val_acc": best.val_acc, "best_epoch": result.best_epoch, "epochs": len(result.history),
        "train_seconds": result.train_seconds,
        "images_per_sec": sum(m.images_per_sec for m in result.history) / len(result.history),
        "params": result.params, "device": result.device, "precision": result.precision,
        "config": config.params(),
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"test accuracy {test.acc:.4f} (best epoch {result.best_epoch}, "
                   f"{result.train_seconds:.1f}s of training on {result.device}, {result.precision})")


if __name__ == "__main__":
    main()
