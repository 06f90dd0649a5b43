"""The first-order term started from a fitted LR (optinter.warmstart): the start predicts what the
project's own ``lr`` model predicts when trained alone, and the re-train falls back to it when no
epoch beats it on valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from optinter.architecture import Architecture
from optinter.config import apply_overrides, default_config
from optinter.registry import build_model
from optinter.stages import load_feature_map, make_loaders, run_retrain, run_train
from optinter.train import predict
from optinter.warmstart import keep_better, lr_config, warm_start_first_order, wants_warm_start

CPU = ["train.device=cpu", "train.checkpoint=false"]


@pytest.fixture(scope="module")
def lr_run(tiny_data, tmp_path_factory):
    data, _ = tiny_data
    fmap = load_feature_map(data)
    cfg = apply_overrides(default_config(fmap, "lr"), CPU)
    out = tmp_path_factory.mktemp("lr")
    return run_train(data, "lr", out, cfg)


def test_the_start_is_the_fitted_lr(tiny_data, lr_run):
    data, _ = tiny_data
    fmap = load_feature_map(data)
    cfg = apply_overrides(default_config(fmap, "optinter_f"), CPU)
    assert cfg.train.first_order_init == "lr" and cfg.model.zero_init_output
    torch.manual_seed(0)
    model = build_model("optinter_f", fmap, cfg.model)
    assert wants_warm_start(model, cfg)
    loaders = make_loaders(data, fmap, model, cfg)
    ws = warm_start_first_order(model, fmap, cfg, lambda m, c: make_loaders(data, fmap, m, c), torch.device("cpu"),
                                loaders["valid"])
    # the same numbers as the lr model trained alone by its own stage (same data-derived defaults and seed)
    assert ws.valid_auc == pytest.approx(lr_run["valid_auc"], abs=1e-6)
    y, p = predict(model, loaders["test"], torch.device("cpu"))
    assert roc_auc_score(y, p) == pytest.approx(lr_run["test_auc"], abs=1e-6)
    assert float(model.mlp.out.weight.detach().abs().sum()) == 0.0  # the network adds nothing yet
    # LR's settings are its own, with the stage's seed / device
    lcfg = lr_config(fmap, apply_overrides(cfg, ["train.seed=7", "train.lr_o=0.5"]))
    assert lcfg.train.seed == 7 and lcfg.train.lr_o == default_config(fmap, "lr").train.lr_o


def test_keep_better_restores_the_start_only_when_training_lost(tiny_data):
    data, _ = tiny_data
    fmap = load_feature_map(data)
    cfg = apply_overrides(default_config(fmap, "optinter_f"), CPU)
    model = build_model("optinter_f", fmap, cfg.model)
    loaders = make_loaders(data, fmap, model, cfg)
    ws = warm_start_first_order(model, fmap, cfg, lambda m, c: make_loaders(data, fmap, m, c), torch.device("cpu"),
                                loaders["valid"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert not keep_better(model, ws, ws.valid_auc + 0.01)
    assert not torch.equal(model.linear.bias, ws.state["linear.bias"])
    assert keep_better(model, ws, ws.valid_auc - 0.01)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ws.state[k]), k


def test_retrain_that_never_beats_its_start_ends_as_the_lr(tiny_data, lr_run, tmp_path):
    data, _ = tiny_data
    fmap = load_feature_map(data)
    arch = Architecture.uniform(fmap, "memorize")
    arch_file = arch.save(tmp_path / "architecture.json")
    # a learning rate that wrecks every epoch: no epoch beats the start on valid
    cfg = apply_overrides(default_config(fmap, "optinter"), [*CPU, "train.lr_o=30", "train.lr_c=30", "train.lr_first=30",
                                                              "train.epochs=2"])
    m = run_retrain(data, arch_file, tmp_path / "rt", cfg)
    assert m["warm_start_kept"] is True
    assert m["valid_auc"] == pytest.approx(lr_run["valid_auc"], abs=1e-6)
    assert m["test_auc"] == pytest.approx(lr_run["test_auc"], abs=1e-6)
    # and with the start switched off, no warm-start figures
    m0 = run_retrain(data, arch_file, tmp_path / "rt0", apply_overrides(cfg, ["train.first_order_init=zero"]))
    assert "warm_start_kept" not in m0 and np.isfinite(m0["valid_auc"])


def test_bad_first_order_init():
    with pytest.raises(ValueError, match="train.first_order_init"):
        apply_overrides(default_config(None, "optinter"), ["train.first_order_init=ones"]).validate()
