"""MLflow tracking: one experiment per study, a parent run per sweep, a nested run per trial.

The only module that imports ``mlflow``. It talks to MLflow through ``MlflowClient`` with explicit
run ids, so it holds no global run stack and works the same from any process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Iterable

import mlflow
import pandas as pd
import sqlalchemy.exc
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.tracking import MlflowClient

from cnnbench.errors import CnnbenchError, ConfigError, StudyError, Unavailable, chain, outlast, redact
from cnnbench.storage import StoredRun, damaged, local_file, stored_experiment
from cnnbench.storage import stored_runs as local_runs

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
# MLflow logs each database error with its traceback before raising it; cnnbench says what failed, in one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
# MLflow retries an unreachable server silently for about four minutes per call; cnnbench retries with a message
# and one time limit (errors.outlast), so MLflow's own retries are kept short unless the user set them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# With a server store MLflow prints two lines of links as each run ends (a trial's run ends, or is ended again, more
# than once); the sweep says where its runs are, once.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
#: What reading a store that is not MLflow's raises: MLflow's own errors, and a file that is no database.
_STORE_ERRORS = (mlflow.exceptions.MlflowException, sqlalchemy.exc.DatabaseError)

_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")


def tracking_uri() -> str:
    """Return the tracking URI in use: ``MLFLOW_TRACKING_URI`` or MLflow's default store."""
    return mlflow.get_tracking_uri()


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) means the MLflow store could not be reached or is busy for now."""
    import requests
    import sqlalchemy.exc

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError,
             ConnectionError, TimeoutError, sqlalchemy.exc.OperationalError)
    return any(isinstance(e, kinds) or getattr(e, "error_code", None) in _TRANSIENT_CODES for e in chain(err))


class Tracker:
    """Records a sweep in one MLflow experiment; every call names its run explicitly.

    Calls that find the store unreachable are retried for up to :data:`~cnnbench.errors.PATIENCE_SECONDS`
    (saying so on stderr), then raise :class:`~cnnbench.errors.Unavailable`. With ``wait=False`` the first
    contact fails at once instead, for a command that has only just started. An experiment deleted in MLflow
    records no run: it is refused (:func:`deleted_experiment`) unless ``recording`` is false, for a command that
    only reads it.
    """

    def __init__(self, experiment: str, *, wait: bool = True, recording: bool = True):
        self.gave_up = False
        check_store()
        try:
            if (new := missing_store()) is not None and tracking_uri().startswith("sqlite:"):
                _make_store(new)
            self.client = MlflowClient()
            found = self._call(self.client.get_experiment_by_name, experiment) if wait else \
                self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self._create(experiment)
        except _STORE_ERRORS as err:
            raise _unreadable(err, "reach") from None
        if recording and found is not None and found.lifecycle_stage == "deleted":
            raise deleted_experiment(experiment, found.experiment_id)

    def _call(self, fn, *args, **kwargs):
        try:
            result = outlast(lambda: fn(*args, **kwargs), what=f"the MLflow store {redact(tracking_uri())}",
                             transient=unreachable)
        except Unavailable:
            self.gave_up = True
            raise
        self.gave_up = False
        return result

    def _create(self, name: str) -> str:
        try:
            return self._call(self.client.create_experiment, name, tags={"cnnbench": "1"})
        except mlflow.exceptions.MlflowException:  # another worker created it first
            return self._call(self.client.get_experiment_by_name, name).experiment_id

    def start(self, name: str, *, tags: dict[str, Any], parent: str | None = None,
              params: dict[str, Any] | None = None) -> str:
        """Create a run (nested under ``parent`` if given) with ``tags`` and ``params``; return its id."""
        # A token tag lets a retried create find the run an earlier attempt made before its answer was lost.
        token = uuid.uuid4().hex
        all_tags = {k: redact(v) for k, v in tags.items()} | {"cnnbench.token": token}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        attempts = []

        def create() -> str:
            if attempts:
                found = self.client.search_runs([self.experiment_id], f"tags.`cnnbench.token` = '{token}'")
                if found:
                    return found[0].info.run_id
            attempts.append(1)
            return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

        run_id = self._call(create)
        if params:
            self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log ``params`` (each once; values as strings, URLs without credentials).

        A param that another process logs to the same run at the same moment with the same value (the
        sweep commands of one study each record its best on the sweep's run) is not an error.
        """
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            batch = items[i:i + 100]
            try:
                self._call(self.client.log_batch, run_id, params=batch)
            except mlflow.exceptions.MlflowException as err:
                if not _duplicate_key(err):
                    raise
                # The other insert came between MLflow's check for existing params and its own insert; MLflow
                # skips params already logged with the same value, so the second attempt inserts only the rest.
                self._call(self.client.log_batch, run_id, params=batch)

    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` in one call; ``None`` values are skipped."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if items:
            self._call(self.client.log_batch, run_id, metrics=items)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Set ``tags`` on a run."""
        self._call(self.client.log_batch, run_id, tags=[RunTag(k, redact(str(v))[:5000]) for k, v in tags.items()])

    def log_dataset(self, run_id: str, name: str, digest: str, profile: dict[str, Any], source: str) -> None:
        """Record that the run trains on dataset ``name`` (``digest`` tells one version of it from another), read
        from ``source``: MLflow's UI lists it in the run's Datasets."""
        dataset = Dataset(name=name, digest=digest, source_type="local", source=source, profile=json.dumps(profile))
        context = InputTag("mlflow.data.context", "training")
        self._call(self.client.log_inputs, run_id, [DatasetInput(dataset, [context])])

    def log_artifacts(self, run_id: str, folder: str | os.PathLike, path: str | None = None) -> None:
        """Upload every file under ``folder`` to the run (under ``path``)."""
        self._call(self.client.log_artifacts, run_id, str(folder), path)

    def log_pytorch_model(self, run_id: str, model, example) -> None:
        """Log ``model`` as an MLflow PyTorch model with its signature and input example."""
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model(example).numpy()
        signature = infer_signature(example.numpy(), output)
        reqs = [f"torch=={torch.__version__.split('+')[0]}"]

        def log() -> None:
            # start_run(run_id) reopens the run and ends it FINISHED, or FAILED on any exception (a Ctrl-C): a run
            # already ended (the best trial's, logged after the sweep) gets its status back; Tracker.end sets a
            # running one's after.
            status = self.client.get_run(run_id).info.status
            try:
                with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                    mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example.numpy(),
                                             pip_requirements=reqs)
            finally:
                if status != "RUNNING":
                    self.client.set_terminated(run_id, status=status)

        self._call(log)

    def end(self, run_id: str, status: str) -> None:
        """Close a run as FINISHED, KILLED or FAILED."""
        self._call(self.client.set_terminated, run_id, status=status)

    def artifacts(self, run_id: str) -> list[str]:
        """Return the paths of the files and folders at the top of a run's artifacts."""
        return [a.path for a in self._call(self.client.list_artifacts, run_id)]

    def run_data(self, run_id: str):
        """Return a run's data: its ``params``, ``tags`` and latest ``metrics``, as dicts."""
        return self._call(self.client.get_run, run_id).data

    def status(self, run_id: str) -> str:
        """Return a run's status: RUNNING, FINISHED, KILLED or FAILED."""
        return self._call(self.client.get_run, run_id).info.status

    def stage(self, run_id: str) -> str | None:
        """Return a run's lifecycle stage ("active", "deleted"), or ``None`` where it is not in the store (removed for
        good by `mlflow gc`)."""
        try:
            return self._call(self.client.get_run, run_id).info.lifecycle_stage
        except mlflow.exceptions.MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def runs(self, filter_string: str = "") -> list:
        """Return the experiment's runs matching ``filter_string``."""
        return self._call(self.client.search_runs, [self.experiment_id], filter_string=filter_string,
                          max_results=50000)

    def url(self, run_id: str) -> str:
        """Return where a person finds the run in MLflow's UI: under a tracking server's address, or, for a
        local store, under the address `mlflow ui` serves it on by default, with the command."""
        uri = redact(tracking_uri())
        path = f"#/experiments/{self.experiment_id}/runs/{run_id}"
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/{path}"
        return f"http://127.0.0.1:5000/{path} (with `mlflow ui --backend-store-uri {uri}` running)"


def _duplicate_key(err: BaseException) -> bool:
    """Whether ``err`` is a database's unique-key violation (SQLite, PostgreSQL, MySQL; direct or via a server)."""
    text = str(err)
    return any(s in text for s in ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry",
                                   "IntegrityError"))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(backend: str, artifacts: str | os.PathLike, *, host: str = "127.0.0.1", port: int | None = None,
           log: str | os.PathLike | None = None, timeout: float = 300):
    """Run ``mlflow server`` (backend store ``backend``, artifacts served from the folder ``artifacts``) while the
    block runs; yield its URL.

    It listens on 127.0.0.1 unless ``host`` says otherwise, which warns: MLflow's server has no authentication
    of its own, so anything else belongs behind a proxy that adds it (docs/distributed.md).
    """
    import ipaddress
    import signal
    import socket
    import subprocess
    import sys
    import warnings

    import requests

    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        warnings.warn(f"the MLflow server will listen on {host}, reachable from other machines, without "
                      "authentication; put it behind a proxy that authenticates", stacklevel=3)
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", host, "--port", str(port),
               "--workers", "1", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise CnnbenchError(f"mlflow server exited with code {proc.returncode} before it answered",
                                    hint=f"see {log}" if log else "run it by hand to see why")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.exceptions.RequestException:
                pass
            if time.monotonic() > deadline:
                raise CnnbenchError(f"mlflow server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


def export_run_info(tracker: Tracker, run_id: str) -> dict[str, Any]:
    """Return what a model card says of a run: its id, experiment and tracking URI."""
    return {"run_id": run_id, "experiment_id": tracker.experiment_id, "tracking_uri": redact(tracking_uri()),
            "url": tracker.url(run_id)}


def download_artifact(run_id: str, path: str, dst: str | os.PathLike, *, wait: bool = True) -> Path:
    """Download one artifact of a run into ``dst``; return its local path.

    An unreachable store is waited for as by :class:`Tracker`; with ``wait=False`` it fails at once, for a
    command whose first contact with the store this is.
    """
    # MLflow draws a progress bar for every download, even of one small file, in the middle of a sweep's
    # summary; a user who sets the variable keeps their choice.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def download() -> str:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))

    if not wait:
        return Path(download())
    return Path(outlast(download, what=f"the MLflow store {redact(tracking_uri())}", transient=unreachable))


def register_model(run_id: str, name: str) -> str:
    """Register the MLflow model logged in run ``run_id`` under ``name``; return the new version."""
    # MLflow 3 keeps a logged model apart from its run's artifacts: register it by its own id.
    outputs = mlflow.get_run(run_id).outputs
    models = [m.model_id for m in (outputs.model_outputs if outputs else [])]
    version = mlflow.register_model(f"models:/{models[-1]}" if models else f"runs:/{run_id}/model", name)
    return str(version.version)


_SCHEMA = re.compile(r"out-of-date database schema \(found version (\w+), but expected (\w+)\)")


def stale_schema(err: BaseException) -> ConfigError | None:
    """The error to give where ``err`` is MLflow refusing a database store of another MLflow's schema, else ``None``.

    MLflow opens a database only at its own schema's version, and says so in a paragraph that calls the store
    out of date even where a newer MLflow made it; this says which, and what to run. Nothing was written to it.
    """
    found = _SCHEMA.search(str(err))
    if found is None:
        return None
    theirs, ours = found.groups()
    store, version = redact(tracking_uri()), mlflow.__version__
    if _known_revision(theirs) is False:
        return ConfigError(f"the MLflow store {store} was made by a newer MLflow than this one ({version}): "
                           f"its schema {theirs} is unknown here", hint="upgrade MLflow to the version that made it "
                           "(pip install -U mlflow), or point MLFLOW_TRACKING_URI at another store")
    return ConfigError(f"the MLflow store {store} was made by an older MLflow: its schema is {theirs}, "
                       f"MLflow {version} reads {ours}",
                       hint=f"back it up, then run `mlflow db upgrade {store}`; cnnbench left it as it was")


def check_schema() -> None:
    """Raise :func:`stale_schema`'s error where the tracking store is a local database file of another MLflow's
    schema, before a sweep loads its data or touches its study (opening it costs nothing more: MLflow keeps the
    connection for the sweep's runs)."""
    if not tracking_uri().startswith("sqlite:") or missing_store() is not None:
        return
    try:
        mlflow.search_experiments(max_results=1)
    except _STORE_ERRORS as err:
        if stale := stale_schema(err):
            raise stale from None
        # anything else is said where the sweep first writes to the store, as it was


def _known_revision(revision: str) -> bool | None:
    """Whether this MLflow's migrations know ``revision`` (an older schema), or ``None`` where that cannot be told."""
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config  # MLflow's own, as `mlflow db upgrade` uses

        script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    except Exception:  # another MLflow's layout
        return None
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic: "No such revision"
        return False


def _unreadable(err: Exception, verb: str = "read") -> CnnbenchError:
    """One line for a store that cannot be reached or read: the store, and the first line of what went wrong."""
    if stale := stale_schema(err):
        return stale
    first = (redact(str(err)).splitlines() or [type(err).__name__])[0][:200]
    corrupt = isinstance(err, sqlalchemy.exc.DatabaseError) and not isinstance(err, sqlalchemy.exc.OperationalError)
    hint = ("the file is not an MLflow database: move it aside, or point MLFLOW_TRACKING_URI at the sweep's store"
            if corrupt else "check MLFLOW_TRACKING_URI and that the server is up")
    return CnnbenchError(f"cannot {verb} the MLflow store {redact(tracking_uri())}: {first}", hint=hint)


def missing_store() -> Path | None:
    """Return the file or folder of the tracking store where it is a local sqlite file or a folder that does not
    exist (connecting would create it, empty), else ``None``."""
    uri = tracking_uri()
    parsed = urllib.parse.urlparse(uri)
    if uri.startswith("sqlite:"):
        path = local_file(uri)
    elif parsed.scheme in ("", "file"):  # a folder store, where MLflow still opens one
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else uri)
    else:
        path = None
    return path if path is not None and not path.exists() else None


def _make_store(path: Path) -> None:
    """Make the tables of the new local store ``path`` so that no other program makes them at the same time.

    MLflow makes a store's tables under a file lock named after the text of its URL (``_safe_initialize_tables``),
    so two programs spelling one file differently (`mlflow ui` with ``sqlite:///mlflow.db``, a sweep with the
    absolute path) could make them at once, and one would die in a migration. This takes the locks of the spellings
    such programs use, in one order (as every cnnbench does: none waits on another that waits on it), then has
    MLflow make the tables in a file of its own beside it, put in place only when whole: a command stopped while
    the tables were being made (Ctrl-C, SIGTERM) leaves no store, where a half-made one refused every later command.
    """
    if os.name == "nt":  # MLflow takes no lock there
        return
    import fcntl
    import hashlib
    import tempfile

    uri = tracking_uri()
    _, sep, query = uri.partition("?")
    spellings = {uri, f"sqlite:///{path.absolute()}{sep}{query}"}
    if not (relative := os.path.relpath(path.absolute())).startswith(".."):
        spellings.add(f"sqlite:///{relative}{sep}{query}")  # MLflow's own default is sqlite:///mlflow.db
    # One lock per URL as SQLAlchemy renders it, which MLflow names the lock after: two spellings may render alike
    # (``my%20runs`` and ``my runs``), and a second lock of one file would wait on the first for ever.
    digests = {hashlib.md5(str(sqlalchemy.engine.make_url(s)).encode(), usedforsecurity=False).hexdigest()
               for s in spellings}
    # A name of its own each time: MLflow keeps an engine per URL, which would still hold an earlier file of it.
    making = path.absolute().with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.new")
    with contextlib.ExitStack() as held:
        for lock in sorted(f"{tempfile.gettempdir()}/db_init_lock-{digest}" for digest in digests):
            fcntl.flock(held.enter_context(open(lock, "w")), fcntl.LOCK_EX)
        try:
            if not path.exists():  # made by the program that held the locks before
                MlflowClient(f"sqlite:///{making}{sep}{query}").search_experiments(max_results=1)
                try:
                    os.link(making, path)  # never over a store another program made meanwhile without these locks
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links
                    if not path.exists():
                        os.replace(making, path)
        finally:
            making.unlink(missing_ok=True)


def local_store(experiment: str) -> tuple[Path | None, Path | None]:
    """Return the tracking store's SQLite file and the local folder a new run of ``experiment`` keeps its artifacts
    in (the experiment's own, else MLflow's default ``./mlruns``); ``None`` for either where it is not on this
    machine (a server, which says so itself; an experiment whose artifacts go to a server or a bucket)."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:") or (path := local_file(uri)) is None:
        return None, None
    found = stored_experiment(uri, experiment)
    location = found.artifact_location if found is not None else DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme not in ("", "file"):
        return path, None
    return path, Path(urllib.parse.unquote(parsed.path) if parsed.scheme else location)


def deleted_experiment(experiment: str, experiment_id: str) -> StudyError:
    """The error of a sweep whose MLflow experiment is deleted: MLflow records no run in it."""
    return StudyError(f"MLflow experiment {experiment!r} (id {experiment_id}) is deleted, in `mlflow ui` or by "
                      "`mlflow experiments delete`, so no run of the sweep can be recorded in it",
                      hint=f"restore it: `mlflow experiments restore --experiment-id {experiment_id}` (runs and all), "
                      "or give --study NAME to start another study")


def check_experiment(experiment: str) -> None:
    """Raise :class:`StudyError` where the tracking store holds ``experiment`` deleted (:func:`deleted_experiment`),
    and :class:`CnnbenchError` where it is a server that cannot be reached, before any data is loaded or any study
    made. A local SQLite file is read without MLflow; an MLflow server is asked once, without waiting for it (a
    database's, where MLflow would make its tables on first contact, by :class:`Tracker` under the study's lock)."""
    if urllib.parse.urlparse(tracking_uri()).scheme not in ("http", "https"):
        found = stored_experiment(tracking_uri(), experiment)
        deleted = found is not None and found.deleted
    else:
        try:
            found = MlflowClient().get_experiment_by_name(experiment)
        except _STORE_ERRORS as err:
            raise _unreadable(err, "reach") from None
        deleted = found is not None and found.lifecycle_stage == "deleted"
    if deleted:
        raise deleted_experiment(experiment, found.experiment_id)


def stored_runs(run_ids: list[str]) -> dict[str, StoredRun] | None:
    """Return how the tracking store holds each of ``run_ids`` that it holds, in any experiment (a run removed for
    good by `mlflow gc` is not there); ``None`` where the store is not there (nothing is created) or, a local file,
    cannot be read. A local file is read without MLflow; a server is asked a hundred runs at a time."""
    if missing_store() is not None:
        return None
    if local_file(tracking_uri()) is not None:
        return local_runs(tracking_uri(), run_ids)
    found: dict[str, StoredRun] = {}
    try:
        client = MlflowClient()
        deleted = {e.experiment_id: e.lifecycle_stage == "deleted"
                   for e in client.search_experiments(view_type=ViewType.ALL, max_results=50000)}
        ids = [run for run in run_ids if re.fullmatch(r"[0-9a-zA-Z_-]+", run)]  # quoted in a filter string
        for start in range(0, len(ids), 100):
            listed = ", ".join(f"'{run}'" for run in ids[start:start + 100])
            for run in client.search_runs(list(deleted), filter_string=f"attributes.run_id IN ({listed})",
                                          run_view_type=ViewType.ALL, max_results=100):
                found[run.info.run_id] = StoredRun(run.info.lifecycle_stage, run.info.experiment_id,
                                                   deleted[run.info.experiment_id])
    except _STORE_ERRORS as err:
        raise _unreadable(err) from None
    return found


def check_store_uri() -> None:
    """Raise :class:`ConfigError` where the tracking store is of a kind MLflow does not know (``foo://...``), or a
    folder (``./mlruns``, ``file:...``) that this MLflow refuses to open (3.13 and newer, unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set), before anything is recorded. Nothing is opened."""
    from mlflow import environment_variables

    uri = tracking_uri()
    try:  # MLflow's registry of store kinds, plugins' too: private, so where it moves the check is left to MLflow
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry.get_store_builder(uri)
    except ImportError:
        pass
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"the MLflow store {redact(uri)} is of no kind MLflow knows", source="MLFLOW_TRACKING_URI",
                          hint="unset it (runs then go to ./mlflow.db), or give sqlite:///FILE, http(s)://SERVER or "
                          "postgresql://...") from None
    allow = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)  # where it exists, MLflow refuses
    if allow is None or allow.get() or urllib.parse.urlparse(uri).scheme not in ("", "file"):
        return
    raise ConfigError(f"the MLflow store {uri} is a folder, which MLflow {mlflow.__version__} no longer opens",
                      source="MLFLOW_TRACKING_URI",
                      hint="unset it (runs then go to ./mlflow.db) or give sqlite:///FILE; `mlflow migrate-filestore` "
                      "moves a folder's runs into a database")


def check_store() -> None:
    """Raise :class:`CnnbenchError` where the tracking store is a local file that is not an MLflow store (an Optuna
    storage, say): MLflow would add its tables to it, and the program it belongs to could not open it again; or
    :class:`ConfigError` where it is of no kind MLflow knows or a folder this MLflow refuses (:func:`check_store_uri`).
    """
    check_store_uri()
    if found := damaged(tracking_uri(), "mlflow"):
        why, particular = found
        raise CnnbenchError(f"cannot read the MLflow store {redact(tracking_uri())}: {why}",
                            hint=particular or "the file is not an MLflow database: move it aside, or point "
                            "MLFLOW_TRACKING_URI at the sweep's store")


def cnnbench_experiments() -> dict[str, str]:
    """Return the experiments cnnbench created in the tracking store (tag ``cnnbench=1``): name -> id, by name."""
    check_store()  # a missing file is not damaged: a folder store this MLflow refuses is, though, even missing
    if missing_store() is not None:
        return {}  # nothing recorded yet
    try:
        found = mlflow.search_experiments(filter_string="tags.cnnbench = '1'")
    except _STORE_ERRORS as err:
        raise _unreadable(err) from None
    return {e.name: e.experiment_id for e in sorted(found, key=lambda e: e.name)}


def search_runs(experiment_names: list[str]) -> pd.DataFrame:
    """Return every run of the named experiments as one table: MLflow's ``run_id``, ``status``, ``params.*``,
    ``metrics.*`` (latest values) and ``tags.*`` columns, one search for them all."""
    if not experiment_names:
        return pd.DataFrame()
    # A thousand runs load as ~50,000 ORM objects, none of them garbage: pausing the cycle collector meanwhile
    # makes the search about three times faster.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return mlflow.search_runs(experiment_names=list(experiment_names), output_format="pandas")
    except _STORE_ERRORS as err:
        raise _unreadable(err) from None
    finally:
        if collecting:
            gc.enable()


def deleted_trial_runs(experiment_ids: list[str]) -> list[str]:
    """Return the dataset of each trial run of these experiments that is deleted (in `mlflow ui`, say), which
    :func:`search_runs` leaves out as MLflow's UI does."""
    try:
        runs = MlflowClient().search_runs(experiment_ids, run_view_type=ViewType.DELETED_ONLY, max_results=50000)
    except _STORE_ERRORS as err:
        raise _unreadable(err) from None
    return [run.data.tags.get("cnnbench.dataset", "") for run in runs if "cnnbench.trial" in run.data.tags]


def metric_histories(run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Return the logged steps of metrics ``keys`` of runs ``run_ids``: columns run_id, key, step, value.

    One call per run and key: meant for a few runs, not for thousands.
    """
    keys = list(keys)
    try:
        client = MlflowClient()
        rows = [(run_id, m.key, m.step, m.value) for run_id in run_ids for key in keys
                for m in client.get_metric_history(run_id, key)]
    except _STORE_ERRORS as err:
        raise _unreadable(err) from None
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
