"""Looked-up embedding L2 (EmbeddingPenalty), the optional first-order term of OptInter, and the
Criteo-sample defaults vs the paper's Table IV (paper_config)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optinter.config import PAPER_OVERRIDES, RunConfig, TrainConfig, apply_overrides, default_config, paper_config
from optinter.models.base import Batch
from optinter.registry import build_model, build_search_model
from optinter.train import EmbeddingPenalty, batch_loss, make_optimizers
from preprocess.feature_map import FeatureMap

SMALL = ["model.embed_dim=4", "model.cross_embed_dim=3", "model.mlp_dims=8", "train.device=cpu"]


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def _batch(fmap: FeatureMap, n: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size, (n,), generator=g) for f in fmap.categorical], 1)
    pairs = torch.stack([torch.randint(0, p.vocab_size, (n,), generator=g) for p in fmap.pairs], 1)
    cont = torch.rand(n, len(fmap.continuous), generator=g)
    return Batch(cat, cont, pairs, (torch.rand(n, generator=g) < 0.3).float())


def test_penalty_matches_rows_looked_up_by_hand(fmap):
    cfg = apply_overrides(RunConfig(), SMALL + ["train.emb_l2_o=0.3", "train.emb_l2_c=0.07"])
    torch.manual_seed(0)
    model = build_model("optinter_m", fmap, cfg.model)
    b = _batch(fmap)
    pen = EmbeddingPenalty(model, cfg.train)
    model.train()
    with_pen = batch_loss(model, b, penalty=pen)
    plain = batch_loss(model, b)  # the hooks still record: drop that pass's terms
    assert pen.pop() is not None
    # independent computation: index the weight tables directly
    e_o = model.embed.cat.table.weight[b.cat + model.embed.cat.offsets]
    e_m = model.cross.table.weight[b.pairs + model.cross.offsets]
    expected = (0.3 * e_o.pow(2).sum() + 0.07 * e_m.pow(2).sum()) / len(b)
    assert float((with_pen - plain).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # nothing recorded in eval mode / without gradients, and removable
    model.eval()
    with torch.no_grad():
        model(b)
    assert pen.pop() is None
    pen.remove()
    model.train()
    model(b)
    assert pen.pop() is None


def test_penalty_off_registers_nothing(fmap):
    model = build_model("optinter_m", fmap, apply_overrides(RunConfig(), SMALL).model)
    pen = EmbeddingPenalty(model, TrainConfig())
    model.train()
    model(_batch(fmap))
    assert pen.pop() is None and not pen._handles


@pytest.mark.parametrize("name", ["optinter_f", "optinter_search"])
def test_first_order_term_adds_lr_logit_and_own_lr(fmap, name):
    cfg = apply_overrides(RunConfig(), SMALL + ["model.first_order=true",
                                                                            "train.lr_first=0.02", "train.lr_o=1e-3"])
    torch.manual_seed(0)
    model = build_search_model("optinter", fmap, cfg.model) if name == "optinter_search" else build_model(name, fmap, cfg.model)
    assert isinstance(model.linear, nn.Module)
    b = _batch(fmap)
    model.eval()
    with torch.no_grad():
        nn.init.normal_(model.linear.cat.table.weight)
        with_first = model(b)
        # first-order logit by hand: Σ_fields w[id] + cont · w_cont + bias
        w = model.linear.cat.table.weight[b.cat + model.linear.cat.offsets].sum(dim=(1, 2))
        lin = w + b.cont @ model.linear.cont + model.linear.bias
        saved = model.linear
        model.linear = None
        without = model(b)
        model.linear = saved
    torch.testing.assert_close(with_first, without + lin)
    groups = model.named_param_groups()
    assert {id(p) for p in groups["first"]} == {id(p) for p in saved.parameters()}
    assert not {id(p) for p in groups["first"]} & {id(p) for p in groups["orig"]}
    lrs = {g["name"]: g["lr"] for o in make_optimizers(model, cfg.train).values() for g in o.param_groups if "name" in g}
    assert lrs["first"] == 0.02 and lrs["orig"] == 1e-3


def test_paper_config_keeps_table_iv_and_data_defaults_differ(fmap):
    for model in ("optinter", "lr", "deepfm"):
        paper = paper_config("criteo", model)
        assert paper.model.mlp_dims == PAPER_OVERRIDES["criteo"]["model.mlp_dims"]
        assert paper.model.embed_dim == PAPER_OVERRIDES["criteo"]["model.embed_dim"]
        assert paper.train.lr_a == PAPER_OVERRIDES["criteo"]["train.lr_a"]
        assert not paper.model.first_order
    assert paper_config("criteo", "optinter").train.lr_o == 1e-4
    derived = default_config(fmap, "optinter")
    assert derived.model.mlp_dims != paper_config("criteo", "optinter").model.mlp_dims
    # a dataset name never selects defaults
    with pytest.raises(TypeError, match="not a dataset name"):
        default_config("criteo", "optinter")
    # Table IV stays reachable as an override set
    assert apply_overrides(derived, {**PAPER_OVERRIDES["criteo"], "train.lr_o": 1e-4}).model.mlp_dims == (700,) * 5
