"""setup.cfg's lower bounds are the versions .ci/run-minimums tests them with (.ci/minimums.txt)."""

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def lower_bounds() -> dict[str, Version]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    bounds = {}
    for line in (raw.strip() for raw in lines):
        if line and not line.startswith("#"):
            req = Requirement(line)
            (low,) = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
            bounds[canonicalize_name(req.name)] = low
    return bounds


def minimums() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "minimums.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (pin,) = req.specifier
            assert pin.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(pin.version)
    return pins


def test_every_lower_bound_is_the_release_the_minimums_run_installs():
    bounds = lower_bounds()
    assert {"torch", "optuna", "mlflow", "onnxscript", "psycopg"} <= set(bounds)
    assert bounds == minimums()
