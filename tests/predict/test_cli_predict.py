"""``optinter predict`` / ``optinter register`` as a user runs them (a subprocess of the console
entry point): scores reproduce the run's metrics, Dask partitions give the same scores, bad rows
are errors naming file and line (exit 2) or are skipped and counted, nothing half-written."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scoring_helpers import assert_reproduces


def optinter_cmd(args: list[str], trained, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "optinter.cli", "-q", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def optinter_main(args: list[str], trained, monkeypatch) -> int:
    """``optinter ARGS`` in this process (same parser, same exit codes)."""
    from optinter.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    return main(["-q", *args])


@pytest.mark.parametrize("model", ["optinter", "fm"])
def test_predict_reproduces_run_metrics(trained, tmp_path, model) -> None:
    m = trained.models[model]
    out = tmp_path / "scores.parquet"
    ref = m.run_id if model == "optinter" else str(m.dir)
    r = optinter_cmd(["predict", "--model", ref, "--raw", str(trained.test_csv), "--out", str(out),
                      "--id-column", "p_true", "--summary", str(tmp_path / "s.json")], trained)
    assert r.returncode == 0, r.stderr
    assert "600 rows scored" in r.stdout and str(out) in r.stdout
    t = pq.read_table(out)
    assert t.column_names == ["row", "probability", "p_true"]
    assert t["row"].to_pylist() == list(range(600)) and str(t.schema.field("probability").type) == "float"
    assert_reproduces(trained.labels(), t["probability"].to_numpy(), m.metrics)
    assert t["p_true"].to_pylist()[:2] == trained.test_csv.read_text().splitlines()[1].split(",")[1:2] + \
        trained.test_csv.read_text().splitlines()[2].split(",")[1:2]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["rows_scored"] == 600 and sum(s["histogram"]["counts"]) == 600 and s["rows_per_s"] > 0
    assert sorted(os.listdir(tmp_path)) == ["s.json", "scores.parquet"]  # no scratch left behind


def test_dask_partitions_and_gzip_give_the_same_scores(trained, tmp_path) -> None:
    m = trained.models["deepfm"]
    gz = tmp_path / "test.csv.gz"
    gz.write_bytes(gzip.compress(trained.test_csv.read_bytes()))
    local, dist = tmp_path / "local.parquet", tmp_path / "dask.parquet"
    assert optinter_cmd(["predict", "--model", str(m.dir), "--raw", str(trained.test_csv), "--out", str(local),
                         "--local"], trained).returncode == 0
    r = optinter_cmd(["-v", "predict", "--model", m.run_id, "--raw", str(gz), "--out", str(dist), "--blocksize",
                      "4096", "--workers", "2", "--dask"], trained)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting LocalCluster" in r.stderr and "score: 8/8 partitions" in r.stderr  # partitions, progress
    a, b = pq.read_table(local), pq.read_table(dist)
    assert b["row"].to_pylist() == list(range(600))
    # the same rows; float32 round-off of other batch shapes at most
    np.testing.assert_allclose(b["probability"].to_numpy(), a["probability"].to_numpy(), rtol=0, atol=1e-6)
    assert_reproduces(trained.labels(), b["probability"].to_numpy(), m.metrics)


def test_bad_rows_exit_2_or_are_skipped_and_counted(trained, tmp_path, monkeypatch, capsys) -> None:
    lines = trained.test_csv.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",oops"   # data row 2: not a number
    lines[7] = lines[7] + ",extra"                    # data row 6: one column too many
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o" / "scores.parquet"
    args = ["predict", "--model", str(trained.models["lr"].dir), "--raw", str(bad), "--out", str(out)]
    assert optinter_main(args, trained, monkeypatch) == 2
    assert "bad.csv, line 4: column 'n0': not a number: 'oops' (1 more bad rows" in capsys.readouterr().err
    assert not out.exists() and os.listdir(out.parent) == []  # nothing half-written
    assert optinter_main(args + ["--on-bad-rows", "skip"], trained, monkeypatch) == 0
    assert "598 rows scored with lr (2 dropped: column_count: 1, non_numeric: 1)" in capsys.readouterr().out
    rows = pq.read_table(out)["row"].to_pylist()
    assert rows == [i for i in range(600) if i not in (2, 6)]


@pytest.mark.parametrize("args, words", [
    (["--raw", "MISSING.csv"], "MISSING.csv: input file does not exist"),
    (["--model", "nope-not-a-model"], "not a folder, an MLflow run id, or a model URI"),
    (["--model", "0" * 32], "does not exist"),
    (["--id-column", "uid"], "no column 'uid' (requested id column"),
    (["--raw", "NO_N0"], "no_n0.csv: no column 'n0' (required continuous column"),
])
def test_bad_arguments_exit_2_naming_them(trained, tmp_path, monkeypatch, capsys, args, words) -> None:
    no_n0 = tmp_path / "no_n0.csv"
    no_n0.write_text("\n".join(",".join(x.split(",")[:-1]) for x in trained.test_csv.read_text().splitlines()))
    base = {"--model": str(trained.models["lr"].dir), "--raw": str(trained.test_csv),
            "--out": str(tmp_path / "s.parquet")}
    extra = []
    for k, v in zip(args[::2], args[1::2]):
        if k in base:
            base[k] = str(no_n0) if v == "NO_N0" else v
        else:
            extra += [k, v]
    assert optinter_main(["predict", *[x for kv in base.items() for x in kv], *extra], trained, monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("optinter predict: error: ") and words in err, err
    assert not (tmp_path / "s.parquet").exists()


def test_register_then_predict_from_the_registry(trained, tmp_path, monkeypatch, capsys) -> None:
    assert optinter_main(["register", "--model", trained.models["optinter"].run_id, "--name", "ctr-cli"], trained,
                         monkeypatch) == 0
    assert "models:/ctr-cli/1" in capsys.readouterr().out
    assert optinter_main(["register", "--model", str(trained.models["fm"].dir), "--name", "ctr-cli"], trained,
                         monkeypatch) == 0  # a folder: logged in a new run first
    assert "models:/ctr-cli/2" in capsys.readouterr().out
    out = tmp_path / "v1.parquet"
    r = optinter_cmd(["predict", "--model", "models:/ctr-cli/1", "--raw", str(trained.test_csv), "--out", str(out)],
                     trained)
    assert r.returncode == 0, r.stderr
    assert_reproduces(trained.labels(), pq.read_table(out)["probability"].to_numpy(), trained.models["optinter"].metrics)
    import optinter

    v2 = optinter.load("models:/ctr-cli/2", tracking_uri=trained.tracking_uri)
    assert v2.name == "fm" and v2.path is None  # downloaded, loaded, and the download removed
    assert_reproduces(trained.labels(), v2.predict(str(trained.test_csv)), trained.models["fm"].metrics)
