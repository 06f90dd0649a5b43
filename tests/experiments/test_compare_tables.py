"""The compare tables on a tiny encoded dataset with a fake trainer: shape, numbers, cache reuse."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from encoded_data import write_encoded
from fake_trainer import N_PAIRS, FakeTrainer, fake_params
from optinter.config import RunConfig
from optinter.experiments import CompareConfig, enlarged_embed_dim, run_compare
from optinter.tracking import RecordingTracker

MODELS = ("lr", "fm", "optinter_m", "optinter")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    fm, _ = write_encoded(root, n_rows=400, cards=(3, 4, 3, 5))
    assert fm.num_pairs == N_PAIRS
    return root


def _pc(model, fm, cfg):
    return fake_params(model, cfg.model.embed_dim, cfg.model.cross_embed_dim)


def _runs(out):
    return pd.read_csv(out / "runs.csv")


def test_table_v_and_vi(data, tmp_path):
    fake = FakeTrainer()
    tracker = RecordingTracker()
    out = tmp_path / "cmp"
    res = run_compare(data, out, CompareConfig(models=MODELS, seeds=4, tables=("V", "VI")), tracker,
                      train_fn=fake, param_count_fn=_pc)
    assert res["jobs_trained"] == 4 * len(MODELS) and res["jobs_cached"] == 0
    v = pd.read_csv(out / "table_V.csv")
    assert list(v["model"]) == ["lr", "fm", "optinter_m", "optinter"]  # paper order
    runs = _runs(out)
    for model, g in runs.groupby("model"):
        row = v[v["model"] == model].iloc[0]
        assert row["auc_mean"] == pytest.approx(g["test_auc"].mean())
        assert row["auc_std"] == pytest.approx(g["test_auc"].std(ddof=1))
        assert row["n_seeds"] == 4
    best = v[v["model"] != "optinter"].sort_values("auc_mean").iloc[-1]["model"]
    opt = v[v["model"] == "optinter"].iloc[0]
    assert opt["vs"] == best
    a = runs[runs["model"] == "optinter"].sort_values("seed")
    b = runs[runs["model"] == best].sort_values("seed")
    assert opt["p_auc"] == pytest.approx(ttest_rel(a["test_auc"], b["test_auc"]).pvalue, rel=1e-6)
    assert opt["p_logloss"] == pytest.approx(ttest_rel(a["test_logloss"], b["test_logloss"]).pvalue, rel=1e-6)
    assert v.loc[v["model"] != "optinter", "p_auc"].isna().all()
    md = (out / "table_V.md").read_text()
    assert md.count("\n|") == len(MODELS) + 2 and "±" in md
    vi = pd.read_csv(out / "table_VI.csv").set_index("model")
    assert list(vi.loc["lr", ["n_memorize", "n_factorize", "n_naive"]]) == [0, 0, N_PAIRS]
    assert list(vi.loc["fm", ["n_memorize", "n_factorize", "n_naive"]]) == [0, N_PAIRS, 0]
    assert list(vi.loc["optinter_m", ["n_memorize", "n_factorize", "n_naive"]]) == [N_PAIRS, 0, 0]
    assert vi.loc["optinter", ["n_memorize", "n_factorize", "n_naive"]].sum() == pytest.approx(N_PAIRS)
    # logged under the parent run
    assert tracker.last("V.optinter.auc") == pytest.approx(opt["auc_mean"])
    assert {a for a, _ in tracker.artifacts} >= {str(out / "table_V.csv"), str(out / "table_VI.md")}
    # weights are not kept in the cache by default
    assert not list((tmp_path / "compare_cache").rglob("*.pt"))


def test_cache_trains_only_new_seeds(data, tmp_path):
    out = tmp_path / "cmp"
    cc = dict(models=("lr", "optinter"), tables=("V",))
    f1 = FakeTrainer()
    run_compare(data, out, CompareConfig(seeds=2, **cc), train_fn=f1)
    assert len(f1.calls) == 4
    first = pd.read_csv(out / "table_V.csv")
    f2 = FakeTrainer()
    res = run_compare(data, out, CompareConfig(seeds=3, **cc), train_fn=f2)
    assert sorted(f2.calls) == sorted([("lr/seed2", 2028), ("optinter/seed2", 2028)])
    assert res["jobs_cached"] == 4 and res["jobs_trained"] == 2
    f3 = FakeTrainer()
    run_compare(data, out, CompareConfig(seeds=2, **cc), train_fn=f3)
    assert f3.calls == []
    pd.testing.assert_frame_equal(pd.read_csv(out / "table_V.csv"), first)
    # a changed config is a new key: retrained
    f4 = FakeTrainer()
    run_compare(data, out, CompareConfig(seeds=1, overrides=("train.epochs=3",), **cc), train_fn=f4)
    assert len(f4.calls) == 2


def test_ablation_tables_and_fig4(data, tmp_path):
    fake = FakeTrainer()
    out = tmp_path / "cmp"
    # sizes pinned (the data-derived defaults of the tiny data differ): the tables' mechanics are tested
    cc = CompareConfig(models=("lr", "optinter"), seeds=3, tables=("VII", "VIII", "IX", "fig4"),
                       enlarge_models=("fm", "fnn"), n_random=4, fig4_cross_dims=(2, 10),
                       overrides=(f"model.embed_dim={RunConfig().model.embed_dim}", "model.cross_embed_dim=10"))
    res = run_compare(data, out, cc, train_fn=fake, param_count_fn=_pc)
    assert set(res["tables"]) == {"VII", "VIII", "IX", "fig4"}
    runs = _runs(out)
    opt = runs[(runs["model"] == "optinter") & (runs["table"] == "V")].sort_values("seed")
    target = opt["params"].mean()
    vii = pd.read_csv(out / "table_VII.csv").set_index("model")
    assert list(vii.index) == ["fnn", "fm", "optinter"]  # paper order
    for m in ("fm", "fnn"):
        d = int(vii.loc[m, "orig_embed"])
        assert abs(fake_params(m, d, 10) - target) <= min(abs(fake_params(m, d + k, 10) - target) for k in (-1, 1))
        assert vii.loc[m, "params"] == pytest.approx(fake_params(m, d, 10))
        got = runs[(runs["table"] == "VII") & (runs["model"] == m)].sort_values("seed")
        assert vii.loc[m, "p_auc"] == pytest.approx(ttest_rel(opt["test_auc"], got["test_auc"]).pvalue, rel=1e-6)
    viii = pd.read_csv(out / "table_VIII.csv").set_index("model")
    assert list(viii.index) == ["random", "bi-level", "optinter"]
    rnd = runs[runs["variant"] == "random"]
    assert len(rnd) == 4 and viii.loc["random", "auc_mean"] == pytest.approx(rnd["test_auc"].mean())
    assert viii.loc["random", "n_seeds"] == 4 and np.isnan(viii.loc["random", "p_auc"])
    bil = runs[runs["extra"].fillna("").str.contains("bilevel")].sort_values("seed")
    assert len(bil) == 3
    assert viii.loc["bi-level", "p_auc"] == pytest.approx(ttest_rel(opt["test_auc"], bil["test_auc"]).pvalue, rel=1e-6)
    ix = pd.read_csv(out / "table_IX.csv").set_index("model")
    assert ix.loc["with re-train", "auc_mean"] == pytest.approx(opt["test_auc"].mean())
    assert ix.loc["without re-train", "auc_mean"] < ix.loc["with re-train", "auc_mean"]
    f4 = pd.read_csv(out / "fig4.csv")
    assert len(f4) == 4 and set(f4["model"]) == {"optinter", "optinter_m"}
    m10 = f4[(f4["model"] == "optinter_m") & (f4["cross_embed"] == 10)].iloc[0]
    assert m10["params"] == fake_params("optinter_m", RunConfig().model.embed_dim, 10)
    assert (out / "fig4.png").stat().st_size > 1000
    # optinter at the default cross_embed_dim (10) is the same job as Table V's: reused, not retrained
    assert len([c for c in fake.calls if re.fullmatch(r"optinter/seed\d", c[0])]) == 3
    assert not [c for c in fake.calls if c[0].startswith("optinter/model.cross_embed_dim=10")]
    assert len(fake.calls) == len(runs["key"].unique())  # every job trained once
    html = (out / "report.html").read_text()
    assert "Table VIII" in html and "data:image/png;base64," in html
    assert "Table VII" in (out / "tables.md").read_text()


def test_enlarged_embed_dim_bisection_when_not_quadratic(data):
    from optinter.config import RunConfig
    from preprocess.feature_map import FeatureMap

    fm = FeatureMap.load(data)
    cube = lambda m, f, c: c.model.embed_dim ** 3 + 5  # noqa: E731 - not quadratic: bisection path
    dim, p = enlarged_embed_dim("x", fm, RunConfig(), target=30 ** 3, param_count_fn=cube)
    assert dim == 30 and p == 30 ** 3 + 5


def test_bad_compare_config():
    with pytest.raises(ValueError, match="unknown table"):
        CompareConfig(tables=("V", "X"))
    with pytest.raises(ValueError, match="seeds"):
        CompareConfig(seeds=0).validate()
    assert CompareConfig(tables="v,table vi,fig4").tables == ("V", "VI", "fig4")


def test_star_only_for_significant_improvement():
    from optinter.experiments import table_v

    rng = np.random.default_rng(0)
    base = [{"test_auc": 0.80 + e, "test_logloss": 0.45 - e, "params": 10} for e in rng.normal(0, 1e-4, 4)]
    worse = [{"test_auc": r["test_auc"] - 0.01, "test_logloss": r["test_logloss"] + 0.01, "params": 20} for r in base]
    better = [{"test_auc": r["test_auc"] + 0.01, "test_logloss": r["test_logloss"] - 0.01, "params": 20} for r in base]
    for runs, star in ((worse, False), (better, True)):
        df, md = table_v({"fm": base, "optinter": runs}, alpha=0.005)
        row = md[md["Model"] == "optinter"].iloc[0]
        assert df.loc[df["model"] == "optinter", "p_auc"].iloc[0] < 0.005
        assert row["AUC"].endswith("*") == star and row["Log loss"].endswith("*") == star
