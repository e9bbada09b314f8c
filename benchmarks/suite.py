"""What every benchmark shares: the machine, the data folder, `cnnbench train` runs and the result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: Images kept of MNIST's training and test sets for a --quick run.
QUICK_TRAIN, QUICK_TEST = 5000, 1000


@dataclass
class Figure:
    """One measured figure, the goal it is held to, and the command that produced it.

    ``met`` is None when the figure has no goal or the run was too short to judge it (--quick).
    """

    name: str
    value: float
    unit: str
    goal: str
    met: bool | None
    command: str


@dataclass
class Context:
    """How a benchmark should run: on which data, and whether short (--quick)."""

    data_root: Path
    quick: bool

    def judge(self, ok: bool) -> bool | None:
        """Return ``ok``, or None in a quick run, whose figures are too short to hold to a goal."""
        return None if self.quick else ok


@dataclass
class Record:
    """What one benchmark writes to ``results/<name>.json``."""

    benchmark: str
    machine: dict
    figures: list[Figure]
    details: dict = field(default_factory=dict)


def machine() -> dict:
    """Return the CPU model, core count, GPU (None without CUDA), torch version, date and load average here."""
    import torch
    from cnnbench.train import cpu_bf16_speedup, cpu_has_bf16_hardware, describe_hardware

    return {
        "cpu": describe_hardware(torch.device("cpu"))["cpu"], "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "amx_or_avx512_bf16": cpu_has_bf16_hardware(),
        "bf16_conv_speedup": round(cpu_bf16_speedup(), 2),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def save(record: Record, quick: bool) -> Path:
    """Write ``record`` as JSON under ``results/`` (``<name>-quick.json`` for a quick run), with the load average
    at its end; return the path."""
    record.details["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{record.benchmark}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return path


def train_cli(ctx: Context, preset: str, *flags: str) -> tuple[dict, str]:
    """Run ``cnnbench train --preset PRESET FLAGS --json`` in a fresh process.

    Returns its JSON summary and the command as a person would type it.
    """
    args = ["train", "--preset", preset, *flags, "--json"]
    env = {**os.environ, "CNNBENCH_DATA_DIR": str(ctx.data_root)}
    done = subprocess.run([sys.executable, "-m", "cnnbench", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cnnbench {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), shlex.join(["cnnbench", *args])


def quick_data(source: Path) -> Path:
    """Return a folder holding the first QUICK_TRAIN / QUICK_TEST images of ``source``'s MNIST, written once,
    and a link to its CIFAR-10."""
    from cnnbench import data as datamod

    datamod.load("mnist", source)  # downloads MNIST into ``source`` when it is not there
    dest = RESULTS / "quick-data"
    for split, n in (("train", QUICK_TRAIN), ("t10k", QUICK_TEST)):
        for kind, header, item in (("images-idx3-ubyte", 16, 28 * 28), ("labels-idx1-ubyte", 8, 1)):
            target = dest / "MNIST" / "raw" / f"{split}-{kind}"
            if target.exists():
                continue
            raw = (source / "MNIST" / "raw" / f"{split}-{kind}").read_bytes()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw[:4] + n.to_bytes(4, "big") + raw[8:header] + raw[header:header + n * item])
    cifar = dest / "cifar-10-batches-py"
    if not cifar.exists() and (source / cifar.name).is_dir():
        cifar.symlink_to(source / cifar.name)  # CIFAR-10 whole, read in place: quick runs train it one epoch
    return dest
