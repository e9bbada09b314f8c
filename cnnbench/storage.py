"""Optuna storages: a journal file in the working directory by default, or a sqlite, postgresql or redis URL."""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnbench.errors import ConfigError, StudyError

if TYPE_CHECKING:
    import optuna
    import pandas as pd

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


# Reading a study for the report. It belongs in cnnbench/storage.py (sweep and storage are the modules that
# import optuna; the report sits below sweep, so it cannot import it); once moved, this section becomes
# ``from cnnbench.storage import local_file, read_study`` at the top.





@dataclass(frozen=True)
class StudyRecord:
    """What a report reads of an Optuna study: its first objective, that objective's direction, its trials
    (columns trial, state, value, baseline) and its parameter importances (name -> share, summing to 1)."""

    name: str
    objective: str
    direction: str
    trials: "pd.DataFrame"
    importances: dict[str, float]


def local_file(url: str | None) -> Path | None:
    """Return the file behind a journal or sqlite storage URL (``None``: the default journal), or ``None`` for a
    server."""
    if url is None:
        return Path(DEFAULT_JOURNAL)
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        return None if rest in ("", ":memory:") else Path(rest)
    if url.endswith(".log") or url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    return None


def read_study(url: str | None, name: str) -> StudyRecord | None:
    """Return study ``name`` of the storage at ``url`` as plain data; ``None`` when the storage file or the study
    is not there (a missing file is not created). Raises :class:`StudyError` when the storage cannot be opened."""
    import optuna

    path = local_file(url)
    if path is not None and not path.is_file():
        return None
    store = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        return None
    import pandas as pd

    trials = study.get_trials(deepcopy=False)
    frame = pd.DataFrame([{"trial": t.number, "state": t.state.name, "value": t.values[0] if t.values else None,
                           "baseline": t.user_attrs.get("baseline", "")} for t in trials],
                         columns=["trial", "state", "value", "baseline"]).astype({"value": float})
    objective = ((study.user_attrs.get("cnnbench.sweep") or {}).get("objective") or ["value"])[0]
    importances: dict[str, float] = {}
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = dict(optuna.importance.get_param_importances(study, target=lambda t: t.values[0]))
        except (ValueError, RuntimeError, ZeroDivisionError):
            importances = {}  # e.g. no parameter took two values yet
    return StudyRecord(name, objective, study.directions[0].name.lower(), frame, importances)
