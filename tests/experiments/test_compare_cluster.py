"""``compare`` on a Dask LocalCluster gives the serial run's keys and bit-identical metrics; each
job's MLflow child run is created here and filled by the worker that trained it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from optinter import tracking
from optinter.cluster import JobPool, JobsConfig
from optinter.experiments import CompareConfig, run_compare

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optinter"))
from helpers import make_encoded_dataset  # noqa: E402

# no train.num_threads: the jobs run with the pool's thread budget (all cores here, 1 on a worker)
SMALL = ("model.mlp_dims=32,16", "model.embed_dim=4", "train.epochs=2", "train.batch_size=256")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster-data")
    make_encoded_dataset(d, rows=(6000, 1500, 1500))
    return d


def test_cluster_and_serial_runs_agree_bit_for_bit(data, tmp_path):
    cc = dict(models=("lr", "deepfm", "optinter"), seeds=2, tables=("V",), overrides=SMALL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment("cluster", uri)
    parent = tracking.start_run(exp, "compare", tracking_uri=uri)
    serial = run_compare(data, tmp_path / "serial", CompareConfig(**cc, cache_dir=str(tmp_path / "c1")),
                         pool=JobPool(JobsConfig(workers=1)))
    with JobPool(JobsConfig(workers=2, threads=1)) as pool:
        par = run_compare(data, tmp_path / "cluster", CompareConfig(**cc, cache_dir=str(tmp_path / "c2")),
                          tracker=tracking.MlflowTracker(parent, uri), pool=pool)
        assert pool._cluster is not None  # the jobs did go to the LocalCluster
        again = run_compare(data, tmp_path / "again", CompareConfig(**cc, cache_dir=str(tmp_path / "c2")), pool=pool)
    assert serial["jobs_trained"] == par["jobs_trained"] == 6 and again["jobs_cached"] == 6
    a = pd.read_csv(tmp_path / "serial" / "runs.csv").set_index("job")
    b = pd.read_csv(tmp_path / "cluster" / "runs.csv").set_index("job")
    assert list(a.index) == list(b.index)
    assert (a["key"] == b["key"]).all()  # the same stage keys
    for key in a["key"]:  # every job's metrics.json, to the last bit
        ma = json.loads((tmp_path / "c1" / key / "metrics.json").read_text())
        mb = json.loads((tmp_path / "c2" / key / "metrics.json").read_text())
        for col in ("test_auc", "test_logloss", "valid_auc", "params"):
            assert ma[col] == mb[col], (key, col, ma[col], mb[col])
    # one FINISHED child run per job, with the metrics its worker logged while training
    kids = {r.data.tags["optinter.step"]: r for r in tracking.child_runs(parent, uri)}
    assert set(kids) == set(b.index)
    for job, run in kids.items():
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_auc"] == pytest.approx(b.loc[job, "test_auc"], abs=1e-9)  # runs.csv: 10 digits
        assert "valid_auc" in run.data.metrics  # logged per epoch by fit() on the worker
