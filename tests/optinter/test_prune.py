"""Pruning the searched architecture on the validation split (optinter.prune): the ablation's
numbers against a brute-force recomputation (each pair forced naive through α, a full forward),
the keep rule, and the search stage's wiring (architecture.json, metrics, ``--paper`` off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optinter.architecture import Architecture
from optinter.config import ModelConfig, RunConfig, apply_overrides, default_config, paper_config
from optinter.models.base import Batch
from optinter.prune import PairAblation, ablate_pairs, prune_architecture, prune_on_valid
from optinter.registry import build_search_model
from optinter.stages import load_feature_map, run_search
from preprocess.feature_map import FeatureMap


def _batches(fmap: FeatureMap, n: int, b: int, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        cat = torch.stack([torch.randint(0, f.vocab_size, (b,), generator=g) for f in fmap.categorical], 1)
        pairs = torch.stack([torch.randint(0, p.vocab_size, (b,), generator=g) for p in fmap.pairs], 1)
        cont = torch.rand(b, len(fmap.continuous), generator=g)
        out.append(Batch(cat, cont, pairs, (torch.rand(b, generator=g) > 0.5).float()))
    return out


def _model(fmap: FeatureMap, source: str, first_order: bool):
    torch.manual_seed(3)
    cfg = ModelConfig(embed_dim=6, cross_embed_dim=4, mlp_dims=(8, 5), layer_norm=True, dropout=0.2,
                      factorize_source=source, first_order=first_order)
    model = build_search_model("optinter", fmap, cfg)
    with torch.no_grad():  # a spread of argmax choices, and a non-zero output layer
        model.block.alpha.copy_(torch.randn(model.block.alpha.shape, generator=torch.Generator().manual_seed(4)))
        model.mlp.out.weight.normal_()
    return model


def _brute_force(model, batches: list[Batch], k: int) -> np.ndarray:
    """Per-row loss(pair k naive) − loss(as is), by forcing α and running the whole model."""
    def losses() -> torch.Tensor:
        model.eval()
        model.set_eval_weights("argmax")
        with torch.no_grad():
            return torch.cat([F.binary_cross_entropy_with_logits(model(b), b.label, reduction="none") for b in batches])

    alpha = model.block.alpha.detach().clone()
    base = losses()
    model.force_choice([k], "naive")
    ablated = losses()
    with torch.no_grad():
        model.block.alpha.copy_(alpha)
    model.set_eval_weights("expected")
    return (ablated - base).double().numpy()


@pytest.mark.parametrize("source", ["orig", "table"])
@pytest.mark.parametrize("first_order", [False, True])
def test_ablation_matches_brute_force(tiny_data, source, first_order):
    fmap = FeatureMap.load(tiny_data[0])
    model = _model(fmap, source, first_order)
    batches = _batches(fmap, 3, 50)
    model.set_eval_weights("argmax")
    cand = list(range(fmap.num_pairs))
    ab = ablate_pairs(model, batches, torch.device("cpu"), cand)
    model.set_eval_weights("expected")
    assert ab.rows == 150
    for j, k in enumerate(cand):
        d = _brute_force(model, batches, k)
        assert ab.delta[j] == pytest.approx(d.mean(), abs=1e-6)
        assert ab.se[j] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=1e-3, abs=1e-7)
        if model.block.alpha[k].argmax() == 2:  # already naive: nothing to remove
            assert ab.delta[j] == 0 and ab.se[j] == 0


def test_ablation_row_cap_uses_the_first_rows(tiny_data):
    fmap = FeatureMap.load(tiny_data[0])
    model = _model(fmap, "orig", True)
    batches = _batches(fmap, 3, 50)
    model.set_eval_weights("argmax")
    capped = ablate_pairs(model, batches, torch.device("cpu"), [0, 1], max_rows=70)
    head = [batches[0], Batch(*(getattr(batches[1], f)[:20] for f in ("cat", "cont", "pairs", "label")))]
    exact = ablate_pairs(model, head, torch.device("cpu"), [0, 1])
    assert capped.rows == 70
    np.testing.assert_allclose(capped.delta, exact.delta, atol=1e-7)
    np.testing.assert_allclose(capped.se, exact.se, rtol=1e-6)


def test_keep_rule_and_record():
    arch = Architecture(pairs=["a|b", "a|c", "b|c", "c|d"], choices=["memorize", "factorize", "memorize", "naive"],
                        probs=[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    ab = PairAblation(pairs=["a|b", "a|c", "b|c"], delta=np.array([0.03, 0.0001, -0.001]),
                      se=np.array([0.002, 0.0001, 0.0005]), rows=1000, base_logloss=0.4)
    out, pruned = prune_architecture(arch, ab, z_min=2.0)
    assert out.choices == ["memorize", "naive", "naive", "naive"]  # z = 15 kept; 1.0 and −2 pruned
    assert pruned == ["a|c", "b|c"]
    assert arch.choices[1] == "factorize"  # the input is not changed
    assert out.probs == arch.probs
    rec = out.meta["prune"]
    assert rec["z_min"] == 2.0 and rec["rows"] == 1000 and rec["candidates"] == 3
    assert rec["pairs"]["a|b"] == {"searched": "memorize", "delta": 0.03, "se": 0.002, "z": pytest.approx(15.0),
                                   "kept": True}
    assert Architecture.from_dict(out.to_dict()).meta["prune"]["pruned"] == ["a|c", "b|c"]
    # a pair whose removal changes nothing (SE = 0, Δ = 0) is pruned; Δ > 0 with SE = 0 is kept
    ab0 = PairAblation(pairs=["a|b", "a|c"], delta=np.array([0.0, 1e-3]), se=np.array([0.0, 0.0]), rows=10,
                       base_logloss=0.4)
    out0, _ = prune_architecture(arch, ab0, z_min=2.0)
    assert out0.choices[:2] == ["naive", "factorize"]


def test_prune_on_valid_sets_alpha_so_the_model_scores_the_pruned_architecture(tiny_data):
    fmap = FeatureMap.load(tiny_data[0])
    model = _model(fmap, "orig", True)
    arch = model.derive_architecture()
    pruned = prune_on_valid(model, arch, _batches(fmap, 2, 64), torch.device("cpu"), z_min=50.0, max_rows=0)
    assert all(c == "naive" for c in pruned.choices)  # nothing clears z = 50 on random labels
    assert model.derive_architecture().choices == pruned.choices
    assert model.block.eval_weights == "expected"


def test_search_stage_prunes_by_default_and_not_with_paper(tiny_data, tmp_path):
    data, truth = tiny_data
    fmap = load_feature_map(data)
    cpu = ["train.device=cpu", "train.checkpoint=false"]
    cfg = apply_overrides(default_config(fmap, "optinter"), cpu)
    assert cfg.train.search_prune == "valid"
    m = run_search(data, tmp_path / "s", cfg)
    arch = Architecture.load(tmp_path / "s" / "architecture.json")
    rec = arch.meta["prune"]
    assert m["search_prune_candidates"] == rec["candidates"] == len(rec["pairs"])
    assert m["search_pruned"] == len(rec["pruned"])
    for name, r in rec["pairs"].items():
        assert arch.choice(name) == (r["searched"] if r["kept"] else "naive")
    assert m["n_memorize"] + m["n_factorize"] == rec["candidates"] - len(rec["pruned"])
    assert paper_config("criteo").train.search_prune == "none" == RunConfig().train.search_prune
    m2 = run_search(data, tmp_path / "p", apply_overrides(cfg, ["train.search_prune=none"]))
    assert "prune" not in Architecture.load(tmp_path / "p" / "architecture.json").meta
    assert "search_pruned" not in m2


@pytest.mark.parametrize("bad", ["train.search_prune=test", "train.prune_z=nan", "train.prune_rows=-1"])
def test_bad_prune_settings(bad):
    with pytest.raises(ValueError, match=bad.split("=")[0]):
        apply_overrides(RunConfig(), [bad]).validate()
