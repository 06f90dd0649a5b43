"""Stage functions and their CLI: outputs, metrics keys, tracker calls, clear errors before training."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from optinter.architecture import Architecture
from optinter.cli import main as cli_main
from optinter.config import RunConfig, apply_overrides
from optinter.stages import run_retrain, run_search, run_train
from optinter.tracking import RecordingTracker

SMALL = ["model.embed_dim=4", "model.cross_embed_dim=3", "model.mlp_dims=16", "train.batch_size=500",
         "train.epochs=2", "train.search_epochs=1", "train.lr_o=3e-3", "train.lr_c=3e-3", "train.lr_a=3e-3",
         "train.device=cpu", "train.max_steps_per_epoch=4"]
KEYS = {"model", "valid_auc", "valid_logloss", "test_auc", "test_logloss", "params", "epochs", "best_epoch",
        "seconds", "samples_per_s"}
ARCH_KEYS = {"n_memorize", "n_factorize", "n_naive"}


def _cfg(*extra: str) -> RunConfig:
    return apply_overrides(RunConfig(), SMALL + list(extra))


def test_search_then_retrain(tiny_data, tmp_path):
    data_dir, _ = tiny_data
    tr = RecordingTracker()
    m = run_search(data_dir, tmp_path / "search", _cfg(), tracker=tr)
    assert KEYS | ARCH_KEYS <= set(m)
    assert m["n_memorize"] + m["n_factorize"] + m["n_naive"] == 10
    out = tmp_path / "search"
    assert sorted(p.name for p in out.iterdir()) == ["architecture.json", "config.json", "metrics.json"]
    ran = json.loads((out / "config.json").read_text())
    assert ran["config"] == json.loads(json.dumps(_cfg().to_dict())) and ran["data_stats"]["train_rows"] > 0
    assert ran["differs_from_defaults"]  # the test's small settings are not the defaults
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    arch = Architecture.load(out / "architecture.json")
    assert arch.counts() == [m["n_memorize"], m["n_factorize"], m["n_naive"]] and arch.probs is not None
    assert tr.params["stage"] == "search" and tr.params["train.lr_a"] == 3e-3
    # per-epoch curves have one point per epoch; the selected figure has its own name
    assert [s for k, _, s in tr.metrics if k == "search_valid_auc"] == list(range(1, m["epochs"] + 1))
    assert tr.last("search_best_valid_auc") == pytest.approx(m["search_valid_auc"])
    assert tr.last("valid_auc") == pytest.approx(m["valid_auc"])  # the argmax model's: no curve of that name
    assert "data_dir" not in tr.params and tr.tags["data_dir"] == str(data_dir)  # machine paths are tags
    assert not (tmp_path / "search.work").exists()

    tr2 = RecordingTracker()
    r = run_retrain(data_dir, out / "architecture.json", tmp_path / "retrain", _cfg(), tracker=tr2)
    assert KEYS | ARCH_KEYS <= set(r) and r["model"] == "optinter" and r["stage"] == "retrain"
    assert [r["n_memorize"], r["n_factorize"], r["n_naive"]] == arch.counts()
    assert (tmp_path / "retrain" / "model.pt").exists()
    assert tr2.last("test_auc") == pytest.approx(r["test_auc"])
    assert [s for k, _, s in tr2.metrics if k == "valid_auc"] == list(range(1, r["epochs"] + 1))
    assert tr2.last("best_valid_auc") == pytest.approx(r["valid_auc"])
    assert tr2.last("best_valid_logloss") == pytest.approx(r["valid_logloss"])
    assert tr2.last("mean_samples_per_s") == pytest.approx(r["samples_per_s"])
    assert len([k for k, _, _ in tr2.metrics if k == "samples_per_s"]) == r["epochs"]
    assert any(p.endswith("metrics.json") for p, _ in tr2.artifacts)


@pytest.mark.parametrize("model", ["optinter_m", "optinter"])
def test_run_train(tiny_data, tmp_path, model):
    data_dir, _ = tiny_data
    m = run_train(data_dir, model, tmp_path / model, _cfg())
    assert KEYS | ARCH_KEYS <= set(m) and m["model"] == model
    files = {p.name for p in (tmp_path / model).iterdir()}
    assert {"metrics.json", "model.pt"} <= files
    if model == "optinter":
        assert {"architecture.json", "search_metrics.json"} <= files and "noretrain_test_auc" in m


def test_errors_before_training(tiny_data, tmp_path):
    data_dir, _ = tiny_data
    with pytest.raises(ValueError, match="train.lr_o must be positive"):
        cfg = _cfg()
        cfg.train.lr_o = -1.0
        run_train(data_dir, "optinter_m", tmp_path / "x", cfg)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        run_train(data_dir, "nope", tmp_path / "x", _cfg())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_search(tmp_path / "missing", tmp_path / "x", _cfg())
    bad = tmp_path / "bad_arch.json"
    Architecture(pairs=["c0|c1"], choices=["memorize"]).save(bad)
    with pytest.raises(ValueError, match="does not match the feature map"):
        run_retrain(data_dir, bad, tmp_path / "x", _cfg())
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    f = sorted((broken / "train").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(f).drop(["c2"]), f)
    with pytest.raises(ValueError, match="missing column 'c2'"):
        run_train(broken, "optinter_f", tmp_path / "x", _cfg())
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_cli_train_and_bad_override(tiny_data, tmp_path, capsys):
    data_dir, _ = tiny_data
    args = ["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--model", "optinter_f"]
    for s in SMALL:
        args += ["--set", s]
    assert cli_main(["-q", *args]) == 0
    line = capsys.readouterr().out
    assert line.startswith("train: optinter_f valid AUC") and "test AUC" in line
    assert cli_main(["-q", *args, "--set", "train.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
