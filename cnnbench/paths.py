"""Where cnnbench looks for data and keeps its caches. Imports nothing heavy: the CLI uses it at start-up."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``explicit``, else ``$CNNBENCH_DATA_DIR``, else ``~/.cache/cnnbench/data``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("CNNBENCH_DATA_DIR"):
        return Path(os.environ["CNNBENCH_DATA_DIR"]).expanduser()
    return cache_dir() / "data"


def cache_dir() -> Path:
    """Return the folder for cnnbench's caches: ``$CNNBENCH_CACHE_DIR`` or ``~/.cache/cnnbench``."""
    return Path(os.environ.get("CNNBENCH_CACHE_DIR") or Path.home() / ".cache" / "cnnbench").expanduser()
