"""The ``optinter`` flow end to end on tiny synthetic data, in Prefect's test harness.

One module fixture runs the pipeline twice (the second run must reuse every stage); the other
tests rerun it with a changed re-train setting, from an earlier search run, and after a failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tiny import TINY_OVERRIDES, TINY_TUNE, flow_env, tiny_params

pytestmark = pytest.mark.slow

MODEL_STAGES = ("search", "retrain:optinter", "train:lr", "train:fm")
ALL_STAGES = ("synth", "preprocess") + MODEL_STAGES + ("evaluate", "analyze")


@pytest.fixture(scope="module")
def env(tmp_path_factory, prefect_harness):
    with flow_env(tmp_path_factory.mktemp("flow"), work=True) as e:
        yield e


@pytest.fixture(scope="module")
def two_runs(env):
    from flows.pipeline import optinter_flow

    first = optinter_flow(**tiny_params(env["artifacts"]))
    mtimes = {n: (Path(s["local_dir"]) / "_stage.json").stat().st_mtime_ns for n, s in first["stages"].items()}
    second = optinter_flow(**tiny_params(env["artifacts"]))
    return first, second, mtimes


def _client(env):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=env["uri"])


def _children(env, parent_run_id):
    from optinter.tracking import child_runs

    return {r.data.tags.get("optinter.step", r.info.run_name): r for r in child_runs(parent_run_id, env["uri"])}


def _experiment_runs(env):
    client = _client(env)
    return client.search_runs([client.get_experiment_by_name("optinter").experiment_id], max_results=1000)


def test_first_run_computes_every_stage(two_runs, env):
    first, _, _ = two_runs
    assert set(first["stages"]) == set(ALL_STAGES)
    assert not any(s["cached"] for s in first["stages"].values())
    for name, s in first["stages"].items():
        d = Path(s["local_dir"])
        assert d.parent.parent == env["artifacts"] and d.parent.name == s["stage"] and d.name == s["key"]
        assert (d / "_stage.json").exists()
    arts = {n: Path(s["local_dir"]) for n, s in first["stages"].items()}
    assert (arts["preprocess"] / "feature_map.json").exists()
    assert (arts["search"] / "architecture.json").exists()
    assert (arts["analyze"] / "report.html").exists()
    # the results table is the metrics.json of every trained model, best test AUC first
    rows = {r["model"]: r for r in first["results"]}
    assert set(rows) == {"optinter", "lr", "fm"}
    for name, model in (("retrain:optinter", "optinter"), ("train:lr", "lr"), ("train:fm", "fm")):
        m = json.loads((arts[name] / "metrics.json").read_text())
        for k in ("valid_auc", "test_auc", "test_logloss", "params"):
            assert rows[model][k] == m[k]
    aucs = [r["test_auc"] for r in first["results"]]
    assert aucs == sorted(aucs, reverse=True)
    arch = json.loads((arts["search"] / "architecture.json").read_text())
    m = rows["optinter"]
    assert m["n_memorize"] + m["n_factorize"] + m["n_naive"] == 15  # 6 fields → 15 pairs
    assert arch  # non-empty architecture


def test_second_run_reuses_every_stage(two_runs, env):
    first, second, mtimes = two_runs
    assert set(second["stages"]) == set(first["stages"])
    for name, s in second["stages"].items():
        f = first["stages"][name]
        assert s["cached"], name
        assert s["key"] == f["key"] and s["local_dir"] == f["local_dir"]
        # nothing was rewritten, and the reused run points to the run that computed it
        assert (Path(s["local_dir"]) / "_stage.json").stat().st_mtime_ns == mtimes[name]
        assert s["source_run_id"] == f["run_id"]
        assert s["run_id"] != f["run_id"]
    assert second["results"] == first["results"]
    kids = _children(env, second["parent_run_id"])
    assert set(kids) == set(ALL_STAGES)
    for name, r in kids.items():
        assert r.data.tags["cached"] == "true"
        assert r.data.tags["optinter.source_run_id"] == first["stages"][name]["run_id"]


def test_mlflow_runs_params_metrics_artifacts(two_runs, env):
    first, second, _ = two_runs
    client = _client(env)
    parent = client.get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["stage"] == "pipeline" and parent.data.tags["dataset"] == "synthetic"
    assert parent.data.params["baselines"] == "lr,fm"
    rows = {r["model"]: r for r in first["results"]}
    assert parent.data.metrics["test_auc"] == pytest.approx(rows["optinter"]["test_auc"])
    assert parent.data.metrics["fm.test_auc"] == pytest.approx(rows["fm"]["test_auc"])
    kids = _children(env, first["parent_run_id"])
    assert set(kids) == set(ALL_STAGES)
    data_key = first["stages"]["preprocess"]["key"]
    for name, r in kids.items():
        t = r.data.tags
        assert r.info.status == "FINISHED"
        assert t["mlflow.parentRunId"] == first["parent_run_id"]
        assert t["cached"] == "false" and t["dataset"] == "synthetic"
        assert t["optinter.stage_key"] == first["stages"][name]["key"]
        assert "stage_seconds" in r.data.metrics
        if name not in ("synth", "preprocess"):
            assert t["data_hash"] == data_key, name
    # the same param keys on every model run (MLflow's compare view)
    keys = [set(kids[n].data.params) for n in MODEL_STAGES]
    assert all("model.embed_dim" in k and "train.lr_o" in k for k in keys)
    assert kids["retrain:optinter"].data.params["model.embed_dim"] == "4"
    assert kids["search"].data.tags["arch_hash"] == kids["retrain:optinter"].data.tags["arch_hash"]
    # final metrics equal metrics.json; per-epoch validation AUC with steps 1..epochs
    retrain = kids["retrain:optinter"]
    m = json.loads((Path(first["stages"]["retrain:optinter"]["local_dir"]) / "metrics.json").read_text())
    for k in ("test_auc", "test_logloss", "params", "n_memorize", "n_factorize", "n_naive"):
        assert retrain.data.metrics[k] == pytest.approx(float(m[k])), k
    hist = client.get_metric_history(retrain.info.run_id, "valid_auc")
    assert [h.step for h in hist] == list(range(1, m["epochs"] + 1))  # one point per epoch, nothing appended
    assert retrain.data.metrics["best_valid_auc"] == pytest.approx(m["valid_auc"])
    assert max(h.value for h in hist) == pytest.approx(m["valid_auc"])
    assert kids["preprocess"].data.metrics["rows_read"] == 3000 + 600 + 600
    assert kids["preprocess"].data.metrics["rows_per_s"] > 0
    # artifacts
    def names(run_id, path=None):
        out = set()
        for f in client.list_artifacts(run_id, path):
            out |= names(run_id, f.path) if f.is_dir else {f.path.rsplit("/", 1)[-1]}
        return out

    assert "feature_map.json" in names(kids["preprocess"].info.run_id)
    assert {"architecture.json", "metrics.json"} <= names(kids["search"].info.run_id)
    assert "metrics.json" in names(retrain.info.run_id)
    assert {"report.html", "mi.csv"} <= names(kids["analyze"].info.run_id)
    assert any(n.endswith(".png") for n in names(kids["analyze"].info.run_id))
    assert {"results.md", "results.csv"} <= names(first["parent_run_id"])
    # a reused stage's run carries the original's params, metric history and artifacts
    kids2 = _children(env, second["parent_run_id"])
    r2 = kids2["retrain:optinter"]
    assert r2.data.params == retrain.data.params
    assert r2.data.metrics["test_auc"] == retrain.data.metrics["test_auc"]
    assert [h.value for h in client.get_metric_history(r2.info.run_id, "valid_auc")] == [h.value for h in hist]
    assert names(r2.info.run_id) >= names(retrain.info.run_id)
    # artifacts live under the experiment's explicit location next to the database, not ./mlruns
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.artifact_location == (env["root"] / "mlartifacts").resolve().as_uri()


def test_mlflow_names_read_apart_and_keys_are_not_repeated(two_runs, env):
    first, second, _ = two_runs
    client = _client(env)
    parent = client.get_run(first["parent_run_id"])
    # parent: what was run and a short key, the same for a rerun of the same settings
    assert parent.info.run_name.startswith("synthetic full-pipeline ")
    assert client.get_run(second["parent_run_id"]).info.run_name == parent.info.run_name
    kids = _children(env, first["parent_run_id"])
    for step, r in kids.items():  # nested runs: the step and the stage key
        assert r.info.run_name == f"{step} {first['stages'][step]['key'][:8]}"
    # a metric is logged once, under one key (the analysis logs its mi.* figures itself)
    analyze = kids["analyze"].data.metrics
    assert "mi.h_label" in analyze and "h_label" not in analyze and "mean_mi_pairs" not in analyze
    assert "mi.mean_planted_memorize" in analyze
    # the runs page of MLflow 3, not the experiment's GenAI overview
    exp_id = parent.info.experiment_id
    assert first["runs_url"].endswith(f"/#/experiments/{exp_id}/runs?workflowType=machine_learning")
    assert first["run_url"].endswith(f"/#/experiments/{exp_id}/runs/{first['parent_run_id']}"
                                     "?workflowType=machine_learning")


def test_no_machine_paths_as_params(two_runs, env):
    root = str(env["root"])
    for r in _experiment_runs(env):
        for k, v in r.data.params.items():
            assert root not in v and not os.path.isabs(v), (r.info.run_name, k, v)
    parent = _client(env).get_run(two_runs[0]["parent_run_id"])
    assert parent.data.tags["optinter.artifact_root"] == str(env["artifacts"])  # where they went instead


def test_inputs_logged_once_by_reference(two_runs, env):
    import sqlite3

    first, second, _ = two_runs
    client = _client(env)
    for summary in (first, second):
        kids = _children(env, summary["parent_run_id"])
        inputs = {d.dataset.name: d for d in kids["preprocess"].inputs.dataset_inputs}
        assert set(inputs) == {"synthetic/train.csv", "synthetic/valid.csv", "synthetic/test.csv"}
        synth_dir = first["stages"]["synth"]["local_dir"]
        assert json.loads(inputs["synthetic/train.csv"].dataset.source)["uri"] == f"{synth_dir}/train.csv"
        assert [d.dataset.digest for d in kids["retrain:optinter"].inputs.dataset_inputs] == [
            first["stages"]["preprocess"]["key"]]
        # the data files themselves are not copied into MLflow
        names = {f.path for f in client.list_artifacts(kids["synth"].info.run_id)}
        assert "truth.json" in names and not names & {"train.csv", "valid.csv", "test.csv"}
    db = sqlite3.connect(env["root"] / "mlflow.db")
    try:
        rows = db.execute("SELECT name, COUNT(*) FROM datasets GROUP BY name, digest").fetchall()
    finally:
        db.close()
    assert rows and all(n == 1 for _, n in rows)  # one record per data set, however many runs read it
    assert not list((env["root"] / "mlartifacts").rglob("train.csv"))


def test_changed_retrain_setting_reruns_only_retrain_and_what_follows(two_runs, env):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    third = optinter_flow(**tiny_params(env["artifacts"], overrides=TINY_OVERRIDES + ["retrain:train.lr_o=4.2e-3"]))
    cached = {n for n, s in third["stages"].items() if s["cached"]}
    assert cached == {"synth", "preprocess", "search", "train:lr", "train:fm"}
    for n in ("retrain:optinter", "evaluate", "analyze"):
        assert third["stages"][n]["key"] != first["stages"][n]["key"]
    kids = _children(env, third["parent_run_id"])
    assert kids["retrain:optinter"].data.params["train.lr_o"] == "0.0042"
    assert kids["search"].data.params["train.lr_o"] != "0.0042"
    # the first run's folders are all still there
    for s in first["stages"].values():
        assert (Path(s["local_dir"]) / "_stage.json").exists()


def test_force_recomputes_a_stage_and_its_dependents_only(two_runs, env):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    out = optinter_flow(**tiny_params(env["artifacts"], force=["fm"], stages=["baselines"]))
    assert set(out["stages"]) == {"synth", "preprocess", "train:lr", "train:fm"}
    assert {n for n, s in out["stages"].items() if not s["cached"]} == {"train:fm"}
    # forced with the same inputs: same key, the folder was replaced by a fresh one
    assert out["stages"]["train:fm"]["key"] == first["stages"]["train:fm"]["key"]
    assert out["stages"]["train:fm"]["source_run_id"] == out["stages"]["train:fm"]["run_id"]


def test_force_search_recomputes_what_depends_on_it(two_runs, env):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    out = optinter_flow(**tiny_params(env["artifacts"], force=["search"]))
    computed = {n for n, s in out["stages"].items() if not s["cached"]}
    assert computed == {"search", "retrain:optinter", "evaluate", "analyze"}  # not the data, not the baselines
    for n in computed:  # same keys (same inputs and code), fresh folders
        assert out["stages"][n]["key"] == first["stages"][n]["key"]
    kids = _children(env, out["parent_run_id"])
    assert kids["search"].data.tags["optinter.recomputed"] == "forced"
    assert kids["retrain:optinter"].data.tags["optinter.recomputed"] == (
        "recomputed because search was recomputed in this run")
    assert "optinter.recomputed" not in kids["train:lr"].data.tags
    assert _client(env).get_run(out["parent_run_id"]).info.run_name.endswith(" force=search")


def test_from_run_inherits_the_earlier_runs_overrides(two_runs, env, tmp_path):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    # only a new re-train setting: the tiny model settings of the first run come with the reference
    out = optinter_flow(**tiny_params(tmp_path / "other", from_run=first["stages"]["search"]["run_id"],
                                      stages=["retrain"], overrides=["retrain:train.lr_o=0.0031",
                                                                     "retrain:train.epochs=1"]))
    retrain = _children(env, out["parent_run_id"])["retrain:optinter"]
    p = retrain.data.params
    assert p["model.embed_dim"] == "4" and p["model.mlp_dims"] == "(16,)"  # inherited (quick start: 8, (64,))
    assert p["train.lr_o"] == "0.0031" and p["train.epochs"] == "1"  # this run's own
    parent = _client(env).get_run(out["parent_run_id"])
    assert parent.data.params["inherited_overrides"] == ";".join(TINY_OVERRIDES)
    assert json.loads(parent.data.tags["optinter.overrides"]) == TINY_OVERRIDES + [
        "retrain:train.lr_o=0.0031", "retrain:train.epochs=1"]
    # this run's own overrides win over inherited ones; a folder reference inherits too
    out2 = optinter_flow(**tiny_params(tmp_path / "other", from_run=first["stages"]["search"]["local_dir"],
                                       stages=["retrain"], overrides=["model.mlp_dims=8", "retrain:train.epochs=1"]))
    p2 = _children(env, out2["parent_run_id"])["retrain:optinter"].data.params
    assert p2["model.mlp_dims"] == "(8,)" and p2["model.embed_dim"] == "4"


def test_retrain_from_earlier_search_run_id(two_runs, env, tmp_path):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    search_run = first["stages"]["search"]["run_id"]
    # another artifact root: preprocess and search come from the reference, not recomputed
    out = optinter_flow(**tiny_params(tmp_path / "other", from_run=search_run, stages=["retrain"],
                                      overrides=TINY_OVERRIDES + ["retrain:train.epochs=1"]))
    assert set(out["stages"]) == {"synth", "preprocess", "search", "retrain:optinter"}
    assert all(out["stages"][n]["cached"] for n in ("synth", "preprocess", "search"))
    assert out["stages"]["search"]["local_dir"] == first["stages"]["search"]["local_dir"]
    r = out["stages"]["retrain:optinter"]
    assert not r["cached"] and Path(r["local_dir"]).parent.parent == tmp_path / "other"
    m = json.loads((Path(r["local_dir"]) / "metrics.json").read_text())
    assert m["epochs"] == 1
    # the same by output folder
    out2 = optinter_flow(**tiny_params(tmp_path / "other", from_run=first["stages"]["search"]["local_dir"],
                                       stages=["retrain"], overrides=TINY_OVERRIDES + ["retrain:train.epochs=1"]))
    assert out2["stages"]["retrain:optinter"]["cached"]
    assert out2["stages"]["retrain:optinter"]["key"] == r["key"]


def test_tune_stage_tunes_retrain_on_valid_with_nested_trial_runs(two_runs, env):
    import yaml

    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    out = optinter_flow(**tiny_params(env["artifacts"], tune_mode="on", tune=dict(TINY_TUNE), baselines=[],
                                      stages=["retrain"]))
    assert set(out["stages"]) == {"synth", "preprocess", "search", "tune:optinter", "retrain:optinter"}
    assert all(out["stages"][n]["cached"] for n in ("synth", "preprocess", "search"))
    t, r = out["stages"]["tune:optinter"], out["stages"]["retrain:optinter"]
    assert not t["cached"] and not r["cached"]
    assert r["key"] != first["stages"]["retrain:optinter"]["key"]  # it read the tuned settings
    tuned = yaml.safe_load((Path(t["local_dir"]) / "tuned.yaml").read_text())
    ran = json.loads((Path(r["local_dir"]) / "config.json").read_text())["config"]
    assert ran["train"]["lr_o"] == pytest.approx(tuned["train.lr_o"])
    assert ran["model"]["dropout"] == pytest.approx(tuned["model.dropout"])
    # every trial is a run nested under the tune stage's run
    trials = _children(env, t["run_id"])
    assert len(trials) == TINY_TUNE["trials"]
    assert all(k.startswith("tune:optinter:trial-") and v.data.tags["stage"] == "tune-trial" for k, v in trials.items())
    # a rerun reuses both
    again = optinter_flow(**tiny_params(env["artifacts"], tune_mode="on", tune=dict(TINY_TUNE), baselines=[],
                                        stages=["retrain"]))
    assert again["stages"]["tune:optinter"]["cached"] and again["stages"]["retrain:optinter"]["cached"]


def test_failed_stage_keeps_earlier_outputs_and_next_run_resumes(two_runs, env, monkeypatch):
    import optinter.stages
    from flows.pipeline import optinter_flow
    from mlflow.tracking import MlflowClient

    first, _, _ = two_runs
    params = tiny_params(env["artifacts"], overrides=TINY_OVERRIDES + ["retrain:train.batch_size=128"],
                         baselines=[], stages=["retrain"])

    def broken(*a, **k):
        raise RuntimeError("simulated crash in retrain")

    monkeypatch.setattr(optinter.stages, "run_retrain", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        optinter_flow(**params)
    client = MlflowClient(tracking_uri=env["uri"])
    failed = client.search_runs([client.get_experiment_by_name("optinter").experiment_id],
                                "attributes.status = 'FAILED'", order_by=["attributes.start_time DESC"])
    names = {r.data.tags.get("optinter.step") for r in failed[:2]}
    assert "retrain:optinter" in names
    assert any("simulated crash" in r.data.tags.get("optinter.error", "") for r in failed[:2])
    for n in ("synth", "preprocess", "search"):
        assert (Path(first["stages"][n]["local_dir"]) / "_stage.json").exists()
    monkeypatch.undo()
    out = optinter_flow(**params)
    assert {n for n, s in out["stages"].items() if not s["cached"]} == {"retrain:optinter"}
    assert os.path.exists(Path(out["stages"]["retrain:optinter"]["local_dir"]) / "metrics.json")


def test_bad_input_fails_the_flow_before_any_stage(env, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.pipeline import optinter_flow

    state = optinter_flow(**tiny_params(tmp_path / "art", baselines=["lr", "nosuchmodel"]), return_state=True)
    assert state.is_failed()
    assert "unknown model 'nosuchmodel'" in state.message
    assert not (tmp_path / "art").exists()
    # the message is in the flow run's logs on the Prefect API (what the UI shows)
    APILogHandler().flush()
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    for _ in range(20):  # logs reach the API in batches
        with get_client(sync_client=True) as client:
            errors = [log.message for log in client.read_logs(flt) if log.level >= 40]
        if any("bad parameters" in m for m in errors):
            break
        time.sleep(0.5)
    assert any("bad parameters: parameter 'baselines': unknown model 'nosuchmodel'" in m for m in errors), errors


def test_cli_run_in_a_fresh_process(two_runs, env, tmp_path):
    """``optinter run`` as users run it: its own ephemeral Prefect API under ./.optinter/prefect and
    MLflow in ./mlflow.db; the stages are reused from the artifact root of the first run, so the
    table must show the first run's numbers."""
    import subprocess
    import sys

    first, _, _ = two_runs
    args = [str(Path(sys.executable).parent / "optinter"), "run", "--artifact-root", str(env["artifacts"]),
            "--baselines", "lr,fm", "--tune", "off"]  # as tiny_params
    for k, v in tiny_params(env["artifacts"])["synth"].items():
        args += ["--synth", f"{k}={json.dumps(v)}"]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    for k, v in tiny_params(env["artifacts"])["preprocess"].items():
        args += ["--preprocess", f"{k}={json.dumps(v)}"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    r = subprocess.run(args, cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Traceback" not in r.stderr and "| ERROR" not in r.stderr, r.stderr[-4000:]
    out = r.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / ".optinter" / "prefect").is_dir()
    table = [line for line in out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].split("|")]
    assert header[1] == "model" and "test_auc" in header
    col = header.index("test_auc")
    assert [line.split("|")[1].strip() for line in table[1:]] == [r["model"] for r in first["results"]]
    assert [float(line.split("|")[col]) for line in table[1:]] == [
        pytest.approx(r["test_auc"], abs=5e-5) for r in first["results"]]
    assert out.count("reused") == len(first["stages"]), out  # same settings as the first run: nothing recomputed


def test_cli_run_bad_input_exits_2_with_message(capsys):
    from flows.cli import main

    assert main(["run", "--dataset", "nosuchdata"]) == 2
    err = capsys.readouterr().err
    assert "optinter run: error: parameter 'dataset': unknown dataset 'nosuchdata'" in err


def test_compare_stage_nests_one_run_per_trained_job(two_runs, env):
    from flows.pipeline import optinter_flow

    first, _, _ = two_runs
    out = optinter_flow(**tiny_params(env["artifacts"], stages=["compare"],
                                      compare={"models": ["lr"], "seeds": 1, "tables": ["V"]}))
    assert set(out["stages"]) == {"synth", "preprocess", "compare"}
    assert out["stages"]["preprocess"]["cached"] and not out["stages"]["compare"]["cached"]
    assert (Path(out["stages"]["compare"]["local_dir"]) / "table_V.csv").exists()
    jobs = _children(env, out["stages"]["compare"]["run_id"])
    assert list(jobs) == ["lr/seed0"]
    # same model, data, settings and seed as the pipeline's lr baseline: the same test AUC
    lr = next(r for r in first["results"] if r["model"] == "lr")
    assert jobs["lr/seed0"].data.metrics["test_auc"] == pytest.approx(lr["test_auc"], abs=1e-9)
    for r in [_children(env, out["parent_run_id"])["compare"], *jobs.values()]:
        assert not any(os.path.isabs(v) or str(env["root"]) in v for v in r.data.params.values()), r.data.params


def test_baselines_on_a_local_cluster_match_the_serial_run(two_runs, env, monkeypatch):
    """jobs={"workers": 2}: the baseline tasks are submitted together, each trains on a LocalCluster
    worker (one thread); the same stage keys, bit-identical metrics, FINISHED stage runs."""
    import distributed

    import preprocess.cluster as pc
    from flows.pipeline import optinter_flow
    from optinter.cluster import run_job

    started, shipped = [], []
    real_start, real_submit = pc.start_local_cluster, distributed.Client.submit

    def start(n_workers, threads_per_worker=1, processes=True, resources=None):
        started.append((n_workers, processes, dict(resources or {})))
        return real_start(n_workers, threads_per_worker, processes, resources)

    def submit(self, fn, *args, **kwargs):
        shipped.append((fn is run_job, kwargs.get("resources")))
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(pc, "start_local_cluster", start)
    monkeypatch.setattr(distributed.Client, "submit", submit)
    first, _, _ = two_runs
    serial = {r["model"]: r for r in first["results"]}
    out = optinter_flow(**tiny_params(env["artifacts"], stages=["baselines"], force=["lr", "fm"],
                                      jobs={"workers": 2, "threads": 1}))
    # the jobs' LocalCluster (worker processes, one training job each) was started and both trainings went there
    assert (2, True, {"train": 1}) in started and shipped == [(True, {"train": 1})] * 2
    client = _client(env)
    for model in ("lr", "fm"):
        name = f"train:{model}"
        s = out["stages"][name]
        assert not s["cached"] and s["key"] == first["stages"][name]["key"]
        m = json.loads((Path(s["local_dir"]) / "metrics.json").read_text())
        for k in ("valid_auc", "test_auc", "test_logloss", "params"):
            assert m[k] == serial[model][k], (model, k)
        run = client.get_run(s["run_id"])
        assert run.info.status == "FINISHED" and run.data.metrics["test_auc"] == m["test_auc"]
