"""`optinter tune`: Optuna on the validation split, nested trial runs, a config file the training
commands accept, the test split never opened, clear errors before any training."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from optinter.config import apply_overrides, default_config, load_config_file
from optinter.tracking import RecordingTracker
from optinter.tune import ParamSpec, TuneConfig, run_tune
from preprocess.feature_map import FeatureMap

SMALL = ["model.embed_dim=4", "model.mlp_dims=8", "train.device=cpu", "train.epochs=2"]


def _base(data, model="lr"):
    return apply_overrides(default_config(FeatureMap.load(data), model), SMALL)


@pytest.fixture()
def no_test_split(tiny_data, tmp_path, monkeypatch):
    """A copy of the tiny data whose test split is gone, with every parquet read recorded."""
    import optinter.data as data_mod

    d = tmp_path / "data"
    shutil.copytree(tiny_data[0], d)
    fmap = FeatureMap.load(d)
    shutil.rmtree(fmap.split_dir(d, "test"))
    opened: list[str] = []
    real_init = data_mod.ParquetBatches.__init__

    def spy(self, data_dir, fm, split, *a, **k):
        opened.append(split)
        return real_init(self, data_dir, fm, split, *a, **k)

    monkeypatch.setattr(data_mod.ParquetBatches, "__init__", spy)
    return d, opened


def test_tune_end_to_end_never_reads_test(no_test_split, tmp_path):
    data, opened = no_test_split
    tr = RecordingTracker()
    tc = TuneConfig(model="lr", trials=4, seed=1, startup_trials=2,
                    space=("train.lr_o=log:3e-4:3e-2", "train.lr_decay=float:0.3:1"))
    s = run_tune(data, tmp_path / "tune", tc, _base(data), tracker=tr)
    assert "test" not in opened and {"train", "valid"} <= set(opened)
    assert s["trials"] == 4 and s["complete"] + s["pruned"] == 4
    # trial 0 is the defaults: tuning never ends worse on valid than the defaults
    assert s["default_valid_auc"] is not None and s["best_valid_auc"] >= s["default_valid_auc"]
    trials = pd.read_csv(tmp_path / "tune" / "trials.csv")
    assert len(trials) == 4 and trials["valid_auc"].max() == pytest.approx(s["best_valid_auc"])
    # one nested run per trial, each closed, with its sampled settings
    assert len(tr.children) == 4
    for name, tags, child in tr.children:
        assert name.startswith("tune:lr:trial-") and tags["stage"] == "tune-trial"
        assert child.status in ("FINISHED", "KILLED") and "train.lr_o" in child.params
    # the written settings are what the training commands accept with --config
    tuned = load_config_file(tmp_path / "tune" / "tuned.yaml")
    assert set(tuned) == {"train.lr_o", "train.lr_decay"}
    assert tuned == pytest.approx(s["best_params"])
    assert tr.last("best_valid_auc") == pytest.approx(s["best_valid_auc"])


def test_tuned_file_feeds_train(tiny_data, tmp_path):
    from optinter.cli import main

    data = tiny_data[0]
    rc = main(["-q", "tune", "--data", str(data), "--out", str(tmp_path / "t"), "--model", "lr", "--trials", "2",
               "--param", "train.lr_o=log:1e-3:1e-2", *sum((["--set", o] for o in SMALL), [])])
    assert rc == 0
    tuned = load_config_file(tmp_path / "t" / "tuned.yaml")
    rc = main(["-q", "train", "--data", str(data), "--model", "lr", "--out", str(tmp_path / "m"),
               "--config", str(tmp_path / "t" / "tuned.yaml"), *sum((["--set", o] for o in SMALL), [])])
    assert rc == 0
    import json

    ran = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert ran["train"]["lr_o"] == pytest.approx(tuned["train.lr_o"])


def test_pruning_stops_hopeless_trials(tiny_data, tmp_path):
    data = tiny_data[0]
    tc = TuneConfig(model="lr", trials=8, seed=3, startup_trials=1, max_epochs=3,
                    space=("train.lr_o=choice:1e-9|3e-2",))
    s = run_tune(data, tmp_path / "tune", tc, _base(data))
    assert s["pruned"] >= 1
    assert s["best_params"]["train.lr_o"] == "3e-2"


def test_trials_as_nested_mlflow_runs(tiny_data, tmp_path):
    from optinter import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment("tune-test", uri, str(tmp_path / "art")) if hasattr(tracking, "ensure_experiment") \
        else None
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    exp = exp or client.create_experiment("tune-test", artifact_location=str(tmp_path / "art"))
    parent = tracking.start_run(exp, "tune", tracking_uri=uri)
    tc = TuneConfig(model="lr", trials=3, seed=1)
    run_tune(tiny_data[0], tmp_path / "tune", tc, _base(tiny_data[0]),
             tracker=tracking.MlflowTracker(parent, tracking_uri=uri))
    kids = tracking.child_runs(parent, uri)
    assert len(kids) == 3
    assert all(k.data.tags["stage"] == "tune-trial" and k.info.status in ("FINISHED", "KILLED") for k in kids)
    assert all("train.lr_o" in k.data.params for k in kids)


def test_trials_in_parallel_on_a_dask_cluster(tiny_data, tmp_path):
    from distributed import LocalCluster

    tr = RecordingTracker()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        s = run_tune(tiny_data[0], tmp_path / "tune", TuneConfig(model="lr", trials=4, parallel=2, seed=1),
                     _base(tiny_data[0]), tracker=tr, scheduler=cluster.scheduler_address)
    assert s["trials"] == 4 and (tmp_path / "tune" / "tuned.yaml").exists()


@pytest.mark.parametrize("kw, match", [
    ({"trials": 0, "minutes": 0}, "budget is empty"),
    ({"trials": -1}, "trials must be >= 0"),
    ({"space": ()}, "search space is empty"),
    ({"space": ("train.nope=log:1e-3:1e-1",)}, "unknown setting"),
    ({"space": ("train.lr_o=log:0:1",)}, "LOW > 0"),
    ({"space": ("train.lr_o=uniform:1:2",)}, "KIND one of"),
    ({"space": ("model.mlp_dims=choice:8|a",)}, "expected a tuple"),
    ({"parallel": 0}, "parallel must be >= 1"),
])
def test_bad_settings_fail_before_training(tiny_data, tmp_path, kw, match, monkeypatch):
    import optinter.tune as tune_mod

    monkeypatch.setattr(tune_mod, "train_trial", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=match):
        run_tune(tiny_data[0], tmp_path / "t", TuneConfig(model="lr", **kw), _base(tiny_data[0]))
    assert not (tmp_path / "t").exists()


def test_cli_budget_error_is_exit_2(tiny_data, tmp_path, capsys):
    from optinter.cli import main

    rc = main(["tune", "--data", str(tiny_data[0]), "--out", str(tmp_path / "t"), "--model", "lr", "--trials", "0"])
    assert rc == 2 and "budget is empty" in capsys.readouterr().err


def test_param_spec_parse():
    assert ParamSpec.parse("train.lr_o=log:1e-4:1e-2") == ParamSpec("train.lr_o", "log", 1e-4, 1e-2)
    assert ParamSpec.parse("model.mlp_dims=choice:64|128,128").choices == ("64", "128,128")
    assert ParamSpec.parse("model.embed_dim=int:4:16").kind == "int"


def test_parallel_trials_get_a_pool_that_runs_them_at_once(monkeypatch):
    """The given pool only when it would send a round of ``parallel`` jobs to its cluster: an auto pool
    on 2 cores keeps 2 jobs in process (trials one after the other), so run_tune starts ``parallel``
    workers of its own (and closes them)."""
    import optinter.cluster as oc
    from optinter.cluster import JobPool, JobsConfig
    from optinter.tune import trial_pool

    monkeypatch.setattr(oc.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(oc, "cuda_devices", lambda: 0)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    auto, two, remote = (JobPool(JobsConfig(workers=0)), JobPool(JobsConfig(workers=2)),
                         JobPool(JobsConfig(scheduler="tcp://x:8786")))
    assert trial_pool(auto, 4) == (auto, False) and trial_pool(two, 2) == (two, False)
    assert trial_pool(remote, 2) == (remote, False)
    for given in (auto, None, JobPool(JobsConfig(workers=1))):
        own, new = trial_pool(given, 2)
        assert new and own is not given and own.config.workers == 2 and own.use_cluster(2)
    own, new = trial_pool(auto, 2, scheduler="tcp://y:8786")
    assert new and own.config.scheduler == "tcp://y:8786"
