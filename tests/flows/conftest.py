"""Shared fixtures of the flow tests: offline settings, one Prefect test harness per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

for _k, _v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
               "MLFLOW_DISABLE_TELEMETRY": "true",
               "PREFECT_LOGGING_EXTRA_LOGGERS": "optinter,preprocess,flows",
               "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}.items():
    os.environ.setdefault(_k, _v)

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test of the session (~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store per test (``MLFLOW_TRACKING_URI`` points at it)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
