"""MLflow tracking: one experiment per study, a parent run per sweep, a nested run per trial.

The only module that imports ``mlflow``. It talks to MLflow through ``MlflowClient`` with explicit
run ids, so it holds no global run stack and works the same from any process.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from cnnbench.errors import CnnbenchError

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<auth>[^@/\s]+)@", re.I)


def redact(text: str) -> str:
    """Return ``text`` with the user:password part of any URL replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", str(text))


def tracking_uri() -> str:
    """Return the tracking URI in use: ``MLFLOW_TRACKING_URI`` or MLflow's default store."""
    return mlflow.get_tracking_uri()


class Tracker:
    """Records a sweep in one MLflow experiment; every call names its run explicitly."""

    def __init__(self, experiment: str):
        self.client = MlflowClient()
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self._create(experiment)
        except mlflow.exceptions.MlflowException as err:
            raise CnnbenchError(f"cannot reach the MLflow store {redact(tracking_uri())}: {redact(str(err))[:200]}",
                                hint="check MLFLOW_TRACKING_URI and that the server is up") from None

    def _create(self, name: str) -> str:
        try:
            return self.client.create_experiment(name, tags={"cnnbench": "1"})
        except mlflow.exceptions.MlflowException:  # another worker created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def start(self, name: str, *, tags: dict[str, Any], parent: str | None = None,
              params: dict[str, Any] | None = None) -> str:
        """Create a run (nested under ``parent`` if given) with ``tags`` and ``params``; return its id."""
        all_tags = {k: redact(v) for k, v in tags.items()}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log ``params`` (each once; values as strings, URLs without credentials)."""
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` in one call; ``None`` values are skipped."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Set ``tags`` on a run."""
        self.client.log_batch(run_id, tags=[RunTag(k, redact(str(v))[:5000]) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, folder: str | os.PathLike, path: str | None = None) -> None:
        """Upload every file under ``folder`` to the run (under ``path``)."""
        self.client.log_artifacts(run_id, str(folder), path)

    def log_pytorch_model(self, run_id: str, model, example) -> None:
        """Log ``model`` as an MLflow PyTorch model with its signature and input example."""
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model(example).numpy()
        signature = infer_signature(example.numpy(), output)
        reqs = [f"torch=={torch.__version__.split('+')[0]}"]
        # start_run(run_id) would end the run FINISHED on exit; Tracker.end sets the real status after.
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example.numpy(),
                                     pip_requirements=reqs)

    def end(self, run_id: str, status: str) -> None:
        """Close a run as FINISHED, KILLED or FAILED."""
        self.client.set_terminated(run_id, status=status)

    def run_status(self, run_id: str) -> str:
        """Return a run's status (RUNNING, FINISHED, KILLED, FAILED)."""
        return self.client.get_run(run_id).info.status

    def runs(self, filter_string: str = "") -> list:
        """Return the experiment's runs matching ``filter_string``."""
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=50000)

    def url(self, run_id: str) -> str:
        """Return where a person finds the run: the UI path under the tracking URI."""
        return f"{redact(tracking_uri())}#/experiments/{self.experiment_id}/runs/{run_id}"


def export_run_info(tracker: Tracker, run_id: str) -> dict[str, Any]:
    """Return what a model card says of a run: its id, experiment and tracking URI."""
    return {"run_id": run_id, "experiment_id": tracker.experiment_id, "tracking_uri": redact(tracking_uri()),
            "url": tracker.url(run_id)}


def download_artifact(run_id: str, path: str, dst: str | os.PathLike) -> Path:
    """Download one artifact of a run into ``dst``; return its local path."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def register_model(run_id: str, name: str) -> str:
    """Register the MLflow model logged in run ``run_id`` under ``name``; return the new version."""
    version = mlflow.register_model(f"runs:/{run_id}/model", name)
    return str(version.version)


# These read the MLflow store for the report. They belong in cnnbench/tracking.py (the one module that imports
# mlflow); once moved, this section becomes
# ``from cnnbench.tracking import cnnbench_experiments, metric_histories, search_runs`` at the top.





def _unreadable(err: Exception) -> CnnbenchError:
    return CnnbenchError(f"cannot read the MLflow store {redact(tracking_uri())}: {redact(str(err))[:200]}",
                         hint="check MLFLOW_TRACKING_URI and that the server is up")


def cnnbench_experiments() -> dict[str, str]:
    """Return the experiments cnnbench created in the tracking store (tag ``cnnbench=1``): name -> id, by name."""
    try:
        found = mlflow.search_experiments(filter_string="tags.cnnbench = '1'")
    except mlflow.exceptions.MlflowException as err:
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
    except mlflow.exceptions.MlflowException as err:
        raise _unreadable(err) from None
    finally:
        if collecting:
            gc.enable()


def metric_histories(run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Return the logged steps of metrics ``keys`` of runs ``run_ids``: columns run_id, key, step, value.

    One call per run and key: meant for a few runs, not for thousands.
    """
    client = MlflowClient()
    keys = list(keys)
    try:
        rows = [(run_id, m.key, m.step, m.value) for run_id in run_ids for key in keys
                for m in client.get_metric_history(run_id, key)]
    except mlflow.exceptions.MlflowException as err:
        raise _unreadable(err) from None
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
