"""Defaults as a function of data statistics (optinter.defaults), the base-rate output bias, and the
search's decision report / undecided warning."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from optinter.architecture import Architecture
from optinter.config import apply_overrides, default_config
from optinter.defaults import ALPHA_TRAVEL, DataStats, binary_entropy, resolve_defaults, steps_per_epoch
from optinter.registry import available_models, available_search_models, build_model, build_search_model
from preprocess.feature_map import FeatureMap

ANCHOR = DataStats(train_rows=109_711, pos_ratio=0.2568, num_fields=39, num_pairs=325, vocab_total=600_000,
                   vocab_max=20_000)
SMALL = ["model.embed_dim=4", "model.cross_embed_dim=3", "model.mlp_dims=8", "train.device=cpu"]


def _at(**kw) -> DataStats:
    return dataclasses.replace(ANCHOR, **kw)


def test_anchor_gives_the_settings_tuned_on_the_criteo_sample():
    opt = resolve_defaults(ANCHOR, "optinter").config
    assert opt.train.batch_size == 500
    assert opt.model.embed_dim == 10 and opt.model.cross_embed_dim == 2
    assert opt.model.mlp_dims == (128, 128) and opt.model.dropout == 0.3
    assert opt.train.lr_decay == 0.5 and opt.train.lr_schedule == "plateau"
    # the search: ~600 steps at Θ's constant search rate, α free to travel ALPHA_TRAVEL logits
    assert opt.train.search_epochs == 3 and opt.train.search_lr == 3e-3
    assert opt.train.lr_a == pytest.approx(ALPHA_TRAVEL / (3 * 220), rel=1e-3)
    assert (opt.model.tau_start, opt.model.tau_end) == (3.0, 0.3)
    assert opt.model.zero_init_output
    assert opt.model.first_order and opt.train.emb_l2_o == pytest.approx(3e-3, rel=1e-3)
    lr = resolve_defaults(ANCHOR, "lr").config
    assert lr.train.lr_o == 3e-3 and not lr.model.first_order


ROWS = [2_000, 10_000, 50_000, 110_000, 400_000, 1_000_000, 5_000_000, 45_000_000]


@pytest.mark.parametrize("model", ["optinter", "deepfm", "lr"])
def test_size_rules_are_monotone_in_rows(model):
    cfgs = [resolve_defaults(_at(train_rows=n), model).config for n in ROWS]
    bs = [c.train.batch_size for c in cfgs]
    s1 = [c.model.embed_dim for c in cfgs]
    width = [max(c.model.mlp_dims) for c in cfgs]
    depth = [len(c.model.mlp_dims) for c in cfgs]
    drop = [c.model.dropout for c in cfgs]
    assert bs == sorted(bs) and bs[0] == 128 and bs[-1] == 2000
    assert s1 == sorted(s1) and s1[-1] == 20
    assert width == sorted(width) and depth == sorted(depth) and depth[-1] == 5
    assert drop == sorted(drop, reverse=True) and drop[-1] == 0.0
    for c in cfgs:
        # rates fall on a validation plateau, not on a clock: the same rule at every size
        assert (c.train.lr_schedule, c.train.lr_decay, c.train.patience) == ("plateau", 0.5, 2)


def test_search_length_and_lr_a_are_set_in_steps():
    for n in ROWS:
        c = resolve_defaults(_at(train_rows=n), "optinter").config
        steps = c.train.search_epochs * steps_per_epoch(n, c.train.batch_size)
        assert 1 <= c.train.search_epochs <= 4
        # α can move by ALPHA_TRAVEL logits with Adam (~lr_a per step), whatever N
        assert c.train.lr_a * steps == pytest.approx(ALPHA_TRAVEL, rel=0.01)
    # the paper's Table IV lr_a with one epoch moves α by ~1e-3 at this size; ours by ALPHA_TRAVEL
    assert resolve_defaults(ANCHOR, "optinter").config.train.lr_a > 100 * 3e-5


def test_regularization_follows_the_label_entropy():
    ps = [0.005, 0.01, 0.05, 0.2568, 0.5]
    l2 = [resolve_defaults(_at(pos_ratio=p), "optinter").config.train.emb_l2_o for p in ps]
    assert l2 == sorted(l2)  # more entropy, more loss per row, the same relative penalty
    assert l2[1] / l2[3] == pytest.approx(binary_entropy(0.01) / binary_entropy(0.2568), rel=1e-3)
    poly = [resolve_defaults(_at(pos_ratio=p), "poly2").config.train.emb_l2_c for p in ps]
    assert poly == sorted(poly)


def test_narrow_vocabularies_cap_the_embedding_width():
    wide = resolve_defaults(_at(train_rows=45_000_000), "deepfm").config.model.embed_dim
    narrow = resolve_defaults(_at(train_rows=45_000_000, vocab_max=6), "deepfm").config.model.embed_dim
    assert narrow < wide and narrow >= 4


def test_reasons_name_every_resolved_setting():
    r = resolve_defaults(ANCHOR, "optinter")
    flat = r.config.flat()
    for key, why in r.reasons.items():
        assert key in flat and why
    assert {"train.batch_size", "train.lr_a", "train.search_epochs", "model.embed_dim"} <= set(r.reasons)


def test_default_config_reads_the_feature_map(tiny_data):
    fmap = FeatureMap.load(tiny_data[0])
    stats = DataStats.from_feature_map(fmap)
    assert stats.train_rows == fmap.splits["train"].rows and stats.num_pairs == fmap.num_pairs
    assert default_config(fmap, "optinter").to_dict() == resolve_defaults(stats, "optinter").config.to_dict()


# ---- the base rate -----------------------------------------------------------------------------------
def _with_pos_ratio(fmap: FeatureMap, p: float) -> FeatureMap:
    d = fmap.to_dict()
    rows = d["splits"]["train"]["rows"]
    d["splits"]["train"]["positives"] = int(round(p * rows))
    return FeatureMap.from_dict(d)


@pytest.mark.parametrize("p", [0.01, 0.3])
def test_every_model_starts_from_the_train_log_odds(tiny_data, p):
    fmap = _with_pos_ratio(FeatureMap.load(tiny_data[0]), p)
    q = fmap.splits["train"].pos_ratio
    want = math.log(q / (1 - q))
    cfg = apply_overrides(default_config(None, "lr"), SMALL)
    for name in available_models():
        if name in ("optinter", "autofis"):
            continue  # need an architecture: covered through their search variants below
        torch.manual_seed(0)
        m = build_model(name, fmap, cfg.model)
        assert float(m.output_bias().detach()) == pytest.approx(want, abs=1e-6), name
    for name in available_search_models():
        m = build_search_model(name, fmap, cfg.model)
        assert float(m.output_bias().detach()) == pytest.approx(want, abs=1e-6), name


def test_lr_predicts_the_base_rate_before_training(tiny_data):
    from optinter.data import ParquetBatches

    fmap = _with_pos_ratio(FeatureMap.load(tiny_data[0]), 0.01)
    m = build_model("lr", fmap, default_config(None, "lr").model)
    b = next(iter(ParquetBatches(tiny_data[0], fmap, "train", 256, [])))
    with torch.no_grad():
        p = torch.sigmoid(m(b)).numpy()
    np.testing.assert_allclose(p, fmap.splits["train"].pos_ratio, rtol=1e-5)


# ---- how decided a search is ----------------------------------------------------------------------------
def test_decision_of_uniform_and_certain_probabilities(tiny_data):
    fmap = FeatureMap.load(tiny_data[0])
    n = fmap.num_pairs
    flat = Architecture.from_probs(fmap, np.full((n, 3), 1 / 3) + np.random.default_rng(0).normal(0, 1e-4, (n, 3)))
    d = flat.decision()
    assert not d["decided"] and d["clear_share"] == 0.0 and d["entropy_mean"] == pytest.approx(1.0, abs=1e-4)
    sure = np.tile([0.9, 0.05, 0.05], (n, 1))
    d = Architecture.from_probs(fmap, sure).decision()
    assert d["decided"] and d["clear_share"] == 1.0 and d["max_prob_mean"] == pytest.approx(0.9)
    # independent entropy
    h = -(sure[0] * np.log(sure[0])).sum() / np.log(3)
    assert d["entropy_mean"] == pytest.approx(h)
    saved = Architecture.from_dict(Architecture.from_probs(fmap, sure).to_dict())
    assert saved.decision() == d


def test_an_undecided_search_warns_and_is_recorded(tiny_data, tmp_path, caplog):
    import json

    from optinter.stages import run_search

    class Tags:
        def __init__(self):
            self.tags = {}

        def log_params(self, p):
            pass

        def log_metrics(self, m, step=None):
            pass

        def set_tags(self, t):
            self.tags.update(t)

        def log_artifact(self, path, artifact_path=None):
            pass

    cfg = apply_overrides(default_config(FeatureMap.load(tiny_data[0]), "optinter"),
                          SMALL + ["train.lr_a=1e-7", "train.search_epochs=1"])
    tr = Tags()
    with caplog.at_level(logging.WARNING, logger="optinter.search"):
        m = run_search(tiny_data[0], tmp_path / "s", cfg, tracker=tr)
    assert "SEARCH UNDECIDED" in caplog.text
    assert m["search_decided"] is False and m["search_clear_share"] < 0.5
    assert tr.tags.get("optinter.search_undecided") == "true"
    arch = json.loads((tmp_path / "s" / "architecture.json").read_text())
    assert arch["decision"]["decided"] is False
    assert set(arch["pair_decision"]) == set(arch["pairs"])
