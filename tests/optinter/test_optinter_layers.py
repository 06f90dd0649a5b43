"""Layers and models of OptInter: shapes, seeded numerical checks against hand computations,
gradients reaching α in search and no α at all in re-train."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optinter.architecture import Architecture
from optinter.config import ModelConfig
from optinter.layers.combination import CombinationBlock, gumbel_noise
from optinter.layers.cross import FactorizationTable, HadamardPairs, MemorizedEmbedding
from optinter.models.base import Batch
from optinter.registry import build_model, build_search_model
from preprocess.feature_map import FeatureMap


def _cfg(**kw) -> ModelConfig:
    base = dict(embed_dim=6, cross_embed_dim=4, mlp_dims=(8,), layer_norm=True)
    base.update(kw)
    return ModelConfig(**base)


def _batch(fmap: FeatureMap, b: int = 7, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size, (b,), generator=g) for f in fmap.categorical], 1)
    pairs = torch.stack([torch.randint(0, p.vocab_size, (b,), generator=g) for p in fmap.pairs], 1)
    cont = torch.rand(b, len(fmap.continuous), generator=g)
    return Batch(cat, cont, pairs, (torch.rand(b, generator=g) > 0.5).float())


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def test_hadamard_pairs_matches_hand_computation():
    emb = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    out = HadamardPairs([(0, 1), (2, 3), (1, 3)])(emb)
    assert out.shape == (3, 3, 5)
    e = emb.numpy()
    want = np.stack([e[:, 0] * e[:, 1], e[:, 2] * e[:, 3], e[:, 1] * e[:, 3]], axis=1)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)


def test_memorized_embedding_offsets_per_pair():
    m = MemorizedEmbedding([3, 5], dim=2)
    ids = torch.tensor([[2, 4]])
    out = m(ids)
    w = m.table.weight.detach()
    torch.testing.assert_close(out[0, 0], w[2])
    torch.testing.assert_close(out[0, 1], w[3 + 4])
    assert sum(p.numel() for p in m.parameters()) == (3 + 5) * 2


def test_factorization_table_is_hadamard_of_its_own_table():
    t = FactorizationTable([4, 6], 3, [(0, 1)])
    cat = torch.tensor([[1, 5], [3, 2]])
    w = t.table.table.weight.detach()
    want = w[cat[:, 0]] * w[4 + cat[:, 1]]
    torch.testing.assert_close(t(cat)[:, 0], want)


def test_combination_block_eval_expected_weights_by_hand():
    blk = CombinationBlock(num_pairs=2, mem_dim=2, fac_dim=3, relaxation="gumbel", tau=0.5, seed=0)
    with torch.no_grad():
        blk.alpha.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.3, 2.0]]))
    blk.eval()
    e_m = torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(2))
    e_f = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    out = blk(e_m, e_f)
    assert out.shape == (4, 2, 3)  # width max(2, 3), memorized zero-padded
    a = blk.alpha.detach().numpy() / 0.5
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    em = np.concatenate([e_m.numpy(), np.zeros((4, 2, 1), np.float32)], axis=2)
    want = em * p[None, :, 0, None] + e_f.numpy() * p[None, :, 1, None]
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    blk.set_eval_weights("argmax")
    out = blk(e_m, e_f)
    np.testing.assert_allclose(out[:, 0].detach().numpy(), em[:, 0], rtol=1e-6)  # pair 0 → memorize
    np.testing.assert_allclose(out[:, 1].detach().numpy(), 0.0)  # pair 1 → naive


def test_combination_block_gumbel_training_weights_by_hand():
    blk = CombinationBlock(num_pairs=3, mem_dim=2, fac_dim=2, relaxation="gumbel", tau=0.7, seed=123)
    with torch.no_grad():
        blk.alpha.normal_(generator=torch.Generator().manual_seed(5))
    g = gumbel_noise((3, 3), torch.Generator().manual_seed(123))
    u = torch.rand((3, 3), generator=torch.Generator().manual_seed(123)).double()
    np.testing.assert_allclose(g.numpy(), (-np.log(-np.log(u.numpy()))), rtol=1e-5)
    blk.train()
    w = blk.weights().detach().numpy()
    z = (blk.alpha.detach().numpy() + g.numpy()) / 0.7
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(w, want, rtol=1e-5)
    # the next step draws fresh noise; restoring the state dict replays it
    state = {k: v for k, v in blk.state_dict().items()}
    w2 = blk.weights().detach()
    assert not torch.allclose(torch.from_numpy(w), w2)
    blk.load_state_dict(state)
    torch.testing.assert_close(blk.weights().detach(), w2)


def test_combination_block_softmax_relaxation_has_no_noise():
    blk = CombinationBlock(2, 3, 3, relaxation="softmax", tau=2.0)
    blk.train()
    torch.testing.assert_close(blk.weights(), blk.weights())
    torch.testing.assert_close(blk.weights(), torch.softmax(blk.alpha / 2.0, -1))
    with pytest.raises(ValueError, match="temperature"):
        blk.set_temperature(0.0)
    with pytest.raises(ValueError, match="relaxation"):
        CombinationBlock(2, 3, 3, relaxation="hard")


@pytest.mark.parametrize("source", ["orig", "table"])
def test_search_model_shapes_and_alpha_gradients(fmap, source):
    torch.manual_seed(0)
    cfg = _cfg(factorize_source=source)
    model = build_search_model("optinter", fmap, cfg)
    assert model.is_search_model and model.uses_pairs
    b = _batch(fmap)
    logits = model(b)
    assert logits.shape == (len(b),)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, b.label).backward()
    alpha = model.arch_parameters()[0]
    assert alpha.shape == (fmap.num_pairs, 3)
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    groups = model.named_param_groups()
    assert [id(p) for p in groups["arch"]] == [id(alpha)]
    assert all(id(p) != id(alpha) for g in ("orig", "cross") for p in groups[g])
    n_group = sum(p.numel() for g in groups.values() for p in g)
    assert n_group == model.num_params()
    # MLP input: F·s1 + P·max(s2, fac_dim)
    fac_dim = cfg.embed_dim if source == "orig" else cfg.cross_embed_dim
    width = max(cfg.cross_embed_dim, fac_dim)
    assert model.mlp.body[0].in_features == fmap.num_fields * cfg.embed_dim + fmap.num_pairs * width


def _mlp_params(d_in: int, hidden: tuple[int, ...], ln: bool) -> int:
    n, d = 0, d_in
    for h in hidden:
        n += d * h + h + (2 * h if ln else 0)
        d = h
    return n + d + 1


@pytest.mark.parametrize("source", ["orig", "table"])
def test_retrain_model_allocates_only_memorized_tables(fmap, source):
    cfg = _cfg(factorize_source=source)
    names = [p.name for p in fmap.pairs]
    choices = (["memorize", "factorize", "naive"] * fmap.num_pairs)[: fmap.num_pairs]
    arch = Architecture(pairs=names, choices=choices)
    model = build_model("optinter", fmap, cfg, arch=arch)
    assert not model.is_search_model and model.arch_parameters() == []
    assert not any("alpha" in n for n, _ in model.named_parameters())
    mem = arch.indices("memorize")
    fac = arch.indices("factorize")
    assert model.required_pairs() == [names[k] for k in mem]
    s1, s2 = cfg.embed_dim, cfg.cross_embed_dim
    fac_dim = s1 if source == "orig" else s2
    cat_rows = sum(f.vocab_size for f in fmap.categorical)
    expected = cat_rows * s1 + len(fmap.continuous) * s1
    expected += sum(fmap.pairs[k].vocab_size for k in mem) * s2
    if source == "table":
        expected += cat_rows * s2
    d_in = fmap.num_fields * s1 + len(mem) * s2 + len(fac) * fac_dim
    expected += _mlp_params(d_in, cfg.mlp_dims, cfg.layer_norm)
    assert model.num_params() == expected
    b = _batch(fmap)
    b = Batch(b.cat, b.cont, b.pairs[:, mem], b.label)  # the loader gives only the memorized columns
    out = model(b)
    assert out.shape == (len(b),)
    out.sum().backward()


def test_optinter_m_and_f_param_counts(fmap):
    cfg = _cfg()
    m = build_model("optinter_m", fmap, cfg)
    f = build_model("optinter_f", fmap, cfg)
    assert m.required_pairs() == [p.name for p in fmap.pairs]
    assert f.required_pairs() == [] and not f.uses_pairs
    assert m.extra_metrics() == {"n_memorize": fmap.num_pairs, "n_factorize": 0, "n_naive": 0}
    assert f.extra_metrics() == {"n_memorize": 0, "n_factorize": fmap.num_pairs, "n_naive": 0}
    diff = sum(p.vocab_size for p in fmap.pairs) * cfg.cross_embed_dim
    diff += (fmap.num_pairs * cfg.cross_embed_dim - fmap.num_pairs * cfg.embed_dim) * cfg.mlp_dims[0]
    assert m.num_params() - f.num_params() == diff


def test_search_then_retrain_same_batch_output_of_argmax_matches_structure(fmap):
    """The searched model in argmax mode uses exactly the pairs the derived architecture keeps."""
    torch.manual_seed(0)
    model = build_search_model("optinter", fmap, _cfg())
    with torch.no_grad():
        model.block.alpha.copy_(torch.randn(fmap.num_pairs, 3, generator=torch.Generator().manual_seed(9)))
    arch = model.derive_architecture()
    np.testing.assert_array_equal(
        [["memorize", "factorize", "naive"].index(c) for c in arch.choices], model.block.alpha.argmax(1).numpy()
    )
    np.testing.assert_allclose(np.array(arch.probs), torch.softmax(model.block.alpha, 1).detach().numpy(), rtol=1e-6)


def test_build_errors(fmap):
    with pytest.raises(ValueError, match="needs an architecture"):
        build_model("optinter", fmap, _cfg())
    bad = Architecture(pairs=["c0|c1", "zz|yy"], choices=["memorize", "naive"])
    with pytest.raises(ValueError, match="does not match the feature map"):
        build_model("optinter", fmap, _cfg(), arch=bad)
    with pytest.raises(ValueError, match="takes no architecture"):
        build_model("optinter_m", fmap, _cfg(), arch=Architecture.uniform(fmap, "memorize"))
    with pytest.raises(ValueError, match="no search variant"):
        build_search_model("optinter_m", fmap, _cfg())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", fmap, _cfg())


@pytest.mark.parametrize("fac_dim,mem_dim", [(4, 2), (2, 4), (3, 3)])
@pytest.mark.parametrize("pairs_per_chunk", [1, 2, None])
def test_fused_factorize_combine_matches_unfused_values_and_gradients(fac_dim, mem_dim, pairs_per_chunk, monkeypatch):
    """forward_factorized == forward(e_m, HadamardPairs(emb)) in values and in the gradients of
    emb, e_m and α (float64, eval weights so both paths use the same p), plus torch's gradcheck;
    with 1 or 2 pairs a chunk (5 pairs: an uneven last chunk) and with one chunk."""
    from optinter.layers import cross
    from optinter.layers.combination import _FactorizeCombine

    if pairs_per_chunk is not None:
        monkeypatch.setattr(cross, "PAIR_CHUNK_FLOATS", pairs_per_chunk * 6 * max(fac_dim, mem_dim))
    torch.manual_seed(0)
    pairs = [(0, 1), (0, 2), (2, 1), (3, 0), (1, 1)]  # a field may appear on both sides
    had = HadamardPairs(pairs)
    block = CombinationBlock(len(pairs), mem_dim, fac_dim, "softmax", tau=0.7).double().eval()
    with torch.no_grad():
        block.alpha.copy_(torch.randn(len(pairs), 3, dtype=torch.float64))
    emb = torch.randn(6, 4, fac_dim, dtype=torch.float64, requires_grad=True)
    e_m = torch.randn(6, len(pairs), mem_dim, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(6, len(pairs), max(fac_dim, mem_dim), dtype=torch.float64)

    prefix = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.cat([torch.randn(6, 3, dtype=torch.float64), grad_out.flatten(1)], 1)
    results = []
    for fused in (True, False):
        if fused:
            out = block.forward_factorized(e_m, emb, had.left, had.right, prefix=prefix)
        else:
            out = torch.cat([prefix, block(e_m, had(emb)).flatten(1)], 1)
        grads = torch.autograd.grad((out * grad_out).sum(), [emb, e_m, block.alpha, prefix])
        results.append((out.detach(), grads))
    (out_f, g_f), (out_u, g_u) = results
    torch.testing.assert_close(out_f, out_u)
    for a, b in zip(g_f, g_u):
        torch.testing.assert_close(a, b)

    w = torch.softmax(block.alpha.detach() / 0.7, dim=-1).requires_grad_(True)
    for pre in (None, prefix):
        assert torch.autograd.gradcheck(
            lambda x, m, p, *q: _FactorizeCombine.apply(x, m, p, had.left, had.right, q[0] if q else None),
            (emb, e_m, w) + ((pre,) if pre is not None else ()),
        )


@pytest.mark.parametrize("pairs_per_chunk", [1, 2, None])
def test_hadamard_pairs_chunked_gradients(pairs_per_chunk, monkeypatch):
    """HadamardPairs' chunked op: values and gradients equal the plain gather-and-multiply (and
    gradcheck), for chunks of 1 and 2 pairs (uneven last chunk) and one chunk."""
    from optinter.layers import cross

    if pairs_per_chunk is not None:
        monkeypatch.setattr(cross, "PAIR_CHUNK_FLOATS", pairs_per_chunk * 5 * 3)
    pairs = [(0, 1), (0, 2), (2, 1), (3, 0), (1, 1)]
    had = HadamardPairs(pairs)
    emb = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, len(pairs), 3, dtype=torch.float64)
    out = had(emb)
    ref = torch.stack([emb[:, i] * emb[:, j] for i, j in pairs], 1)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad((out * g).sum(), emb)[0], torch.autograd.grad((ref * g).sum(), emb)[0])
    assert torch.autograd.gradcheck(had, (emb,))
