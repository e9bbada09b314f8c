"""Where cnnbench looks for data and keeps its caches. Imports nothing heavy: the CLI uses it at start-up."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``explicit``, else ``$CNNBENCH_DATA_DIR``, else ``~/.cache/cnnbench/data``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("CNNBENCH_DATA_DIR"):
        path = Path(os.environ["CNNBENCH_DATA_DIR"]).expanduser()
        if path.exists() and not path.is_dir():  # --data-dir's own check (click's) does not see the variable
            from cnnbench.errors import ConfigError

            raise ConfigError(f"{path} is a file, not a folder", source="CNNBENCH_DATA_DIR",
                              hint="point it at the folder that holds MNIST/ or cifar-10-batches-py/")
        return path
    return cache_dir() / "data"


def cache_dir() -> Path:
    """Return the folder for cnnbench's caches: ``$CNNBENCH_CACHE_DIR`` or ``~/.cache/cnnbench``."""
    return Path(os.environ.get("CNNBENCH_CACHE_DIR") or Path.home() / ".cache" / "cnnbench").expanduser()


def unwritable(path: str | os.PathLike) -> str | None:
    """Why files could not be made at ``path`` (a folder that may not exist yet), or ``None`` when they can.

    Probed by making and removing a temporary folder in ``path``, or in its nearest ancestor that exists, so
    that a command can refuse an output it cannot write before doing any work; leaves nothing behind.
    """
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cnnbench-probe-", dir=folder))
    except OSError as err:
        return f"cannot write in {folder}: {err.strerror or err}"
    return None


def cached_json(name: str, compute: Callable[[], Any], parse: Callable[[Any], T] = lambda value: value) -> T:
    """Return ``parse`` of the JSON value kept in the cache folder under ``name``; compute and keep it when there
    is none.

    A cached file that cannot be read, or whose value ``parse`` rejects (a ``KeyError``, ``TypeError``,
    ``ValueError`` or ``AttributeError``: a file of another shape), is computed and written again; one that
    cannot be written only costs time. The file is written whole or not at all (see :func:`keep_json`), so
    processes racing on it are safe.
    """
    try:
        return parse(read_json(name))
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        pass
    value = compute()
    keep_json(name, value)
    return parse(value)


def read_json(name: str) -> Any:
    """Return the JSON value kept in the cache folder under ``name`` (``OSError`` or ``ValueError`` without one)."""
    return json.loads((cache_dir() / name).read_text())


def keep_json(name: str, value: Any) -> None:
    """Keep ``value`` as JSON in the cache folder under ``name``: whole or not at all (a temp file, then a
    rename); a folder that cannot be written only means it is computed again next time."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except OSError:
        pass
