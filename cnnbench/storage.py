"""Optuna storages: a journal file in the working directory by default, or a sqlite, postgresql or redis URL."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cnnbench.errors import ConfigError, StudyError

if TYPE_CHECKING:
    import optuna

#: The default study store: Optuna's journal file, safe with several processes on one machine.
DEFAULT_JOURNAL = "cnnbench-journal.log"
#: How often a running trial records that its worker is alive, on RDB storages.
HEARTBEAT_SECONDS = int(os.environ.get("CNNBENCH_HEARTBEAT_SECONDS", "20"))


def describe(url: str | None) -> str:
    """Return how a storage URL is shown to people (default spelled out, credentials hidden)."""
    from cnnbench.tracking import redact

    return redact(url) if url else f"journal file ./{DEFAULT_JOURNAL}"


def check_url(url: str | None) -> None:
    """Raise :class:`ConfigError` if ``url`` is not a storage cnnbench can open (no connection is made)."""
    if url is None or url.endswith(".log") or url.startswith(("sqlite:///", "postgresql", "mysql", "redis://",
                                                              "rediss://", "journal:")):
        return
    raise ConfigError(f"unsupported storage {describe(url)!r}",
                      hint="use a journal file path ending in .log, sqlite:///FILE, postgresql://..., or redis://...")


def open_storage(url: str | None) -> "optuna.storages.BaseStorage":
    """Open (creating when needed) the Optuna storage at ``url``; ``None`` is the default journal file.

    A redis URL may end in ``?prefix=NAME`` to keep its keys apart from others in the same database.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    check_url(url)
    try:
        if url is None or url.endswith(".log") or url.startswith("journal:"):
            path = (url or DEFAULT_JOURNAL).removeprefix("journal:")
            return JournalStorage(JournalFileBackend(path))
        if url.startswith(("redis://", "rediss://")):
            from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

            parts = urlsplit(url)
            query = dict(parse_qsl(parts.query))
            prefix = query.pop("prefix", "")
            plain = urlunsplit(parts._replace(query=urlencode(query)))
            return JournalStorage(JournalRedisBackend(plain, prefix=prefix))
        # Heartbeats let sweep.recover fail and retry the trials of workers that died anywhere.
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except Exception as err:  # driver missing, server down, bad credentials
        from cnnbench.tracking import redact

        raise StudyError(f"cannot open storage {describe(url)}: {redact(str(err)).splitlines()[0][:200]}",
                         hint="check the URL and that the database is up") from None


@contextlib.contextmanager
def creation_lock(name: str):
    """Hold an exclusive lock while a study and its tracking records are created (one creator per machine)."""
    path = Path(os.environ.get("CNNBENCH_LOCK_DIR", ".")) / f".cnnbench-{name}.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
