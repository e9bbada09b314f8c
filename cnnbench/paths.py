"""Where cnnbench looks for data and keeps its caches. Imports nothing heavy: the CLI uses it at start-up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


#: The prefix of a dataset of one's own images: ``folder:PATH`` (:func:`cnnbench.data.folder_spec`).
FOLDER = "folder:"
_SIZE = re.compile(r"@(\d+)(?:x(\d+))?$")


def dataset_name(name: str) -> str:
    """``name`` as cnnbench records it: a folder dataset's with its path made absolute (``~`` expanded), so that
    a run, a study and an export name one folder from wherever they are used, and its size, if it has one, as
    ``@WxH``; any other as it is. Raises ``ValueError`` for ``folder:`` with no path."""
    if not name.startswith(FOLDER):
        return name
    path, size = folder_parts(name)
    if not path.strip():  # not the folder cnnbench happens to run in
        raise ValueError("names no folder; give the folder of your images: folder:PATH, as folder:~/pets")
    return FOLDER + os.path.abspath(os.path.expanduser(path)) + (f"@{size[0]}x{size[1]}" if size else "")


def folder_parts(name: str) -> tuple[str, tuple[int, int] | None]:
    """A folder dataset's name, ``folder:PATH`` or ``folder:PATH@SIZE``, as its path and the size (W, H) its
    images are resized to: ``@64`` is 64x64, ``@64x48`` 64 wide and 48 high; ``None`` where it gives none."""
    body = name.removeprefix(FOLDER)
    if not (size := _SIZE.search(body)):
        return body, None
    return body[:size.start()], (int(size[1]), int(size[2] or size[1]))


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


def unwritable_file(path: str | os.PathLike) -> str | None:
    """Why the file ``path`` (which may not exist yet) could not be written, or ``None`` when it can.

    Its folder must take new files too: the programs that keep such files (SQLite, Optuna's journal, cnnbench's
    study lock) put their locks and journals beside them. An existing file is opened to append, and left as it was.
    """
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    if why := unwritable(path.parent):
        return why
    if path.exists():
        try:
            open(path, "ab").close()
        except OSError as err:
            return f"cannot write {path}: {err.strerror or err}"
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
    """Keep ``value`` as JSON in the cache folder under ``name``, whole or not at all (see :func:`write_whole`); a
    folder that cannot be written (or a full disk) only means it is computed again next time."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, json.dumps(value))
    except OSError:
        pass


def write_whole(path: str | os.PathLike, data: bytes | bytearray | memoryview | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all, and return the path.

    It goes to a temp file beside it (``.NAME.XXXXXXXX.tmp``), synced, then renamed over ``path``: a write that
    fails (a full disk) or is killed leaves ``path`` as it was, and the temp file is removed where Python can.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # the umask's permissions, as a plain write would give (mkstemp's are 0600)
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def as_written(path: str | os.PathLike) -> Path:
    """Give the file at ``path`` the permissions a plain write gives it (0666 less the umask), and return its path.

    safetensors makes its files 0600: an export's weights, or a run's in a shared MLflow store, would be
    readable by their owner alone, where the files beside them are readable by all the umask lets.
    """
    os.chmod(path, 0o666 & ~_umask())
    return Path(path)


def _umask() -> int:
    # Read where Linux shows it: os.umask can only read it by setting it, for every thread at once.
    with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
