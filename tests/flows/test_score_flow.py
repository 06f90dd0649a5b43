"""The ``score`` stage and ``register`` parameter of the flow (Prefect test harness), and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny import flow_env, tiny_params

from flows.spec import SpecError, resolve_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory, prefect_harness):
    with flow_env(tmp_path_factory.mktemp("score-flow")) as e:
        yield e


@pytest.fixture(scope="module")
def trained_run(env):
    from flows.pipeline import optinter_flow

    return optinter_flow(**tiny_params(env["artifacts"], baselines=["lr"], stages=["retrain", "baselines"],
                                       register_as=["ctr-flow", "lr=ctr-lr"]))


def _metrics(summary, name):
    return json.loads((Path(summary["stages"][name]["local_dir"]) / "metrics.json").read_text())


def _auc_logloss(scores: Path, csv: Path) -> tuple[float, float]:
    import pandas as pd
    from sklearn.metrics import log_loss, roc_auc_score

    p = pq.read_table(scores)["probability"].to_numpy().astype(np.float64)
    y = pd.read_csv(csv)["label"].to_numpy()
    return roc_auc_score(y, p), log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))


def test_registered_model_scores_raw_files_in_a_score_only_run(trained_run, env):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import optinter_flow
    from optinter.tracking import child_runs

    client = MlflowClient(tracking_uri=env["uri"])
    retrain_run = trained_run["stages"]["retrain:optinter"]["run_id"]
    assert client.get_run(retrain_run).data.tags["optinter.registered_model"] == "models:/ctr-flow/1"
    versions = {v.name: v for v in client.search_model_versions("name IN ('ctr-flow', 'ctr-lr')")}
    assert versions["ctr-flow"].run_id == retrain_run
    assert versions["ctr-lr"].run_id == trained_run["stages"]["train:lr"]["run_id"]

    test_csv = Path(trained_run["stages"]["synth"]["local_dir"]) / "test.csv"
    params = dict(dataset="synthetic", artifact_root=str(env["artifacts"]), stages=["score"],
                  score={"model": "models:/ctr-flow/1", "raw": [str(test_csv)], "id_columns": ["p_true"]})
    out = optinter_flow(**params)
    assert set(out["stages"]) == {"score"}  # no preprocessing, no training
    s = out["stages"]["score"]
    scores = Path(s["local_dir"]) / "scores.parquet"
    auc, ll = _auc_logloss(scores, test_csv)
    m = _metrics(trained_run, "retrain:optinter")
    assert abs(auc - m["test_auc"]) < 1e-6 and abs(ll - m["test_logloss"]) < 1e-6
    assert pq.read_table(scores).column_names == ["row", "probability", "p_true"]
    run = client.get_run(s["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "score" and run.data.tags["model"] == "optinter"
    assert run.data.metrics["rows_scored"] == 600 and run.data.metrics["rows_per_s"] > 0
    hist = client.get_metric_history(s["run_id"], "score_histogram")
    assert len(hist) == 20 and sum(h.value for h in hist) == 600
    assert {f.path for f in client.list_artifacts(s["run_id"])} >= {"summary.json", "histogram.png"}
    assert [r.info.run_name.split()[0] for r in child_runs(out["parent_run_id"], env["uri"])] == ["score"]
    again = optinter_flow(**params)
    assert again["stages"]["score"]["cached"] and again["stages"]["score"]["key"] == s["key"]


def test_score_without_a_model_uses_the_runs_retrained_optinter(trained_run, env):
    from flows.pipeline import optinter_flow

    test_csv = Path(trained_run["stages"]["synth"]["local_dir"]) / "test.csv"
    out = optinter_flow(**tiny_params(env["artifacts"], baselines=["lr"], stages=["score"],
                                      score={"raw": [str(test_csv)], "on_bad_rows": "skip"}))
    assert out["stages"]["retrain:optinter"]["cached"] and not out["stages"]["score"]["cached"]
    auc, _ = _auc_logloss(Path(out["stages"]["score"]["local_dir"]) / "scores.parquet", test_csv)
    assert abs(auc - _metrics(trained_run, "retrain:optinter")["test_auc"]) < 1e-6


def test_score_and_register_parameters_are_checked(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a\n1\n")
    spec = resolve_spec(stages=["score"], score={"model": "models:/m/1", "raw": str(csv)}, artifact_root=str(tmp_path))
    assert spec.needed == ["score"] and spec.score["raw"] == [str(csv.resolve())]
    assert "retrain" in resolve_spec(stages=["score"], score={"raw": [str(csv)]}, artifact_root=str(tmp_path)).needed
    for kw, words in [
        (dict(stages=["score"]), "key 'raw'"),
        (dict(stages=["score"], score={"raw": [str(tmp_path / "none*.csv")]}), "'score.raw': no file matches"),
        (dict(stages=["score"], score={"raw": [str(csv)], "colour": 1}), "unknown keys ['colour']"),
        (dict(stages=["score"], score={"raw": [str(csv)], "on_bad_rows": "drop"}), "on_bad_rows"),
        (dict(score={"raw": [str(csv)]}), "only used with stage 'score'"),
        (dict(register_as=["ipnn=x"]), "model 'ipnn' is not trained by this run"),
        (dict(register_as="ctr", stages=["baselines"]), "'optinter' is not trained by stages"),
        (dict(register_as="lr="), "expected NAME or MODEL=NAME"),
    ]:
        with pytest.raises(SpecError, match=words.replace("[", r"\[").replace("]", r"\]")):
            resolve_spec(artifact_root=str(tmp_path), **kw)
    assert resolve_spec(register_as=["ctr", "fm=ctr-fm"], artifact_root=str(tmp_path)).register_as == \
        {"optinter": "ctr", "fm": "ctr-fm"}


def test_score_deployment_and_cli_parameters():
    import argparse

    from flows.cli import flow_params, register
    from flows.deploy import build_deployments

    (dep,) = build_deployments(["score"])
    assert dep.name == "score" and dep.parameters == {"stages": ["score"]}
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "--stages", "score", "--score", "model=models:/ctr/1", "--score",
                              'raw=["a.tsv", "b.tsv"]', "--score", "on_bad_rows=skip", "--register", "ctr",
                              "--register", "fm=ctr-fm"])
    p = flow_params(args)
    assert p["stages"] == ["score"] and p["register_as"] == ["ctr", "fm=ctr-fm"]
    assert p["score"] == {"model": "models:/ctr/1", "raw": ["a.tsv", "b.tsv"], "on_bad_rows": "skip"}
