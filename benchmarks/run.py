"""Run cnnbench's benchmarks and print their figures: ``python benchmarks/run.py [--quick] [--only NAME]``.

Each benchmark writes ``benchmarks/results/NAME.json`` (``NAME-quick.json`` for a quick run);
``--report`` prints the saved figures as Markdown tables. The goals are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import shlex

import click

#: In the order they run: the cheap ones first, the sweeps last.
NAMES = ("startup", "layout", "mnist_fast", "mnist_best", "seeds", "throughput", "time_to_99", "cifar10", "overhead",
         "sharing", "efficiency", "sweep", "workers")
FORMATS = {"images/s": "{:,.0f}", "%": "{:.2f}", "s": "{:.2f}", "x": "{:.2f}", "points": "{:.2f}",
           "epochs": "{:g}", "nets": "{:g}"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True,
              help="A short run (a few minutes): one epoch or a few trials each, MNIST cut to 5,000 "
                   "training images, goals not judged.")
@click.option("--only", multiple=True, type=click.Choice(NAMES), help="Run only this benchmark (repeatable).")
@click.option("--report", is_flag=True, help="Print the saved results as Markdown tables; run nothing.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Dataset folder in torchvision's layout [env CNNBENCH_DATA_DIR].")
def main(quick: bool, only: tuple[str, ...], report: bool, data_dir: str | None) -> None:
    """Run the benchmarks (all of them unless --only is given) and print each figure next to its goal."""
    import suite

    names = set(only or NAMES)
    if "time_to_99" in names:  # a ratio of two benchmarks, measured in the same run
        names |= {"throughput", "mnist_fast"}
    if "workers" in names:  # a ratio against the one-worker sweep, measured in the same run
        names.add("sweep")
    if report:
        saved = {name: suite.RESULTS / f"{name}{'-quick' if quick else ''}.json"
                 for name in sorted(names, key=NAMES.index)}
        if not any(path.exists() for path in saved.values()):
            raise click.ClickException(f"no saved {'quick ' if quick else ''}results in {suite.RESULTS}: run "
                                       f"`python benchmarks/run.py{' --quick' if quick else ''}` first")
        for name, path in saved.items():
            if path.exists():
                record = json.loads(path.read_text())
                if not {"benchmark", "machine", "figures"} <= set(record):  # an older version's raw figures
                    click.echo(f"{path}: not a saved benchmark record (run `--only {name}` again to write one)\n")
                    continue
                click.echo(markdown(record))
        return

    from cnnbench import data as datamod
    from cnnbench import train

    import cifar
    import efficiency
    import layout
    import presets
    import sharing
    import startup
    import throughput
    import tracked

    train.flush_denormals()  # as the commands do, before torch starts its threads
    root = datamod.data_dir(data_dir).resolve()
    ctx = suite.Context(suite.quick_data(root) if quick else root, quick)
    records: dict[str, suite.Record] = {}
    for name in sorted(names, key=NAMES.index):
        command = shlex.join(["python", "benchmarks/run.py", *(["--quick"] if quick else []), "--only", name])
        if name == "time_to_99":
            record = presets.time_to_99(ctx, records.get("throughput"), records.get("mnist_fast"))
        elif name == "workers":
            record = tracked.workers(ctx, records.get("sweep"))
        else:
            record = {
                "startup": lambda: startup.run(ctx),
                "layout": lambda: layout.run(ctx),
                "throughput": lambda: throughput.run(ctx, command),
                "cifar10": lambda: cifar.run(ctx),
                "efficiency": lambda: efficiency.run(ctx),
                "overhead": lambda: tracked.overhead(ctx),
                "sharing": lambda: sharing.run(ctx),
                "sweep": lambda: tracked.sweep(ctx),
            }.get(name, lambda: presets.run(name, ctx))()
        records[name] = record
        path = suite.save(record, quick)
        for f in record.figures:
            click.echo(f"{f.name:<72} {FORMATS[f.unit].format(f.value):>9} {f.unit:<8} {f.goal or '':<9} "
                       f"{_status(f.met)}")
        click.echo(f"-> {path}")


def markdown(record: dict) -> str:
    """Return a saved record as a Markdown table (figure, value, goal, met, command) under a machine line."""
    m = record["machine"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    lines = [f"{record['benchmark']}: {m['cpu']}, {m['cores']} cores{gpu}, torch {m['torch']}, {m['date']}, "
             f"load average {m['load_average'][0]} at start, {record['details'].get('load_average_end', ['?'])[0]} "
             "at end", "", "| Figure | Value | Goal | Met | Command |", "|---|---:|---|---|---|"]
    for f in record["figures"]:
        value = f"{FORMATS[f['unit']].format(f['value'])} {f['unit']}"
        lines.append(f"| {f['name']} | {value} | {f['goal'] or '—'} | {_status(f['met'])} | `{f['command']}` |")
    return "\n".join(lines) + "\n"


def _status(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "—"}[met]


if __name__ == "__main__":
    main()
