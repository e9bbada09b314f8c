"""The CPU cores a training run may use, shared out among the cnnbench processes training on them at once.

Two processes that each run a team of torch threads on every core slow each other down far more than
twice: each team waits at every barrier for a thread the other process has taken the core from (two
1-epoch runs of seed 004 on two cores, started together, took 49-80 s each against 5.5-7.3 s alone, and
9-10 s each with one thread apiece; docs/benchmarks.md, section 3). So a process takes its share of the
cores when it starts a run: each run registers, for as long as it lasts, a file holding its CPU set in a
folder of this machine, locked so that a process that dies leaves no claim behind; a run that starts
counts the live runs whose CPU sets overlap its own and takes ``cores // runs`` threads (at least one, at
most what it had). The count is fixed for the whole run, so a run's numbers depend only on its settings and
that count, which the sweep records with each trial.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; every run keeps its threads
    fcntl = None


def available() -> set[int]:
    """Return the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def folder() -> Path:
    """Return where runs register: ``$CNNBENCH_CORES_DIR``, else ``cnnbench-cores-<uid>`` in the temporary
    folder (local to the machine, which a home folder on a cluster's network share is not)."""
    explicit = os.environ.get("CNNBENCH_CORES_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / f"cnnbench-cores-{uid}"


def enabled() -> bool:
    """Return whether runs share the cores (``CNNBENCH_SHARE_CORES=0`` turns it off)."""
    return fcntl is not None and os.environ.get("CNNBENCH_SHARE_CORES", "1") != "0"


@dataclass(frozen=True)
class Share:
    """The threads a run trains with, and the most it could have had."""

    threads: int
    limit: int

    @property
    def shared(self) -> bool:
        """Whether other runs on these cores left this one fewer threads than it had."""
        return self.threads < self.limit

    def __str__(self) -> str:
        return f"{self.threads} of {self.limit}"


@contextlib.contextmanager
def share(on_cpu: bool = True, threads: int | None = None) -> Iterator[Share]:
    """Claim this process's share of its cores for a run on the CPU; yield it, and give it back after.

    ``threads`` is the most the run may use (default: torch's current thread count, which ``--workers``
    and ``OMP_NUM_THREADS`` set). Torch's thread count is set to the share for the run and restored after.
    A run on an accelerator (``on_cpu`` false) claims nothing; where the folder cannot be written, or
    sharing is off, the run keeps its threads.
    """
    import torch

    before = torch.get_num_threads()
    limit = threads or before
    cpus = available()
    claim = _register(cpus) if on_cpu and enabled() else None
    try:
        given = limit if claim is None else max(1, min(limit, len(cpus) // (1 + _others(cpus, claim))))
        torch.set_num_threads(given)
        yield Share(given, limit)
    finally:
        torch.set_num_threads(before)
        if claim is not None:
            _release(claim)


def _register(cpus: set[int]) -> tuple[Path, int] | None:
    """Create and lock this run's file; return it and its descriptor, or None where it cannot be made."""
    try:
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{os.getpid()}-{secrets.token_hex(4)}.cpus"
        fd = os.open(path.with_suffix(".new"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    try:  # locked and written before it is visible: a file seen unlocked is a dead run's
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, ",".join(map(str, sorted(cpus))).encode())
        os.rename(path.with_suffix(".new"), path)
    except OSError:
        os.close(fd)
        path.with_suffix(".new").unlink(missing_ok=True)
        return None
    return path, fd


def _release(claim: tuple[Path, int]) -> None:
    path, fd = claim
    path.unlink(missing_ok=True)
    os.close(fd)  # closing drops the lock


def _others(cpus: set[int], claim: tuple[Path, int]) -> int:
    """Return how many other live runs registered CPU sets that overlap ``cpus``; remove dead runs' files."""
    count = 0
    for path in claim[0].parent.glob("*.cpus"):
        if path == claim[0]:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # ended meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its run is live
                theirs = {int(c) for c in os.read(fd, 1 << 16).decode().split(",") if c.isdigit()}
                count += bool(theirs & cpus)
            else:  # nobody holds it: its process died without removing it
                path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)
    return count
