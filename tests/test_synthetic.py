"""The synthetic generator: deterministic, and its files carry exactly the planted structure."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from preprocess.synthetic import SynthConfig, generate, load_truth

SMALL = dict(n_train=60_000, n_valid=5_000, n_test=5_000)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    truth = generate(SynthConfig(**SMALL), out)
    return out, truth


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_files_and_truth(synth):
    out, truth = synth
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv", "truth.json", "valid.csv"]
    assert load_truth(out) == json.loads((out / "truth.json").read_text())
    df = pd.read_csv(out / "train.csv")
    assert list(df.columns) == ["label", "p_true"] + [f"c{i}" for i in range(8)] + ["n0", "n1"]
    assert len(df) == SMALL["n_train"]
    kinds = truth["pairs"]
    assert len(kinds) == 28
    assert sum(k == "memorize" for k in kinds.values()) == 4
    assert sum(k == "factorize" for k in kinds.values()) == 1
    # Bayes figures are the sklearn figures of p_true on each split
    for split in ("train", "valid", "test"):
        d = pd.read_csv(out / f"{split}.csv")
        assert truth["bayes"][split]["auc"] == pytest.approx(roc_auc_score(d.label, d.p_true), abs=1e-12)
        assert truth["bayes"][split]["logloss"] == pytest.approx(log_loss(d.label, d.p_true), abs=1e-6)
        # labels are drawn from p_true: the click rate matches the mean probability
        assert abs(d.label.mean() - d.p_true.mean()) < 4 * np.sqrt(0.25 / len(d))
    assert abs(df.p_true.mean() - SynthConfig().target_ctr) < 0.01


def test_deterministic(synth, tmp_path):
    out, _ = synth
    again = tmp_path / "again"
    generate(SynthConfig(**SMALL), again)
    assert _digest(out) == _digest(again)
    other = tmp_path / "other"
    generate(SynthConfig(seed=7, **SMALL), other)
    assert _digest(out)["train.csv"] != _digest(other)["train.csv"]


def _interaction_table(df: pd.DataFrame, a: str, b: str) -> np.ndarray:
    """Double-centred mean of logit(p_true) over the (a, b) cells.

    Fields are drawn independently, so E[logit | a, b] = f(a) + g(b) + T(a, b) + const: double
    centring removes f and g and leaves the planted interaction T (≈ 0 for a naive pair).
    """
    z = np.log(df.p_true / (1 - df.p_true))
    table = z.groupby([df[a], df[b]]).mean().unstack()
    t = table.to_numpy()
    t = t - np.nanmean(t, axis=1, keepdims=True)
    t = t - np.nanmean(t, axis=0, keepdims=True)
    return np.nan_to_num(t)


def test_planted_structure_is_in_the_data(synth):
    out, truth = synth
    df = pd.read_csv(out / "train.csv")
    strength = {}
    for pair, kind in truth["pairs"].items():
        a, b = pair.split("|")
        if int(a[1:]) >= 6 or int(b[1:]) >= 6:
            continue  # high-cardinality cells are too sparse for a cell-mean check at this size
        t = _interaction_table(df, a, b)
        strength[pair] = (kind, float(np.sqrt(np.mean(t**2))), np.linalg.matrix_rank(t, tol=0.3))
    mem = [s for k, s, _ in strength.values() if k == "memorize"]
    naive = [s for k, s, _ in strength.values() if k == "naive"]
    assert min(mem) > 0.9 and max(naive) < 0.45 and min(mem) > 2.5 * np.median(naive), strength
    # memorize tables are full rank (a low-rank factorization cannot express them)
    for pair, (kind, _, rank) in strength.items():
        if kind == "memorize":
            a, b = pair.split("|")
            card = min(SynthConfig().cardinalities[int(a[1:])], SynthConfig().cardinalities[int(b[1:])])
            assert rank >= card - 1, (pair, rank)


def test_factorize_pairs_are_low_rank():
    from preprocess.synthetic import _plant

    cfg = SynthConfig(**SMALL)
    planted = _plant(cfg)
    for (a, b), (u, v) in planted.fac_vectors.items():
        t = u @ v.T
        assert np.linalg.matrix_rank(t) == cfg.factorize_rank
        assert t.std() == pytest.approx(cfg.factorize_std, rel=0.2)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(cardinalities=(5,)), "at least two"),
        (dict(memorize_pairs=((0, 0),)), "not a pair"),
        (dict(memorize_pairs=((0, 1),), factorize_pairs=((1, 0),)), "planted twice"),
        (dict(n_train=0), "n_train"),
        (dict(target_ctr=1.5), "target_ctr"),
    ],
)
def test_bad_config(kwargs, msg, tmp_path):
    with pytest.raises(ValueError, match=msg):
        generate(SynthConfig(**kwargs), tmp_path / "x")
    assert not (tmp_path / "x").exists()
