"""Training loop: optimizer groups, τ schedule, early stopping / model selection on valid,
determinism, and resuming an interrupted run from its checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from optinter.config import RunConfig, apply_overrides
from optinter.data import ParquetBatches
from optinter.registry import build_model, build_search_model
from optinter.search import evaluate_without_retrain, search
from optinter.tracking import RecordingTracker
from optinter.search import tau_at
from optinter.train import LazyAdam, evaluate, fit, make_optimizers
from preprocess.feature_map import FeatureMap

SMALL = ["model.embed_dim=4", "model.cross_embed_dim=3", "model.mlp_dims=16", "train.batch_size=500",
         "train.lr_o=3e-3", "train.lr_c=3e-3", "train.lr_a=3e-3", "train.device=cpu"]


def _cfg(*extra: str) -> RunConfig:
    return apply_overrides(RunConfig(), SMALL + list(extra))


def _loaders(data_dir, fmap, model, cfg):
    pairs = model.required_pairs()
    return (ParquetBatches(data_dir, fmap, "train", cfg.train.batch_size, pairs, shuffle=True, seed=cfg.train.seed),
            ParquetBatches(data_dir, fmap, "valid", 4096, pairs),
            ParquetBatches(data_dir, fmap, "valid", cfg.train.batch_size, pairs, shuffle=True, seed=7))


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def test_optimizer_groups_follow_table_iv(fmap):
    cfg = _cfg("train.lr_o=1e-3", "train.lr_c=2e-4", "train.lr_a=5e-5", "train.l2_c=1e-6", "train.l2_o=1e-7")
    torch.manual_seed(0)
    model = build_search_model("optinter", fmap, cfg.model)
    opts = make_optimizers(model, cfg.train)
    assert set(opts) == {"model", "sparse", "arch"}
    assert isinstance(opts["sparse"], LazyAdam)
    [g] = opts["sparse"].param_groups
    assert (g["lr"], g["weight_decay"], g["name"]) == (2e-4, 1e-6, "cross")
    [g] = opts["model"].param_groups
    assert (g["lr"], g["weight_decay"], g["name"]) == (1e-3, 1e-7, "orig")
    assert opts["arch"].param_groups[0]["lr"] == 5e-5
    assert opts["arch"].param_groups[0]["params"][0] is model.block.alpha
    dense = make_optimizers(build_search_model("optinter", fmap, apply_overrides(cfg, ["model.sparse_cross=false"]).model),
                            cfg.train)
    assert set(dense) == {"model", "arch"}
    assert [g["name"] for g in dense["model"].param_groups] == ["orig", "cross"]


def test_lazy_adam_l2_moves_only_touched_rows():
    emb = torch.nn.Embedding(10, 2, sparse=True)
    before = emb.weight.detach().clone()
    opt = LazyAdam([{"params": [emb.weight], "lr": 0.1, "weight_decay": 0.5}])
    emb(torch.tensor([1, 3])).sum().backward()
    opt.step()
    moved = (emb.weight.detach() != before).any(1)
    assert moved.tolist() == [i in (1, 3) for i in range(10)]


def test_lazy_adam_matches_torch_adam_on_touched_rows():
    """Rows looked up every step follow torch's dense Adam (coupled L2) exactly; untouched rows and
    their moments never change; repeated ids in a batch are summed first (like SparseAdam)."""
    torch.manual_seed(0)
    init = torch.randn(6, 3)
    lazy = torch.nn.Embedding(6, 3, sparse=True)
    ref = torch.nn.Embedding(4, 3)
    with torch.no_grad():
        lazy.weight.copy_(init)
        ref.weight.copy_(init[:4])
    opt_l = LazyAdam([{"params": [lazy.weight], "lr": 0.05, "weight_decay": 0.1}], eps=1e-6)
    opt_r = torch.optim.Adam(ref.parameters(), lr=0.05, weight_decay=0.1, eps=1e-6)
    ids = torch.tensor([[0, 1, 2, 3, 1], [3, 2, 1, 0, 0]])
    for step in range(5):
        target = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(step))
        for emb, opt in ((lazy, opt_l), (ref, opt_r)):
            opt.zero_grad()
            ((emb(ids) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(lazy.weight.detach()[:4], ref.weight.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(lazy.weight.detach()[4:], init[4:])
    assert torch.equal(opt_l.state[lazy.weight]["moments"][4:], torch.zeros(2, 2, 3))


def test_tau_schedule_is_exponential():
    cfg = RunConfig().model
    cfg.tau_start, cfg.tau_end = 2.0, 0.02
    assert tau_at(cfg, 0.0) == pytest.approx(2.0)
    assert tau_at(cfg, 1.0) == pytest.approx(0.02)
    assert tau_at(cfg, 0.5) == pytest.approx(math.sqrt(2.0 * 0.02))


def test_fit_selects_best_valid_epoch_and_is_deterministic(tiny_data, fmap, tmp_path):
    data_dir, _ = tiny_data
    cfg = _cfg("train.epochs=3", "train.patience=3")
    results = []
    for run in range(2):
        torch.manual_seed(cfg.train.seed)
        model = build_model("optinter_m", fmap, cfg.model)
        tr, va, _ = _loaders(data_dir, fmap, model, cfg)
        tracker = RecordingTracker()
        res = fit(model, tr, va, cfg, tmp_path / f"w{run}", tracker)
        assert res.epochs == 3 and len(res.history) == 3
        best = max(res.history, key=lambda r: r.valid_auc)
        assert res.best_epoch == best.epoch and res.best_valid_auc == best.valid_auc
        # the model holds the best epoch's weights
        assert evaluate(model, va, torch.device("cpu"))["auc"] == pytest.approx(best.valid_auc, abs=1e-9)
        assert [s for k, _, s in tracker.metrics if k == "valid_auc"] == [1, 2, 3]
        results.append([r.valid_auc for r in res.history])
    assert results[0] == results[1]


@pytest.mark.parametrize("patience,aucs,stop_epoch,best_epoch", [
    (2, [0.60, 0.70, 0.65, 0.66, 0.90, 0.91], 4, 2),
    (1, [0.60, 0.70, 0.65, 0.90, 0.91, 0.92], 3, 2),
    (3, [0.60, 0.70, 0.65, 0.66, 0.90, 0.50], 6, 5),
])
def test_early_stopping_and_best_weights(tiny_data, fmap, monkeypatch, patience, aucs, stop_epoch, best_epoch):
    """Scripted validation AUCs: training stops after `patience` epochs without improvement and
    returns with the weights of the best epoch."""
    import optinter.train as train_mod

    data_dir, _ = tiny_data
    cfg = _cfg("train.epochs=6", f"train.patience={patience}", "train.max_steps_per_epoch=2")
    torch.manual_seed(0)
    model = build_model("optinter_f", fmap, cfg.model)
    tr, va, _ = _loaders(data_dir, fmap, model, cfg)
    script = iter(aucs)
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"auc": next(script), "logloss": 0.5, "rows": 1.0})
    snapshots = {}
    res = fit(model, tr, va, cfg, None,
              on_epoch_end=lambda rec: snapshots.__setitem__(rec.epoch, model.mlp.out.weight.detach().clone()))
    assert res.epochs == stop_epoch and res.best_epoch == best_epoch
    assert res.best_valid_auc == aucs[best_epoch - 1]
    torch.testing.assert_close(model.mlp.out.weight.detach(), snapshots[best_epoch], rtol=0, atol=0)
    assert not torch.equal(snapshots[best_epoch], snapshots[stop_epoch])


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("bilevel", [False, True])
def test_interrupted_search_resumes_to_the_same_result(tiny_data, fmap, tmp_path, bilevel):
    data_dir, _ = tiny_data
    cfg = _cfg("train.search_epochs=3", "train.patience=5", f"train.bilevel={bilevel}",
               "train.max_steps_per_epoch=4")

    def run(work, stop_after: int | None):
        torch.manual_seed(cfg.train.seed)
        model = build_search_model("optinter", fmap, cfg.model)
        tr, va, vs = _loaders(data_dir, fmap, model, cfg)

        def hook(rec):
            if stop_after is not None and rec.epoch == stop_after:
                raise _Interrupt

        from optinter import train as train_mod

        orig_fit = train_mod.fit

        def fit_with_hook(*a, **kw):
            return orig_fit(*a, on_epoch_end=hook, **kw)

        import optinter.search as search_mod

        search_mod.fit = fit_with_hook
        try:
            arch, res = search(model, tr, va, cfg, work, bilevel_data=vs, fingerprint="fp")
        finally:
            search_mod.fit = orig_fit
        return model, arch, res

    m_full, a_full, r_full = run(tmp_path / "full", None)
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut", 1)
    m_res, a_res, r_res = run(tmp_path / "cut", None)
    assert r_res.resumed_from == 0 and r_full.resumed_from is None
    assert [r.valid_auc for r in r_res.history] == [r.valid_auc for r in r_full.history]
    torch.testing.assert_close(m_res.block.alpha, m_full.block.alpha, rtol=0, atol=0)
    assert a_res.choices == a_full.choices
    assert a_full.source == ("bilevel" if bilevel else "search")
    assert not torch.equal(m_full.block.alpha.detach(), torch.zeros_like(m_full.block.alpha))


def test_no_retrain_evaluation_modes(tiny_data, fmap):
    data_dir, _ = tiny_data
    cfg = _cfg("train.max_steps_per_epoch=3")
    torch.manual_seed(0)
    model = build_search_model("optinter", fmap, cfg.model)
    _, va, _ = _loaders(data_dir, fmap, model, cfg)
    with torch.no_grad():
        model.block.alpha.normal_()
    dev = torch.device("cpu")
    a = evaluate_without_retrain(model, va, dev, "argmax")
    e = evaluate_without_retrain(model, va, dev, "expected")
    assert a["auc"] != e["auc"]
    assert model.block.eval_weights == "expected"
    # argmax mode = re-train structure with the searched weights: naive pairs contribute nothing
    with torch.no_grad():
        model.block.alpha.zero_()
        model.block.alpha[:, 2] = 1.0  # everything naive
        model.cross.table.weight.normal_()
    a1 = evaluate_without_retrain(model, va, dev, "argmax")
    with torch.no_grad():
        model.cross.table.weight.normal_()
    assert evaluate_without_retrain(model, va, dev, "argmax")["auc"] == pytest.approx(a1["auc"], abs=1e-12)


def test_lr_decay_per_epoch_and_exact_after_resume(tiny_data, fmap, tmp_path, monkeypatch):
    """train.lr_decay multiplies Θ's learning rates (every group, dense and lazy) by gamma after each
    epoch, leaves α's alone, and a run interrupted after epoch 1 resumes with the same rates."""
    import optinter.train as train_mod

    data_dir, _ = tiny_data
    cfg = _cfg("train.epochs=3", "train.patience=5", "train.max_steps_per_epoch=2", "train.lr_decay=0.5")
    made = []
    orig = train_mod.make_optimizers
    monkeypatch.setattr(train_mod, "make_optimizers", lambda *a: made.append(orig(*a)) or made[-1])

    def run(work, stop_after=None):
        torch.manual_seed(0)
        model = build_model("optinter_m", fmap, cfg.model)
        tr, va, _ = _loaders(data_dir, fmap, model, cfg)
        lrs = []

        def hook(rec):
            lrs.append({k: [g["lr"] for g in o.param_groups] for k, o in made[-1].items()})
            if rec.epoch == stop_after:
                raise _Interrupt

        fit(model, tr, va, cfg, work, on_epoch_end=hook)
        return model, lrs

    full, lrs = run(tmp_path / "full")
    assert set(lrs[0]) == {"model", "sparse"}
    for e, rec in enumerate(lrs):
        assert rec["model"] == pytest.approx([cfg.train.lr_o * 0.5**e])
        assert rec["sparse"] == pytest.approx([cfg.train.lr_c * 0.5**e])
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut", stop_after=1)
    resumed, lrs_res = run(tmp_path / "cut")
    assert lrs_res == lrs[1:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_plateau_schedule_goes_back_to_the_best_epoch_and_halves_the_rates(tiny_data, fmap, tmp_path, monkeypatch):
    """lr_schedule=plateau: an epoch that does not improve the (scripted) validation AUC restores the
    best epoch's weights and halves Θ's rates; two in a row stop (patience 2); an interrupted run
    resumes with the same rates and weights."""
    import optinter.train as train_mod

    data_dir, _ = tiny_data
    cfg = _cfg("train.epochs=6", "train.patience=2", "train.max_steps_per_epoch=2", "train.lr_decay=0.5",
               "train.lr_schedule=plateau")
    aucs = [0.60, 0.70, 0.65, 0.72, 0.71, 0.70]
    made = []
    orig = train_mod.make_optimizers
    monkeypatch.setattr(train_mod, "make_optimizers", lambda *a: made.append(orig(*a)) or made[-1])

    def run(work, stop_after=None):
        script = iter(aucs)
        monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"auc": next(script), "logloss": 0.5, "rows": 1.0})
        torch.manual_seed(0)
        model = build_model("optinter_m", fmap, cfg.model)
        tr, va, _ = _loaders(data_dir, fmap, model, cfg)
        lrs, weights = [], {}

        def hook(rec):
            lrs.append(made[-1]["model"].param_groups[0]["lr"])
            weights[rec.epoch] = model.mlp.out.weight.detach().clone()
            if rec.epoch == stop_after:
                raise _Interrupt

        res = fit(model, tr, va, cfg, work, on_epoch_end=hook)
        return model, res, lrs, weights

    model, res, lrs, weights = run(tmp_path / "full")
    # epochs 1, 2 improve; 3 does not (back to 2, rates x0.5); 4 improves; 5 does not (back to 4,
    # x0.25); 6 does not either: two in a row, stop
    assert res.epochs == 6 and res.best_epoch == 4
    lr0 = cfg.train.lr_o
    assert lrs == pytest.approx([lr0, lr0, lr0, lr0 / 2, lr0 / 2, lr0 / 4])
    # after epoch 3 the weights went back to epoch 2's (the hook sees them after the restore)
    torch.testing.assert_close(weights[3], weights[2], rtol=0, atol=0)
    torch.testing.assert_close(model.mlp.out.weight.detach(), weights[4], rtol=0, atol=0)
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut", stop_after=3)
    # resumed: the script restarts, so skip the evaluated epochs
    aucs[:] = aucs[3:]
    resumed, res2, lrs2, _ = run(tmp_path / "cut")
    assert lrs2 == pytest.approx(lrs[3:]) and res2.best_epoch == 4
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
