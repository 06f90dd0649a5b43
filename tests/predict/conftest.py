"""A small trained pipeline run shared by the scoring tests: synthetic data (pre-split CSV files),
preprocessing, search, re-trained OptInter and three baselines, each stage logged to MLflow (SQLite)
through the flow's plain steps (no Prefect), so every model is logged as an MLflow pyfunc model."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

for _k, _v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
               "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))

from tiny import tiny_params  # noqa: E402

BASELINES = ("lr", "fm", "deepfm")
MODELS = ("optinter",) + BASELINES


@dataclass
class Model:
    name: str
    dir: Path
    run_id: str
    metrics: dict


@dataclass
class Trained:
    root: Path
    tracking_uri: str
    data_dir: Path
    raw_dir: Path
    parent_run_id: str
    models: dict[str, Model]

    @property
    def test_csv(self) -> Path:
        return self.raw_dir / "test.csv"

    def test_frame(self) -> pd.DataFrame:
        return pd.read_csv(self.test_csv)

    def labels(self) -> np.ndarray:
        return pd.read_csv(self.test_csv)["label"].to_numpy()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from flows import steps
    from flows.spec import resolve_spec

    root = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = resolve_spec(**tiny_params(str(root / "artifacts"), baselines=list(BASELINES)), tracking_uri=uri)
    ctx = steps.open_context(spec)
    synth = steps.step_synth(ctx)
    data = steps.step_preprocess(ctx, synth)
    search = steps.step_search(ctx, data)
    recs = {"optinter": steps.step_retrain(ctx, data, search)}
    for m in BASELINES:
        recs[m] = steps.step_train(ctx, data, m)
    steps.close_context(ctx)
    models = {m: Model(m, r.path, ctx.stage_runs[r.name], json.loads((r.path / "metrics.json").read_text()))
              for m, r in recs.items()}
    return Trained(root, uri, data.path, synth.path, ctx.parent_run_id, models)


def assert_reproduces(y: np.ndarray, p: np.ndarray, metrics: dict, tol: float = 1e-6) -> None:
    """Test AUC and log loss of ``p`` (sklearn) equal the run's ``metrics.json`` to ``tol``."""
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.asarray(p, dtype=np.float64)
    assert p.shape == y.shape and np.isfinite(p).all()
    assert abs(roc_auc_score(y, p) - metrics["test_auc"]) <= tol
    assert abs(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)) - metrics["test_logloss"]) <= tol
