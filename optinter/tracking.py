"""Experiment tracking behind a small protocol, so library code never imports MLflow directly.

Library functions take ``tracker: Tracker | None``; ``None`` means :class:`NullTracker`. A tracker
may also have ``log_model(bundle_dir)`` (the training stages then log the trained model;
:class:`MlflowTracker` logs it as an MLflow pyfunc model, :mod:`optinter.pyfunc`).
:class:`MlflowTracker` logs into one MLflow run (created by the caller, usually a nested run per
stage or per model); Prefect runs tasks in threads and MLflow's active run is per thread, so the
tracker always addresses its run by id through ``MlflowClient`` instead of the fluent API.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_TRACKING_DB = "mlflow.db"
#: Artifact path of a trained model's MLflow model in its run (``runs:/<run id>/model``).
MODEL_ARTIFACT = "model"


@runtime_checkable
class Tracker(Protocol):
    """Where a stage sends its parameters, metrics, tags and artifacts."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> "Tracker":
        """A tracker of a run nested under this one (a tuning trial, a compare job)."""
        ...

    def end(self, status: str = "FINISHED") -> None:
        """Close this tracker's run (``FINISHED``, ``FAILED``, ``KILLED``); a no-op where runs are not closed."""
        ...


class NullTracker:
    """Tracker that records nothing (the default for library calls and unit tests)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        pass

    def log_model(self, bundle_dir: str | Path) -> None:  # noqa: D102 — optional: trained-model logging
        pass

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> "Tracker":  # noqa: D102
        return NullTracker()

    def end(self, status: str = "FINISHED") -> None:  # noqa: D102
        pass


class RecordingTracker(NullTracker):
    """In-memory tracker for tests: keeps everything it is given."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.tags: dict[str, Any] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.models: list[str] = []
        self.children: list[tuple[str, dict[str, Any], RecordingTracker]] = []
        self.status: str | None = None

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> "RecordingTracker":  # noqa: D102
        c = RecordingTracker()
        c.tags.update(tags or {})
        self.children.append((name, dict(tags or {}), c))
        return c

    def end(self, status: str = "FINISHED") -> None:  # noqa: D102
        self.status = status

    def log_params(self, params: Mapping[str, Any]) -> None:  # noqa: D102
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:  # noqa: D102
        self.tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        self.artifacts.append((str(path), artifact_path))

    def log_model(self, bundle_dir: str | Path) -> None:  # noqa: D102
        self.models.append(str(bundle_dir))

    def last(self, key: str) -> float:
        """Last logged value of metric ``key``."""
        vals = [v for k, v, _ in self.metrics if k == key]
        if not vals:
            raise KeyError(key)
        return vals[-1]


def default_tracking_uri(root: str | Path = ".") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file ``mlflow.db`` under ``root``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(root) / DEFAULT_TRACKING_DB).resolve()}"


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


class MlflowTracker:
    """Logs into an existing MLflow run, addressed by id (thread-safe with Prefect's task threads)."""

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def __getstate__(self) -> dict[str, Any]:
        # travels (e.g. to a Dask worker running the job) as the run it logs to; the client is rebuilt there
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run_id"], state["tracking_uri"])  # type: ignore[misc]

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> "MlflowTracker":
        """A new run nested under this one, in the same experiment."""
        exp = self.client.get_run(self.run_id).info.experiment_id
        return MlflowTracker(start_run(exp, name, tags, parent_run_id=self.run_id, tracking_uri=self.tracking_uri),
                             tracking_uri=self.tracking_uri)

    def end(self, status: str = "FINISHED") -> None:
        end_run(self.run_id, status, self.tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [
            Metric(k, float(v), ts, step or 0)
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        for i in range(0, len(ms), 500):
            self.client.log_batch(self.run_id, metrics=ms[i : i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            log.warning("artifact %s does not exist; not logged", path)

    def log_model(self, bundle_dir: str | Path) -> None:
        """The trained model in ``bundle_dir`` as an MLflow pyfunc model at ``runs:/<run id>/model``."""
        import importlib

        # imported by a computed name: the MLflow model writes nothing into a stage's folder, so the
        # stages' code fingerprints (flows.cache, which reads import statements) need not cover it
        pyfunc = importlib.import_module(f"{__package__}.pyfunc")
        pyfunc.log_pyfunc_model(self.client, self.run_id, bundle_dir)


def as_tracker(tracker: Tracker | None) -> Tracker:
    """``tracker`` itself, or a :class:`NullTracker` for ``None``."""
    return tracker if tracker is not None else NullTracker()


# ---- run management (used by flows/ and the CLI; the stage functions only see a Tracker) -------------

DEFAULT_EXPERIMENT = "optinter"
DEFAULT_ARTIFACT_DIR = "mlartifacts"

#: Environment that keeps Prefect and MLflow from calling home (``DO_NOT_TRACK`` must be the word
#: ``true``: MLflow ignores ``1``).
OFFLINE_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

#: Set beside :data:`OFFLINE_ENV`: no progress bar per artifact copied from run to run, and no
#: Prefect warning per library log record sent outside a flow run ("... without a flow run id").
QUIET_ENV: dict[str, str] = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                             "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}

# Tags every optinter run carries (so the MLflow UI's compare view and searches line up).
TAG_STAGE = "stage"
TAG_MODEL = "model"
TAG_DATASET = "dataset"
TAG_DATA_HASH = "data_hash"
TAG_ARCH_HASH = "arch_hash"
TAG_CACHED = "cached"
TAG_KEY = "optinter.stage_key"
TAG_OUTPUT = "optinter.output_uri"
TAG_SOURCE_RUN = "optinter.source_run_id"
TAG_ERROR = "optinter.error"
#: The step a run belongs to (``retrain:optinter``, ``train:fm``…): run names also carry a short key.
TAG_STEP = "optinter.step"
#: ``host:pid:start time`` of the process that created the run (finds runs left ``RUNNING`` by a dead one).
TAG_OWNER = "optinter.owner"
#: Why a run was marked ``KILLED``.
TAG_KILLED = "optinter.killed_reason"
#: JSON list of the user's overrides of the pipeline run (inherited by a later ``from_run``).
TAG_OVERRIDES = "optinter.overrides"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
#: Base URL of the MLflow UI in printed links, when it differs from the tracking URI (e.g. the
#: compose network's ``http://mlflow:5000`` is ``http://localhost:5000`` on the host).
UI_URL_ENV = "OPTINTER_MLFLOW_UI_URL"
#: Where ``mlflow ui`` listens by default.
DEFAULT_UI_URL = "http://127.0.0.1:5000"


def apply_offline_env(prefect_home: str | Path | None = None) -> dict[str, str]:
    """Set :data:`OFFLINE_ENV`, :data:`QUIET_ENV` (and ``PREFECT_HOME`` if given) in ``os.environ``
    unless already set.

    Returns the variables it set. Call it before Prefect is imported: Prefect reads some settings
    once at import time.
    """
    wanted = {**OFFLINE_ENV, **QUIET_ENV}
    if prefect_home is not None:
        wanted["PREFECT_HOME"] = str(Path(prefect_home).resolve())
    applied = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            applied[k] = v
    return applied


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (``None`` for other backends)."""
    if not is_local_sqlite(uri):
        return None
    return Path(uri[len("sqlite:///"):])


def default_artifact_location(tracking_uri: str) -> str | None:
    """An explicit artifact location for local SQLite backends: ``<db folder>/mlartifacts``.

    Without it MLflow writes artifacts to ``./mlruns`` relative to whatever the working directory
    happens to be. Servers (``http://``) choose their own location, so ``None`` there.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / DEFAULT_ARTIFACT_DIR).resolve().as_uri()


def runs_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment's runs table (or of one run).

    MLflow 3 opens an experiment on its GenAI overview; ``#/experiments/<id>/runs`` with
    ``workflowType=machine_learning`` is the runs table. The base is ``$OPTINTER_MLFLOW_UI_URL``,
    else an ``http(s)://`` tracking URI, else where ``mlflow ui`` listens by default.
    """
    base = os.environ.get(UI_URL_ENV) or (tracking_uri if tracking_uri.startswith(("http://", "https://"))
                                          else DEFAULT_UI_URL)
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def ui_command(tracking_uri: str) -> str:
    """The shell command that serves the MLflow UI on a local ``tracking_uri`` (a server needs none)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None,
                      artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created (with an explicit artifact location) when missing."""
    tracking_uri = tracking_uri or default_tracking_uri()
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    if artifact_location is None:
        artifact_location = default_artifact_location(tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(experiment_id: str, run_name: str, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, tracking_uri: str | None = None) -> str:
    """Create a run (nested under ``parent_run_id`` when given) and return its id.

    Uses ``MlflowClient`` (no thread-local active run), so it is safe from Prefect's task threads.
    The run is tagged with this process (:data:`TAG_OWNER`), so that a later run can tell it was
    left ``RUNNING`` by a process that died (:func:`mark_stale_runs`).
    """
    all_tags = {TAG_OWNER: process_owner(), **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run = _client(tracking_uri).create_run(experiment_id, run_name=run_name, tags=all_tags)
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED", tracking_uri: str | None = None) -> None:
    """Mark a run ``FINISHED``, ``FAILED`` or ``KILLED``."""
    _client(tracking_uri).set_terminated(run_id, status=status)


def terminal_status(error: BaseException | None) -> str:
    """The MLflow status of a run that ended with ``error``: ``FINISHED`` without one, ``KILLED``
    for an interruption (Ctrl-C, a termination signal, an exit: not an ``Exception``), else ``FAILED``."""
    if error is None:
        return "FINISHED"
    return "FAILED" if isinstance(error, Exception) else "KILLED"


# ---- runs left RUNNING by a process that died (kill -9, OOM killer, power loss) ---------------------------

def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_owner(pid: int | None = None) -> str:
    """``host:pid:start time`` of a process (this one by default): unique even when pids are reused."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0:.2f}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by a :func:`process_owner` string still runs; ``None`` when it ran
    on another host (or the string is not one), which this process cannot check."""
    try:
        host, pid, started = owner.rsplit(":", 2)
        pid_i, started_f = int(pid), float(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    now = _start_time(pid_i)
    return now is not None and abs(now - started_f) < 1.0  # a new process with a reused pid is another one


def mark_stale_runs(experiment_id: str, tracking_uri: str | None = None, found_by: str = "") -> list[str]:
    """Mark ``KILLED`` every ``RUNNING`` run of the experiment whose process (:data:`TAG_OWNER`) is
    gone, with a :data:`TAG_KILLED` tag saying so; returns their ids. Runs of processes on other
    hosts are left alone (a run on their host marks them)."""
    client = _client(tracking_uri)
    stale: list[tuple[str, str]] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        for run in page:
            owner = run.data.tags.get(TAG_OWNER)
            if owner and owner_alive(owner) is False:
                stale.append((run.info.run_id, owner))
        token = page.token
        if not token:
            break
    for run_id, owner in stale:
        host, pid, _ = owner.rsplit(":", 2)
        reason = f"process {pid} on {host} that ran it ended without closing it"
        client.set_tag(run_id, TAG_KILLED, reason + (f" (found by run {found_by})" if found_by else ""))
        client.set_terminated(run_id, status="KILLED")
    if stale:
        log.warning("marked %d MLflow runs KILLED: left RUNNING by processes that are gone", len(stale))
    return [r for r, _ in stale]


# ---- inputs logged by reference ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetRef:
    """A data set a run reads, logged as an MLflow dataset input (a reference, nothing is copied).

    ``digest`` is a content hash, so MLflow stores each data set once per experiment however many
    runs read it; ``source`` is where it lives (a path or URL); ``context`` the input's role.
    """

    name: str
    digest: str
    source: str
    context: str = "source"
    profile: Mapping[str, Any] | None = None


def log_datasets(run_id: str, refs: Sequence[DatasetRef], tracking_uri: str | None = None) -> None:
    """Log ``refs`` as dataset inputs of run ``run_id``."""
    if not refs:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for r in refs:
        scheme = r.source.split("://", 1)[0] if "://" in r.source else "local"
        ds = Dataset(name=r.name, digest=r.digest, source_type=scheme, source=json.dumps({"uri": r.source}),
                     profile=json.dumps(dict(r.profile), sort_keys=True) if r.profile else None)
        inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", r.context)]))
    _client(tracking_uri).log_inputs(run_id, datasets=inputs)


def get_run(run_id: str, tracking_uri: str | None = None):
    """The MLflow run ``run_id``; a clear ``ValueError`` when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(tracking_uri).get_run(run_id)
    except MlflowException as e:
        raise ValueError(f"MLflow run {run_id!r} does not exist in tracking store "
                         f"{tracking_uri or default_tracking_uri()} ({e.error_code})") from None


def child_runs(parent_run_id: str, tracking_uri: str | None = None) -> list:
    """Runs nested directly under ``parent_run_id`` (oldest first)."""
    client = _client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=1000, order_by=["attributes.start_time ASC"])
    return list(runs)


def download_artifacts(uri: str, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """Download ``uri`` (``runs:/<id>/<path>``, ``models:/<name>/<version>``, ...) into ``dst``; a
    ``ValueError`` naming the URI and the tracking store when it cannot be fetched."""
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri))
    except (MlflowException, OSError) as e:
        raise ValueError(f"{uri!r}: cannot download it from tracking store {tracking_uri} ({e})") from None
