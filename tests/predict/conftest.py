"""A small trained pipeline run shared by the scoring tests: synthetic data (pre-split CSV files),
preprocessing, search, re-trained OptInter and three baselines, each stage logged to MLflow (SQLite)
through the flow's plain steps (no Prefect), so every model is logged as an MLflow pyfunc model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

for _k, _v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
               "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring_helpers import BASELINES, Model, Trained  # noqa: E402
from tiny import tiny_params  # noqa: E402


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
