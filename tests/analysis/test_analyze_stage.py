"""The analyze stage: mi.csv, figures, report, architecture + truth handling, tracking."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mutual_info_score

from encoded_data import write_encoded
from optinter.analysis import load_arch_info, mean_mi_by_method, run_analyze
from optinter.architecture import Architecture
from optinter.tracking import RecordingTracker


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    fm, train = write_encoded(root, n_rows=2000, cards=(3, 5, 4, 6, 3), n_files=2, seed=11)
    return root, fm, train


def _arch(fm, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1, 1, 1], size=fm.num_pairs)
    return Architecture.from_probs(fm, probs)


def test_analyze_without_architecture(data, tmp_path):
    root, fm, train = data
    out = tmp_path / "an"
    res = run_analyze(root, out)
    mi = pd.read_csv(out / "mi.csv")
    assert list(mi["pair"]) == [p.name for p in fm.pairs]
    y = train["label"].astype(int)
    np.testing.assert_allclose(mi["mi"], [mutual_info_score(y, train[p.name]) for p in fm.pairs], rtol=1e-6)
    assert "method" not in mi
    assert (out / "mi_heatmap.png").exists() and (out / "mi_fields.csv").exists()
    assert res["n_pairs"] == fm.num_pairs
    assert not list(tmp_path.glob(".an.tmp-*"))  # temp folder cleaned up


def test_analyze_with_architecture_truth_and_metrics(data, tmp_path):
    root, fm, train = data
    arch = _arch(fm)
    arch_path = arch.save(tmp_path / "architecture.json")
    truth = {"pairs": {p.name: ("memorize" if p.name == "c0|c1" else "naive") for p in fm.pairs}}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    metrics = tmp_path / "retrain" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"model": "optinter", "test_auc": 0.7123, "test_logloss": 0.51, "params": 1234,
                                   **arch.count_dict()}))
    tracker = RecordingTracker()
    out = tmp_path / "an"
    res = run_analyze(root, out, arch_path=arch_path, tracker=tracker, truth_path=tmp_path / "truth.json",
                      metrics_paths=[metrics])
    mi = pd.read_csv(out / "mi.csv")
    assert list(mi["method"]) == arch.choices
    np.testing.assert_allclose(mi[["p_memorize", "p_factorize", "p_naive"]].to_numpy(), np.array(arch.probs))
    assert set(mi.loc[mi["planted"] == "memorize", "pair"]) == {"c0|c1"}
    rho = spearmanr(mi["mi"], mi["p_memorize"]).statistic
    assert res["spearman_mi_p_memorize"] == pytest.approx(rho)
    assert tracker.last("mi.spearman_p_memorize") == pytest.approx(rho)
    expected = mi.groupby("method")["mi"].mean()
    for m, v in res["mean_mi_by_method"].items():
        assert v == pytest.approx(expected[m])
    assert res["arch_counts"] == dict(zip(("memorize", "factorize", "naive"), arch.counts()))
    for f in ("mi_heatmap.png", "mi_mm_heatmap.png", "mi_by_method.png", "mi_vs_memorize.png", "mi_by_planted.png"):
        assert (out / f).stat().st_size > 1000
    # report: self-contained, every figure inlined, results and architecture present
    html = (out / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == len(res["figures"])
    inlined = {base64.b64decode(s) for s in imgs}
    assert all((out / f).read_bytes() in inlined for f in ("mi_heatmap.png", "mi_by_method.png"))
    assert "0.7123" in html and "optinter" in html and "Architecture" in html
    assert "src=\"http" not in html and "<link" not in html
    logged = {a for a, _ in tracker.artifacts}
    assert str(out / "report.html") in logged and str(out / "mi.csv") in logged


def test_mean_mi_by_method_against_pandas():
    df = pd.DataFrame({"mi": [0.1, 0.3, 0.2, 0.05], "method": ["memorize", "memorize", "naive", "factorize"]})
    got = mean_mi_by_method(df)
    assert list(got.index) == ["memorize", "factorize", "naive"]
    assert got.loc["memorize", "mean_mi"] == pytest.approx(0.2)
    assert got.loc["memorize", "pairs"] == 2


def test_architecture_mismatch_is_a_clear_error(data, tmp_path):
    root, fm, _ = data
    bad = {"version": 1, "pairs": {"c0|c1": "memorize"}}
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="no method for pair"):
        run_analyze(root, tmp_path / "an", arch_path=tmp_path / "a.json")
    assert not (tmp_path / "an").exists()


def test_architecture_is_read_by_the_one_reader(tmp_path):
    """analyze reads architecture.json with Architecture.load (methods and probabilities); a file
    in another layout, or with an unknown method, is a clear error naming it."""
    names = ["a|b", "a|c"]
    arch = Architecture(pairs=names, choices=["memorize", "naive"], probs=[[.7, .2, .1], [.1, .1, .8]])
    info = load_arch_info(arch.save(tmp_path / "1.json"), names)
    assert info.methods == {"a|b": "memorize", "a|c": "naive"} and info.probs["a|c"] == (.1, .1, .8)
    assert info.counts() == {"memorize": 1, "factorize": 0, "naive": 1}
    (tmp_path / "2.json").write_text(json.dumps({"methods": ["memorize", "naive"]}))
    with pytest.raises(ValueError, match="version"):
        load_arch_info(tmp_path / "2.json", names)
    (tmp_path / "3.json").write_text(json.dumps({"version": 1, "pairs": {"a|b": "memorize", "a|c": "bogus"}}))
    with pytest.raises(ValueError, match="bogus"):
        load_arch_info(tmp_path / "3.json", names)


def test_analyze_without_pairs(tmp_path):
    from preprocess.feature_map import FeatureMap

    fm, train = write_encoded(tmp_path / "d", n_rows=300, cards=(3, 4))
    fm.pairs = []
    fm.save(tmp_path / "d")
    res = run_analyze(tmp_path / "d", tmp_path / "an")
    assert res["n_pairs"] == 0 and not (tmp_path / "an" / "mi_heatmap.png").exists()
    fields = pd.read_csv(tmp_path / "an" / "mi_fields.csv")
    assert fields["mi"].tolist() == pytest.approx([mutual_info_score(train["label"], train[c]) for c in ("c0", "c1")])
    assert FeatureMap.load(tmp_path / "d").num_pairs == 0
