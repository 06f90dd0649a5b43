"""Experiment tracking behind a small protocol, so library code never imports MLflow directly.

Library functions take ``tracker: Tracker | None``; ``None`` means :class:`NullTracker`.
:class:`MlflowTracker` logs into one MLflow run (created by the caller, usually a nested run per
stage or per model); Prefect runs tasks in threads and MLflow's active run is per thread, so the
tracker always addresses its run by id through ``MlflowClient`` instead of the fluent API.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_TRACKING_DB = "mlflow.db"


@runtime_checkable
class Tracker(Protocol):
    """Where a stage sends its parameters, metrics, tags and artifacts."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...


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


class RecordingTracker(NullTracker):
    """In-memory tracker for tests: keeps everything it is given."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.tags: dict[str, Any] = {}
        self.artifacts: list[tuple[str, str | None]] = []

    def log_params(self, params: Mapping[str, Any]) -> None:  # noqa: D102
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:  # noqa: D102
        self.tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        self.artifacts.append((str(path), artifact_path))

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
        self.client = MlflowClient(tracking_uri=tracking_uri)

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


def as_tracker(tracker: Tracker | None) -> Tracker:
    """``tracker`` itself, or a :class:`NullTracker` for ``None``."""
    return tracker if tracker is not None else NullTracker()
