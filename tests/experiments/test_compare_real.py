"""compare + analyze end to end with the real trainer on tiny synthetic data (synth → preprocess)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from optinter.analysis import run_analyze
from optinter.experiments import CompareConfig, run_compare
from preprocess.pipeline import PreprocessConfig, run_preprocess
from preprocess.synthetic import SynthConfig, generate

TINY = ("model.mlp_dims=16", "model.embed_dim=4", "model.cross_embed_dim=2", "train.epochs=1",
        "train.batch_size=256", "train.num_threads=1")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(n_train=3000, n_valid=600, n_test=600, cardinalities=(4, 5, 6, 8, 30),
                         memorize_pairs=((0, 1), (2, 3)), factorize_pairs=((3, 4),)), root / "raw")
    raw = root / "raw"
    run_preprocess(PreprocessConfig(dataset="synthetic", out=str(root / "data"), train=[str(raw / "train.csv")],
                                    valid=[str(raw / "valid.csv")], test=[str(raw / "test.csv")],
                                    processes=False, n_workers=1, threads_per_worker=2))
    return root


@pytest.mark.slow
def test_compare_and_analyze_with_real_trainer(synth, tmp_path):
    out = tmp_path / "cmp"
    cc = CompareConfig(models=("lr", "optinter"), seeds=2, tables=("V", "VI", "IX"), overrides=TINY)
    res = run_compare(synth / "data", out, cc)
    assert res["jobs_trained"] == 4
    runs = pd.read_csv(out / "runs.csv")
    assert ((runs["test_auc"] > 0) & (runs["test_auc"] < 1)).all() and (runs["params"] > 0).all()
    v = pd.read_csv(out / "table_V.csv").set_index("model")
    a = runs[runs["model"] == "optinter"].sort_values("seed")["test_auc"]
    b = runs[runs["model"] == "lr"].sort_values("seed")["test_auc"]
    assert v.loc["optinter", "vs"] == "lr"
    assert v.loc["optinter", "p_auc"] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-6, nan_ok=True)
    vi = pd.read_csv(out / "table_VI.csv").set_index("model")
    assert vi.loc["optinter", ["n_memorize", "n_factorize", "n_naive"]].sum() == pytest.approx(10)
    ix = pd.read_csv(out / "table_IX.csv").set_index("model")
    assert ix.loc["without re-train", "n_seeds"] == 2
    # the cache holds each job's metrics and the searched architecture; no weights
    cache = tmp_path / "compare_cache"
    arch_files = sorted(cache.glob("*/train/architecture.json"))
    assert len(arch_files) == 2 and not list(cache.rglob("*.pt"))
    # rerun: everything cached, same table
    res2 = run_compare(synth / "data", out, cc)
    assert res2["jobs_trained"] == 0 and res2["jobs_cached"] == 4
    pd.testing.assert_frame_equal(pd.read_csv(out / "table_V.csv").set_index("model"), v)

    # analyze with a searched architecture, the synthetic truth and the trained metrics
    metrics = sorted(cache.glob("*/train/metrics.json"))
    an = run_analyze(synth / "data", tmp_path / "an", arch_path=arch_files[0], truth_path=synth / "raw" / "truth.json",
                     metrics_paths=metrics)
    mi = pd.read_csv(tmp_path / "an" / "mi.csv").set_index("pair")
    truth = json.loads((synth / "raw" / "truth.json").read_text())["pairs"]
    assert mi["planted"].to_dict() == truth
    arch = json.loads(arch_files[0].read_text())
    assert mi["method"].to_dict() == arch["pairs"]
    assert np.isfinite(an["spearman_mi_p_memorize"]) or mi["p_memorize"].nunique() == 1
    html = (tmp_path / "an" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(an["figures"]) and "test_auc" in html
