"""The MLflow model of every trained model: ``mlflow.pyfunc.load_model(uri).predict(raw_df)`` and a
real ``mlflow models serve -m runs:/<id>/model --env-manager local`` process over HTTP (127.0.0.1)
reproduce the run's test metrics from raw rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scoring_helpers import MODELS, assert_reproduces
from test_services import _free_port  # tests/flows

RAW = ["c0", "c1", "c2", "c3", "c4", "c5", "n0"]


@pytest.mark.parametrize("model", MODELS)
def test_pyfunc_model_scores_raw_rows(trained, monkeypatch, model) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    m = trained.models[model]
    pf = mlflow.pyfunc.load_model(f"runs:/{m.run_id}/model")
    inputs = pf.metadata.get_input_schema()
    assert inputs.input_names() == RAW
    assert [str(t) for t in inputs.input_types()] == ["DataType.string"] * 6 + ["DataType.double"]
    assert pf.metadata.metadata["optinter_model"] == model
    df = trained.test_frame()
    assert_reproduces(trained.labels(), pf.predict(df.drop(columns=["label"])), m.metrics)  # extra p_true ignored
    local = mlflow.artifacts.download_artifacts(f"runs:/{m.run_id}/model", tracking_uri=trained.tracking_uri)
    example = mlflow.models.Model.load(local).load_input_example(local)
    assert list(example.columns) == RAW
    p = pf.predict(example)
    assert p.shape == (2,) and np.isfinite(p).all()
    bad = df.head(5).astype({"n0": object})
    bad.loc[2, "n0"] = None
    assert np.isfinite(pf.predict(bad)).all()  # a missing number is scored


def _post(url: str, payload: dict, timeout: float = 30.0):
    import httpx

    return httpx.post(url, json=payload, timeout=timeout)


@pytest.mark.slow
def test_served_models_over_http(trained, tmp_path) -> None:
    """One ``mlflow models serve`` process per model, all started at once and all stopped at the end."""
    import httpx

    bin_dir = str(Path(sys.executable).parent)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    procs: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for model in MODELS:
            port = _free_port()
            log = open(tmp_path / f"{model}.log", "w")
            p = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                  f"runs:/{trained.models[model].run_id}/model", "--env-manager", "local", "-h",
                                  "127.0.0.1", "-p", str(port), "-w", "1"], env=env, cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            procs[model] = (p, f"http://127.0.0.1:{port}")
        deadline = time.time() + 180
        waiting = set(MODELS)
        while waiting and time.time() < deadline:
            for model in sorted(waiting):
                p, url = procs[model]
                assert p.poll() is None, (tmp_path / f"{model}.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        waiting.discard(model)
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        assert not waiting, {m: (tmp_path / f"{m}.log").read_text()[-2000:] for m in waiting}

        df = trained.test_frame()
        rows = [[r[c] for c in RAW] for r in df.to_dict("records")]
        for model in MODELS:
            url = procs[model][1] + "/invocations"
            preds = []
            for i in range(0, len(rows), 200):
                r = _post(url, {"dataframe_split": {"columns": RAW, "data": rows[i:i + 200]}})
                assert r.status_code == 200, r.text
                preds += r.json()["predictions"]
            assert_reproduces(trained.labels(), np.array(preds), trained.models[model].metrics)
        url = procs["optinter"][1] + "/invocations"
        # one row, columns in another order plus an extra one, an unseen category and missing values
        cols = ["n0", "extra"] + RAW[:-1][::-1]
        r = _post(url, {"dataframe_split": {"columns": cols, "data": [[None, 1, "c5_0", None, "zzz", "c2_1", "c1_0",
                                                                        "c0_0"]]}})
        assert r.status_code == 200, r.text
        assert 0.0 < r.json()["predictions"][0] < 1.0
        r = _post(url, {"dataframe_split": {"columns": RAW[1:], "data": [rows[0][1:]]}})
        assert r.status_code == 400 and "c0" in r.json()["message"]
        r = _post(url, {"dataframe_split": {"columns": RAW, "data": [rows[0][:-1] + ["abc"]]}})
        assert r.status_code == 400 and "n0" in r.json()["message"]
    finally:
        for p, _ in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p, _ in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
    assert all(p.poll() is not None for p, _ in procs.values())
