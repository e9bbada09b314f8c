"""Optuna storages: a journal file in the working directory by default, or a sqlite, postgresql or redis URL."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from cnnbench.errors import ConfigError, StudyError, UnreachableStorage, chain, listed

if TYPE_CHECKING:
    import optuna
    import pandas as pd

#: The default study store: Optuna's journal file, safe with several processes on one machine.
DEFAULT_JOURNAL = "cnnbench-journal.log"
#: Study attribute: the MLflow run of the study's sweep, which every trial's run is nested under.
PARENT_ATTR = "cnnbench.parent_run"
#: Study attribute: the sweep's definition, checked when the study is resumed, and its objectives' names.
IDENTITY_ATTR = "cnnbench.sweep"
#: Study attribute: what the study's trials were trained on (``cnnbench.sweep.data_record``): a study compares its
#: trials on one dataset only (studies from before it was recorded take it from the command that next opens them).
DATA_ATTR = "cnnbench.data"
#: Trial attribute: the earlier trial a trial was pruned as the duplicate of.
DUPLICATE_ATTR = "cnnbench.duplicate_of"
#: The ``reason`` of a trial stopped by Ctrl-C or a signal: failed in Optuna, counted apart from real failures.
INTERRUPTED = "interrupted"
#: What to do where the study's storage is given another program's database.
OWN_FILE = ("give the study a file of its own: --storage sqlite:///optuna.db, or leave --storage out "
            f"(./{DEFAULT_JOURNAL})")
#: What to do where the MLflow store is given another program's database.
OWN_STORE = "point MLFLOW_TRACKING_URI at an MLflow store of its own (unset, it is ./mlflow.db)"
#: How often a running trial records that its worker is alive, on RDB storages.
HEARTBEAT_SECONDS = int(os.environ.get("CNNBENCH_HEARTBEAT_SECONDS", "20"))


def describe(url: str | None) -> str:
    """Return how a storage URL is shown to people (default spelled out, credentials hidden)."""
    from cnnbench.errors import redact

    return redact(url) if url else f"journal file ./{DEFAULT_JOURNAL}"


def check_url(url: str | None) -> None:
    """Raise :class:`ConfigError` if ``url`` is not a storage cnnbench can open (no connection is made), or names
    a database whose driver is not installed here."""
    if url is not None and url.startswith(("postgresql", "mysql")):
        _check_driver(url)
        return
    if url is not None and url.startswith(("redis://", "rediss://")):
        import importlib.util

        if importlib.util.find_spec("redis") is None:
            _no_driver(url, "redis")
        return
    if url is None:
        return
    if url == "":
        raise ConfigError("empty storage URL", hint=f"leave --storage out for ./{DEFAULT_JOURNAL}, or name one")
    if url.split("?")[0] in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):  # SQLAlchemy's in-memory spellings
        raise ConfigError(f"storage {url!r} is a database in memory, gone when the sweep ends, as its study would be",
                          hint="name a file: sqlite:///optuna.db")
    if url.endswith(".log") or url.startswith(("sqlite:///", "journal:")):
        return
    if url.startswith("postgres://"):  # Heroku's and libpq's spelling, which SQLAlchemy does not take
        raise ConfigError(f"unsupported storage {describe(url)!r}: SQLAlchemy names PostgreSQL postgresql://",
                          hint=f"give {describe('postgresql://' + url.removeprefix('postgres://'))}")
    raise ConfigError(f"unsupported storage {describe(url)!r}",
                      hint="use a journal file path ending in .log, sqlite:///FILE, postgresql://..., or redis://...")


def _check_driver(url: str) -> None:
    """Raise :class:`ConfigError` where the database driver ``url`` names (or its dialect's default) is missing."""
    import sqlalchemy

    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()  # SQLAlchemy 2's name, else 1.4's
    except ModuleNotFoundError as err:
        _no_driver(url, err.name)
    except sqlalchemy.exc.SQLAlchemyError as err:  # a malformed URL, an unknown driver name
        raise ConfigError(f"not a database URL: {describe(url)}: {str(err).splitlines()[0][:200]}",
                          hint="e.g. postgresql://user@host:5432/db") from None


#: The drivers cnnbench's extras install, by module.
_EXTRAS = {"psycopg": "postgres", "redis": "redis"}


def _no_driver(url: str, module: str) -> None:
    extra = _EXTRAS.get(module)
    raise ConfigError(f"cannot open storage {describe(url)}: its driver, the Python module {module!r}, is not "
                      "installed", hint=f"pip install 'cnnbench[{extra}]'" if extra else
                      f"pip install the package that provides {module!r}, or name a driver installed here in the "
                      "URL (postgresql+psycopg://...)")


def open_storage(url: str | None) -> "optuna.storages.BaseStorage":
    """Open (creating when needed) the Optuna storage at ``url``; ``None`` is the default journal file.

    A redis URL may end in ``?prefix=NAME`` to keep its keys apart from others in the same database.
    """
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalRedisBackend

    check_url(url)
    journal = url is None or url.endswith(".log") or url.startswith("journal:")
    try:
        # The redis backend and heartbeats are marked experimental; cnnbench's tests cover both.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if journal:
                path = (url or DEFAULT_JOURNAL).removeprefix("journal:")
                _check_journal(Path(path))
                return JournalStorage(_whole_appends()(path))
            if url.startswith(("redis://", "rediss://")):
                plain, prefix = _redis_parts(url)
                return JournalStorage(JournalRedisBackend(plain, prefix=prefix))
            if (path := local_file(url)) is not None:
                _check_sqlite(path, "optuna")
            # Heartbeats let sweep.recover fail and retry the trials of workers that died anywhere.
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                              engine_kwargs=None if url.startswith("sqlite") else _ENGINE_KWARGS | (
                                  {"connect_args": _PG_CONNECT} if url.startswith("postgresql") else {}))
    except Exception as err:  # driver missing, server down, bad credentials
        from cnnbench.errors import redact

        kind = UnreachableStorage if unavailable(err) else StudyError
        not_journal = journal and isinstance(err, ValueError)  # _check_journal's refusal, or a damaged line
        if not_journal and (cut := _cut_record(Path(path))):
            line, broken = cut
            raise StudyError(f"cannot open storage {describe(url)}: its line {line} starts with half a record, cut "
                             "short (by a full disk, say) and run into the next one, so Optuna reads none of it",
                             hint=f"sed -i.bak '{line}s/^.\\{{{broken}\\}}//' {path} cuts that half off and keeps a "
                             f"copy ({path}.bak); every whole record, every trial, stays") from None
        raise kind(f"cannot open storage {describe(url)}: {(redact(str(err)).splitlines() or [repr(err)])[0][:200]}",
                   hint="it is not an Optuna journal, or it is damaged: move it aside to start afresh, or give "
                        "another --storage" if not_journal else OWN_FILE if isinstance(err, _WrongDatabase)
                   else "check the URL and that the database is up") from None


def _cut_record(path: Path) -> tuple[int, int] | None:
    """Where a journal line is half a record run into a whole one (Optuna's own writer left such halves on a full
    disk, before :func:`_whole_appends`): the line's number and the length of the half, else ``None``."""
    with contextlib.suppress(OSError), path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                json.loads(line)
                continue
            except ValueError:
                pass
            start = line.rfind(b'{"op_code":')
            if start > 0 and line.endswith(b"\n"):
                with contextlib.suppress(ValueError):
                    json.loads(line[start:])
                    return number, start
            return None
    return None


@functools.lru_cache(maxsize=None)
def _whole_appends() -> type:
    """Optuna's journal file backend, but each append lands whole or not at all.

    Optuna writes a record with one buffered write: where the disk fills up it leaves part of it, and the next
    append (once there is room) glues a record to that part, a line no reader decodes, so the study can never be
    read again. Here a write that fails is cut off again, under the journal's lock.
    """
    from optuna.storages.journal import JournalFileBackend

    class WholeAppends(JournalFileBackend):
        def append_logs(self, logs: list[dict]) -> None:
            view = memoryview(("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode())
            self._lock.acquire()
            fd = None
            try:
                fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
                end = os.lseek(fd, 0, os.SEEK_END)
                try:
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:  # a full disk, or Ctrl-C between two writes
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                    raise
            finally:
                if fd is not None:
                    os.close(fd)
                self._lock.release()

    return WholeAppends


def _check_journal(path: Path) -> None:
    """Raise ``ValueError`` where ``path`` holds something other than an Optuna journal, before anything is added.

    Optuna reads past a last line it cannot decode (a write cut short) and appends after it, so a file of one
    line that is not JSON (not a journal at all) would be written to, and unreadable from then on.
    """
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            json.loads(f.readline())


# A server that went away is noticed within a minute instead of hanging on TCP's defaults.
_ENGINE_KWARGS = {"pool_pre_ping": True}
_PG_CONNECT = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
               "keepalives_count": 3}


def _redis_parts(url: str) -> tuple[str, str]:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", "")
    return urlunsplit(parts._replace(query=urlencode(query))), prefix


@contextlib.contextmanager
def study_lock(name: str, url: str | None = None):
    """Hold the study's lock while its stores are created, its budget counted or a trial asked for.

    The lock is a file next to a journal or sqlite storage (for a server: in ``CNNBENCH_LOCK_DIR`` or
    the working directory), so it is held by one process on this machine at a time; on a PostgreSQL
    or Redis storage it is also held in the database, so by one process on every machine sharing it.
    """
    path = lock_folder(url)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f".cnnbench-{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if url is not None and url.startswith("postgresql"):
                with _postgres_lock(url, name):
                    yield
            elif url is not None and url.startswith(("redis://", "rediss://")):
                with _redis_lock(url, name):
                    yield
            else:
                yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_folder(url: str | None) -> Path:
    """Return the folder :func:`study_lock` keeps its lock file in, for the storage at ``url``."""
    here = local_file(url)
    return here.parent if here is not None else Path(os.environ.get("CNNBENCH_LOCK_DIR", "."))


#: How long a study lock is waited for before the wait counts as the database being unavailable.
LOCK_WAIT_SECONDS = 300


@functools.lru_cache(maxsize=None)
def _engine(url: str):
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_PG_CONNECT)


@contextlib.contextmanager
def _postgres_lock(url: str, name: str):
    # A session-level advisory lock on its own connection: PostgreSQL releases it when that connection
    # ends, so a worker killed while holding it, or whose machine is lost (keepalives), blocks no one.
    import sqlalchemy

    key = zlib.crc32(f"cnnbench:{name}".encode())
    conn = _engine(url).connect()
    try:
        for setting in (f"lock_timeout = '{LOCK_WAIT_SECONDS}s'", "tcp_keepalives_idle = 30",
                        "tcp_keepalives_interval = 10", "tcp_keepalives_count = 3"):
            conn.execute(sqlalchemy.text(f"SET {setting}"))
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
    except BaseException:
        conn.invalidate()
        raise
    try:
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.close()
        except Exception:
            conn.invalidate()  # the server is gone or the connection broke: the lock went with it


@contextlib.contextmanager
def _redis_lock(url: str, name: str):
    # Expires on its own, so a holder that died blocks the others for at most that long.
    import redis

    plain, prefix = _redis_parts(url)
    lock = redis.Redis.from_url(plain).lock(f"{prefix}:cnnbench-lock:{name}", timeout=LOCK_WAIT_SECONDS,
                                            blocking_timeout=LOCK_WAIT_SECONDS)
    try:
        acquired = lock.acquire()
    except redis.exceptions.ResponseError as err:  # the server refuses the URL: a database it lacks (/99), say
        raise StudyError(f"cannot open storage {describe(url)}: {err}", hint="check the URL") from None
    if not acquired:
        raise StudyError(f"the lock of study {name!r} in {describe(url)} was not released in {LOCK_WAIT_SECONDS} s",
                         hint="another worker holds it; run again")
    try:
        yield
    finally:
        with contextlib.suppress(redis.exceptions.RedisError):
            lock.release()


def unavailable(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) means the storage could not be reached: down, restarting, network lost,
    or busy past its lock timeout. Optuna wraps these in ``StorageInternalError``; the cause tells."""
    import sqlalchemy.exc

    kinds: tuple[type, ...] = (ConnectionError, TimeoutError, sqlalchemy.exc.OperationalError,
                               sqlalchemy.exc.InterfaceError)
    with contextlib.suppress(ImportError):
        import redis

        kinds += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    return any(isinstance(e, kinds + (UnreachableStorage,)) for e in chain(err))


@dataclass(frozen=True)
class StudyRecord:
    """What a report reads of an Optuna study: its first objective, that objective's direction, its trials
    (columns trial, state, value, baseline; state INTERRUPTED for a trial failed as cut short), its parameter
    importances (name -> share, summing to 1), all its objectives and, for a study of several, its Pareto front's
    trial numbers."""

    name: str
    objective: str
    direction: str
    trials: "pd.DataFrame"
    importances: dict[str, float]
    objectives: list[str] = field(default_factory=list)
    front: list[int] = field(default_factory=list)
    parent_run: str | None = None  # the MLflow run of its sweep, which its trials' runs are nested under


@functools.cache
def _sqlalchemy_unquotes() -> bool:
    """Whether the installed SQLAlchemy decodes percent escapes in a URL's database path (2.1 and newer), told from
    its version: importing it to ask would cost a command 0.3 s."""
    from importlib.metadata import version

    major, minor = (int(part) for part in re.findall(r"\d+", version("sqlalchemy"))[:2])
    return (major, minor) >= (2, 1)


def local_file(url: str | None) -> Path | None:
    """Return the file behind a journal or sqlite storage URL (``None``: the default journal), or ``None`` for a
    server."""
    if url is None:
        return Path(DEFAULT_JOURNAL)
    if url.startswith("sqlite:///"):
        # Read as SQLAlchemy reads it: the query apart, and percent escapes decoded by 2.1 and newer (MLflow's default
        # store in a folder named "my runs" is sqlite:///.../my%20runs/mlflow.db), not by 2.0, the newest on Python
        # 3.10, which opens .../my%20runs/mlflow.db as written.
        rest = url.removeprefix("sqlite:///").partition("?")[0]
        rest = unquote(rest) if _sqlalchemy_unquotes() else rest
        return None if rest in ("", ":memory:") else Path(rest)
    if url.endswith(".log") or url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    return None


def same_file(url: str | None, other: str | None) -> bool:
    """Whether two storage or tracking URLs name one local file."""
    first, second = local_file(url), local_file(other)
    return first is not None and second is not None and first.resolve() == second.resolve()


def open_existing(url: str | None) -> "optuna.storages.BaseStorage | None":
    """Open the storage at ``url`` to read it, or return ``None`` where it is a journal or SQLite file that is not
    there, or a database server's database without Optuna's tables: a missing file is not created, nor are the
    tables (Optuna's ``RDBStorage`` makes them on opening)."""
    path = local_file(url)
    if path is not None:
        return open_storage(url) if path.is_file() else None
    return open_storage(url) if _optuna_tables(url) else None


def _optuna_tables(url: str) -> bool:
    """Whether the database at server URL ``url`` may hold Optuna's tables: ``False`` only where a PostgreSQL
    database was read and holds none. Redis keeps no tables; any other server, or a database that cannot be read
    here, is left to :func:`open_storage` to open or refuse as it does."""
    if not url.startswith("postgresql"):
        return True
    try:
        import sqlalchemy

        return sqlalchemy.inspect(_engine(url)).has_table("studies")
    except Exception:  # a driver missing, the server down: open_storage says which, as it always has
        return True


def damaged(url: str | None, owner: str = "optuna") -> tuple[str, str | None] | None:
    """Why the local file behind ``url`` (a journal or SQLite storage URL, Optuna's or, with ``owner="mlflow"``,
    MLflow's) cannot be what the URL names, with what to do where that is particular (another program's database),
    or ``None``: no such file yet, a server, or a file of the right kind. Reads a few bytes, and the names of a
    SQLite database's tables."""
    path = local_file(url)
    if path is None or not path.is_file() or not path.stat().st_size:
        return None
    try:
        if url is not None and url.startswith("sqlite:///"):
            _check_sqlite(path, owner)
        else:
            _check_journal(path)
    except _WrongDatabase as err:
        return str(err), OWN_FILE if owner == "optuna" else OWN_STORE
    except _NotSqlite as err:
        return str(err), None
    except ValueError:  # _check_journal's refusal
        return f"{path} is not an Optuna journal, or it is damaged", None
    return None


@dataclass
class StoredRun:
    """How an MLflow store holds a run: its lifecycle stage ("active" or "deleted"), and its experiment's id and
    whether that is deleted (which deletes its runs with it)."""

    stage: str
    experiment_id: str
    experiment_deleted: bool


@dataclass
class StoredExperiment:
    """How an MLflow store holds an experiment: its id, whether it is deleted, where its runs' artifacts go."""

    experiment_id: str
    deleted: bool
    artifact_location: str


def _read_store(url: str, query: str, params: tuple) -> list[tuple] | None:
    """Return the rows of ``query`` on the MLflow store at ``url`` where it is a local SQLite file, read-only and
    without MLflow (whose import alone takes seconds, and which would make its tables in a store that another
    command starting at the same moment is making: see sweep.run); ``None`` where it is not one, is not there or
    empty, or cannot be read as MLflow's (yet)."""
    import sqlite3

    path = local_file(url) if url.startswith("sqlite:///") else None
    if path is None or not path.is_file() or not path.stat().st_size:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(query, params).fetchall()
    except sqlite3.Error:
        return None


def stored_experiment(url: str, name: str) -> StoredExperiment | None:
    """Return how the local MLflow store at ``url`` holds experiment ``name`` (:func:`_read_store`); ``None`` where
    it does not, or cannot be read."""
    rows = _read_store(url, "SELECT experiment_id, lifecycle_stage, artifact_location FROM experiments WHERE name = ?",
                       (name,))
    return StoredExperiment(str(rows[0][0]), rows[0][1] == "deleted", rows[0][2]) if rows else None


def stored_runs(url: str, run_ids: list[str]) -> dict[str, StoredRun] | None:
    """Return how the local MLflow store at ``url`` holds each of ``run_ids`` that it holds, in any experiment (a
    run removed for good by `mlflow gc` is not there); ``None`` where it cannot be read (:func:`_read_store`)."""
    found: dict[str, StoredRun] = {}
    for start in range(0, len(run_ids), 500):  # SQLite's limit on a statement's parameters is 999 in old releases
        chunk = tuple(run_ids[start:start + 500])
        rows = _read_store(url, "SELECT r.run_uuid, r.lifecycle_stage, e.experiment_id, e.lifecycle_stage FROM runs r "
                           "JOIN experiments e ON r.experiment_id = e.experiment_id "
                           f"WHERE r.run_uuid IN ({', '.join('?' * len(chunk))})", chunk)
        if rows is None:
            return None
        found.update({run: StoredRun(stage, str(experiment), held == "deleted") for run, stage, experiment, held in rows})
    return found


class _WrongDatabase(ValueError):
    """A SQLite file that another program's tables are in."""


class _NotSqlite(ValueError):
    """A file that is not a SQLite database, or cannot be read as one."""


#: Tables only each program's SQLite database holds.
_TABLES = {"optuna": {"studies", "trials", "version_info"}, "mlflow": {"experiments", "runs", "latest_metrics"}}
_NAMES = {"optuna": "an Optuna storage", "mlflow": "an MLflow store"}


def _check_sqlite(path: Path, owner: str) -> None:
    """Raise ``ValueError`` where the file at ``path`` is not a SQLite database, or holds tables but not the owner's
    (an MLflow store named as Optuna's storage, say, or another program's database), before anything is added:
    Optuna and MLflow each create their tables in the database they are given, beside whatever is there."""
    import sqlite3

    if not path.is_file() or not path.stat().st_size:
        return
    with path.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise _NotSqlite(f"{path} is not a SQLite database")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        if "locked" in str(err):  # a writer held it past sqlite3's 5 s wait: whose it is stays unjudged
            return
        raise _NotSqlite(f"{path} cannot be read as a SQLite database: {err}") from None
    tables = {name for name in tables if not name.startswith("sqlite_")}  # SQLite's own
    if not tables or _TABLES[owner] <= tables:
        return
    known = next((other for other, marks in _TABLES.items() if other != owner and marks <= tables), None)
    shown = listed(sorted(tables), most=3)
    raise _WrongDatabase(f"{path} is {_NAMES[known] if known else f'a database of other tables ({shown})'}, "
                         f"not {_NAMES[owner]}")


def existing_study(url: str | None, name: str) -> "optuna.Study | None":
    """Study ``name`` of the storage at ``url``; ``None`` when the storage file or the study is not there (a
    missing file is not created)."""
    import optuna

    if (store := open_existing(url)) is None:
        return None
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        return None


def read_study(url: str | None, name: str) -> StudyRecord | None:
    """Return study ``name`` of the storage at ``url`` as plain data; ``None`` when the storage file or the study
    is not there (a missing file is not created). Raises :class:`StudyError` when the storage cannot be opened."""
    if (study := existing_study(url, name)) is None:
        return None
    import pandas as pd

    trials = study.get_trials(deepcopy=False)
    frame = pd.DataFrame([{"trial": t.number, "value": t.values[0] if t.values else None,
                           "state": "INTERRUPTED" if t.user_attrs.get("reason") == INTERRUPTED else t.state.name,
                           "baseline": t.user_attrs.get("baseline", "")} for t in trials],
                         columns=["trial", "state", "value", "baseline"]).astype({"value": float})
    names = objectives(study)
    front = sorted(t.number for t in study.best_trials) if len(study.directions) > 1 else []
    return StudyRecord(name, names[0], study.directions[0].name.lower(), frame, param_importances(study),
                       names, front, study.user_attrs.get(PARENT_ATTR))


def sampled_study(study: optuna.Study) -> optuna.Study:
    """Return an in-memory copy of ``study`` holding only its complete trials that sampled their parameters.

    Baselines are left out: they sample nothing, and a trial without parameters leaves no parameter
    common to every trial, so no importance evaluator could assess any (Optuna 5's default then
    spreads all-zero importances evenly over the parameters, as if each mattered as much).
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" on the user's terminal
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials([t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                     if t.params and not t.user_attrs.get("baseline")])
    return copy


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA, seeded: the share of the objective's variance each parameter explains, the same on every read."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def varied_params(study: optuna.Study) -> list[str]:
    """Return the parameters that every trial of ``study`` has and that took more than one value among them: those
    an importance can be given to (one that never varied, such as a search-space entry with a single choice,
    explains none of the objective's variation and would only be listed at zero)."""
    trials = study.get_trials(deepcopy=False)
    common = [name for name in (trials[0].params if trials else {}) if all(name in t.params for t in trials)]
    return [name for name in common if len({repr(t.params[name]) for t in trials}) > 1]


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Return the share of the first objective's variance each varied parameter (:func:`varied_params`) explains,
    summing to 1, over the study's complete sampled trials (:func:`sampled_study`); empty when there are fewer
    than two or nothing varies."""
    import optuna

    sampled = sampled_study(study)
    params = varied_params(sampled)
    if not params:  # fewer than two trials, or nothing varied
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = optuna.importance.get_param_importances(sampled, evaluator=importance_evaluator(), params=params,
                                                          target=lambda t: t.values[0], normalize=False)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # the evaluator could not weigh these trials
    total = sum(raw.values())
    return {name: float(value) / total for name, value in raw.items()} if total > 0 else {}


def objectives(study: optuna.Study) -> list[str]:
    """The names of a study's objectives, as its sweep recorded them; ``["value"]`` for a study other tools made."""
    return (study.user_attrs.get(IDENTITY_ATTR) or {}).get("objective") or ["value"]


def validation_images(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """How many validation images ``trial``'s accuracies were measured on: its ``val_fraction`` of the training
    images its study records, rounded as ``cnnbench.data.load`` splits them; ``None`` where the study records no
    data (made before it did) or the trial had no validation split."""
    fraction = (trial.user_attrs.get("config") or {}).get("val_fraction")
    train = (study.user_attrs.get(DATA_ATTR) or {}).get("train")
    if fraction is None or train is None:
        return None
    return int(round(fraction * train)) or None


def best_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """Return the ``top`` best complete trials, by the first objective.

    In a study of several objectives the Pareto front comes first (by the first objective), then the rest.
    """
    ranked = _ranked(study)
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        ranked.sort(key=lambda t: t.number not in front)  # stable: each part stays in order
    return ranked[:top]


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.values[0], reverse=reverse)


#: How an error says a trial that is not complete stands, by the name of its state.
_STATE_WORDS = {"PRUNED": "was pruned", "FAIL": "failed", "RUNNING": "is still running", "WAITING": "is waiting to run"}


def complete_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Return the study's trial ``number``; raise :class:`StudyError` unless it exists and is complete."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    if number >= len(trials):
        held = f"it has {len(trials)}: 0-{len(trials) - 1}" if trials else "it has none yet"
        raise StudyError(f"study {study.study_name!r} has no trial {number} ({held})",
                         source="--trial", hint="`cnnbench best --top K` lists the best")
    trial = trials[number]
    if trial.state != optuna.trial.TrialState.COMPLETE:  # only a complete trial has a model to show and export
        reason, twin = trial.user_attrs.get("reason", ""), trial.user_attrs.get(DUPLICATE_ATTR)
        trained = twin is not None and trials[twin].state == optuna.trial.TrialState.COMPLETE
        words = _STATE_WORDS[trial.state.name]
        if reason.startswith("pruned "):  # a pruner's reason says it all: "pruned at half of epoch 1 (val_acc ...)"
            words, reason = f"was {reason}", ""
        raise StudyError(f"trial {number} of study {study.study_name!r} {words}"
                         + (f" ({reason})" if reason else "") + ": only a complete trial has a model",
                         source="--trial", hint=f"trial {twin} trained these settings: `cnnbench best --trial {twin}`"
                         if trained else "`cnnbench best --top K` lists the complete trials")
    return trial


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials no other complete trial beats on every objective, by the first objective."""
    front = {t.number for t in study.best_trials}
    return [t for t in _ranked(study) if t.number in front]


def load_study(name: str, storage: str | None) -> optuna.Study:
    """Load an existing study; raise :class:`StudyError` listing the studies there if it is missing.

    A storage file that is not there is not created: looking for a study records nothing.
    """
    import optuna

    store = open_existing(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)] if store is not None else []
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        raise StudyError(f"no study {name!r} in {describe(storage)}; studies there: {', '.join(names) or 'none'}",
                         hint=f"did you mean {close[0]!r}?" if close else "run `cnnbench sweep` first")
    return optuna.load_study(study_name=name, storage=store)


def studies(storage: str | None) -> list[str]:
    """Return the names of the studies in ``storage`` (none where its file is not there; it is not created)."""
    import optuna

    store = open_existing(storage)
    return [s.study_name for s in optuna.get_all_study_summaries(store)] if store is not None else []
