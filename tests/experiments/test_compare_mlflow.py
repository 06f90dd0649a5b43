"""compare logs under one parent MLflow run, one nested run per newly trained job."""

from __future__ import annotations

import pytest

from encoded_data import write_encoded
from fake_trainer import FakeTrainer
from optinter import tracking
from optinter.experiments import CompareConfig, run_compare


@pytest.mark.skipif(not hasattr(tracking, "start_run"), reason="optinter.tracking has no run management yet")
def test_nested_runs_under_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment("cmp-test", uri)
    parent = tracking.start_run(exp, "compare", tracking_uri=uri)
    write_encoded(tmp_path / "data", n_rows=300)
    cc = CompareConfig(models=("lr", "optinter"), seeds=2, tables=("V",))
    res = run_compare(tmp_path / "data", tmp_path / "cmp", cc, tracking.MlflowTracker(parent, tracking_uri=uri),
                      train_fn=FakeTrainer())
    children = tracking.child_runs(parent, uri)
    assert len(children) == res["jobs_trained"] == 4
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["optinter.model"] for c in children} == {"lr", "optinter"}
    for c in children:  # job and short key
        assert c.info.run_name == f"{c.data.tags['optinter.step']} {c.data.tags['optinter.compare_key'][:8]}"
    p = tracking.get_run(parent, uri)
    assert "V.optinter.auc" in p.data.metrics and p.data.params["compare.seeds"] == "2"
    # a rerun trains nothing, so no new nested runs
    parent2 = tracking.start_run(exp, "compare-again", tracking_uri=uri)
    run_compare(tmp_path / "data", tmp_path / "cmp", cc, tracking.MlflowTracker(parent2, tracking_uri=uri),
                train_fn=FakeTrainer())
    assert tracking.child_runs(parent2, uri) == []
