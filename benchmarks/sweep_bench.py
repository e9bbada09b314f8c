"""The shipped MNIST sweep end to end: ``python benchmarks/sweep_bench.py [--trials 50] [--workers 1]``.

Runs ``cnnbench sweep mnist --trials N`` (with ``--workers W`` when W > 1) in a fresh folder,
times it, reads the best trial's test accuracy with ``cnnbench best --json``, exports it with
``cnnbench best --export`` and measures the export's test accuracy by loading ``model.pt2`` with
plain PyTorch. Goals: at most 15 minutes for 50 trials on the two-core CPU, best test accuracy
>= 99.3%, export accuracy equal to the reported one within 0.05 points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


@click.command()
@click.option("--trials", default=50, show_default=True)
@click.option("--workers", default=1, show_default=True, help="Worker processes sharing the study and the cores.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [env CNNBENCH_DATA_DIR].")
def main(trials: int, workers: int, data_dir: str | None) -> None:
    """Print and save the sweep's wall time, counts and accuracies."""
    env = dict(os.environ)
    if data_dir:
        env["CNNBENCH_DATA_DIR"] = str(Path(data_dir).resolve())
    env.pop("MLFLOW_TRACKING_URI", None)
    work = Path(tempfile.mkdtemp(prefix="cnnbench-sweep-"))
    cnnbench = str(Path(sys.executable).with_name("cnnbench"))
    command = [cnnbench, "sweep", "mnist", "--trials", str(trials)]
    command += ["--workers", str(workers)] if workers > 1 else []
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(done.stdout[-2000:], done.stderr[-2000:] if done.returncode else "")
    best = json.loads(subprocess.run([cnnbench, "best", "--json", "--top", "1"], cwd=work, env=env, check=True,
                                     capture_output=True, text=True).stdout)[0]
    subprocess.run([cnnbench, "best", "--export", "export"], cwd=work, env=env, check=True, capture_output=True)
    export_acc = _plain_torch_accuracy(work / "export", env)
    figures = {
        "command": " ".join(["cnnbench", *command[1:]]), "wall_seconds": wall, "exit_code": done.returncode,
        "best_trial": best["trial"], "best_val_acc": best["val_acc"], "best_test_acc": best["test_acc"],
        "export_test_acc_plain_torch": export_acc, "export_difference_points": 100 * abs(export_acc - best["test_acc"]),
        "workers": workers, "best": best, "load_average": os.getloadavg(), "folder": str(work),
    }
    summary = done.stdout.strip().splitlines()[-3:] if done.stdout else []
    figures["summary"] = summary
    print(json.dumps({k: v for k, v in figures.items() if k != "best"}, indent=1))
    out = results_path(trials, workers)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))


def results_path(trials: int, workers: int = 1) -> Path:
    """Return the JSON file a sweep of ``trials`` trials with ``workers`` workers is saved to."""
    return Path(__file__).resolve().parent / "results" / f"sweep-{trials}{f'-w{workers}' if workers > 1 else ''}.json"


def _plain_torch_accuracy(export: Path, env: dict) -> float:
    """Return the MNIST test accuracy of an export, loaded with torch alone in a fresh interpreter."""
    code = r"""
import json, struct, sys, torch
from pathlib import Path
export, root = Path(sys.argv[1]), Path(sys.argv[2])
def idx(p):
    raw = p.read_bytes(); n = raw[3]
    dims = [int.from_bytes(raw[4 + 4*i:8 + 4*i], "big") for i in range(n)]
    return torch.frombuffer(bytearray(raw[4 + 4*n:]), dtype=torch.uint8).view(*dims)
x = idx(root / "MNIST/raw/t10k-images-idx3-ubyte").unsqueeze(1).float() / 255
y = idx(root / "MNIST/raw/t10k-labels-idx1-ubyte").long()
prep = json.loads((export / "preprocess.json").read_text())
x = (x - prep["mean"][0]) / prep["std"][0]
model = torch.export.load(str(export / "model.pt2")).module()
with torch.no_grad():
    pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
assert "cnnbench" not in sys.modules
print((pred == y).float().mean().item())
"""
    root = env.get("CNNBENCH_DATA_DIR") or str(Path.home() / ".cache" / "cnnbench" / "data")
    out = subprocess.run([sys.executable, "-c", code, str(export), root], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


if __name__ == "__main__":
    main()
