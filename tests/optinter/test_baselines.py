"""Baseline models of Table III: shapes, gradients, parameter counts, numerical checks, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from optinter.config import ModelConfig
from optinter.layers.interactions import all_field_pairs
from optinter.models.base import Batch, CTRModel
from optinter.registry import available_models, build_model
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo

BASELINES = ["lr", "poly2", "fm", "fwfm", "fmfm", "fnn", "ipnn", "opnn", "deepfm", "pin", "wide_deep"]
CAT_VOCAB = [4, 5, 3]
PAIR_VOCAB = {"a|b": 6, "a|c": 7, "b|c": 8}
N_CONT = 2
D = 3
MLP = (8, 4)
SUBNET = (6, 2)


def tiny_map() -> FeatureMap:
    """Continuous fields listed between categoricals on purpose: models must not care."""
    fields = [
        FieldSpec("a", "categorical", "a", "a", vocab_size=CAT_VOCAB[0]),
        FieldSpec("n0", "continuous", "n0", "n0", min=0.0, max=1.0),
        FieldSpec("b", "categorical", "b", "b", vocab_size=CAT_VOCAB[1]),
        FieldSpec("c", "categorical", "c", "c", vocab_size=CAT_VOCAB[2]),
        FieldSpec("n1", "continuous", "n1", "n1", min=0.0, max=1.0),
    ]
    pairs = [PairSpec(k, tuple(k.split("|")), k, v, 1) for k, v in PAIR_VOCAB.items()]
    return FeatureMap("tiny", "label", fields, pairs, {"train": SplitInfo(10, 3, "train")})


def tiny_cfg(**kw: object) -> ModelConfig:
    cfg = ModelConfig(embed_dim=D, mlp_dims=MLP, pin_subnet=SUBNET, layer_norm=True)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def tiny_batch(fmap: FeatureMap, n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(1, f.vocab_size, (n,), generator=g) for f in fmap.categorical], 1)
    cont = torch.rand(n, len(fmap.continuous), generator=g)
    pairs = torch.stack([torch.randint(1, p.vocab_size, (n,), generator=g) for p in fmap.pairs], 1)
    label = torch.randint(0, 2, (n,), generator=g).float()
    return Batch(cat, cont, pairs, label)


def mlp_params(in_dim: int, hidden: tuple[int, ...] = MLP, ln: bool = True) -> int:
    total, d = 0, in_dim
    for h in hidden:
        total += d * h + h + (2 * h if ln else 0)
        d = h
    return total + d + 1


def expected_params(name: str) -> int:
    nf = len(CAT_VOCAB) + N_CONT
    npairs = nf * (nf - 1) // 2
    lin = sum(CAT_VOCAB) + N_CONT + 1
    emb = (sum(CAT_VOCAB) + N_CONT) * D
    cross = sum(PAIR_VOCAB.values())
    sub_in, sub, sub_ln = 3 * D, 0, 0
    for h in SUBNET:
        sub += sub_in * h + h  # per pair
        sub_ln += 2 * h  # LayerNorm gain and shift shared by the pairs
        sub_in = h
    return {
        "lr": lin,
        "poly2": lin + cross,
        "fm": lin + emb,
        "fwfm": lin + emb + npairs,
        "fmfm": lin + emb + npairs * D * D,
        "fnn": emb + mlp_params(nf * D),
        "ipnn": emb + mlp_params(nf * D + npairs),
        "opnn": emb + npairs * D * D + mlp_params(nf * D + npairs),
        "deepfm": lin + emb + mlp_params(nf * D),
        "pin": emb + npairs * sub + sub_ln + mlp_params(npairs * SUBNET[-1]),
        "wide_deep": lin + cross + emb + mlp_params(nf * D),
    }[name]


def test_every_baseline_is_registered() -> None:
    assert set(BASELINES) <= set(available_models())


@pytest.mark.parametrize("name", BASELINES)
def test_shape_finite_and_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    fmap = tiny_map()
    model = build_model(name, fmap, tiny_cfg())
    batch = tiny_batch(fmap)
    logits = model(batch)
    assert logits.shape == (len(batch),)
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient on {pname}"


@pytest.mark.parametrize("name", BASELINES)
def test_param_count_matches_hand_formula(name: str) -> None:
    model = build_model(name, tiny_map(), tiny_cfg())
    assert model.num_params() == expected_params(name)


@pytest.mark.parametrize("name", BASELINES)
def test_param_groups_partition_parameters(name: str) -> None:
    model = build_model(name, tiny_map(), tiny_cfg())
    groups = model.named_param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    memorized = name in ("poly2", "wide_deep")
    assert model.uses_pairs == memorized
    assert ("cross" in groups) == memorized
    assert "arch" not in groups
    if memorized:
        assert sum(p.numel() for p in groups["cross"]) == sum(PAIR_VOCAB.values())
        assert model.required_pairs() == list(PAIR_VOCAB)


def test_poly2_and_wide_deep_need_pairs() -> None:
    fmap = tiny_map()
    fmap.pairs = []
    for name in ("poly2", "wide_deep"):
        with pytest.raises(ValueError, match="pairs"):
            build_model(name, fmap, tiny_cfg())


def _set_random(model: CTRModel, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _numpy_parts(model: CTRModel, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """First-order logit and field embeddings (categoricals then continuous) recomputed in numpy."""
    fmap = model.feature_map
    cat, cont = batch.cat.numpy(), batch.cont.numpy()
    offsets = np.concatenate([[0], np.cumsum(CAT_VOCAB)[:-1]])
    lin = getattr(model, "linear", None)
    first = np.zeros(len(batch))
    if lin is not None:
        w = lin.cat.table.weight.detach().numpy()[:, 0]
        first = w[cat + offsets].sum(1) + cont @ lin.cont.detach().numpy() + lin.bias.item()
    emb = getattr(model, "embedding", None)
    e = np.zeros((len(batch), 0, D))
    if emb is not None:
        table = emb.cat.table.weight.detach().numpy()
        e_cat = table[cat + offsets]
        e_cont = cont[:, :, None] * emb.cont.detach().numpy()[None]
        e = np.concatenate([e_cat, e_cont], axis=1)
    assert e.shape[1] in (0, len(fmap.fields))
    return first, e


@pytest.mark.parametrize("name", ["lr", "poly2", "fm", "fwfm", "fmfm", "deepfm", "wide_deep"])
def test_shallow_logits_against_numpy(name: str) -> None:
    fmap = tiny_map()
    model = build_model(name, fmap, tiny_cfg()).double()
    _set_random(model)
    model.eval()
    batch = tiny_batch(fmap, n=9, seed=3)
    batch = Batch(batch.cat, batch.cont.double(), batch.pairs, batch.label)
    first, e = _numpy_parts(model, batch)
    expected = first.copy()
    pairs = all_field_pairs(len(fmap.fields))
    if name in ("poly2", "wide_deep"):
        w = model.cross.table.weight.detach().numpy()[:, 0]
        offs = np.concatenate([[0], np.cumsum(list(PAIR_VOCAB.values()))[:-1]])
        expected += w[batch.pairs.numpy() + offs].sum(1)
    for k, (i, j) in enumerate(pairs):
        if name in ("fm", "deepfm"):
            expected += (e[:, i] * e[:, j]).sum(1)
        elif name == "fwfm":
            expected += model.product.weight[k].item() * (e[:, i] * e[:, j]).sum(1)
        elif name == "fmfm":
            W = model.product.weight[k].detach().numpy()
            expected += np.einsum("bd,de,be->b", e[:, i], W, e[:, j])
    if name in ("deepfm", "wide_deep"):
        expected += model.mlp(torch.from_numpy(e.reshape(len(batch), -1))).detach().numpy()
    np.testing.assert_allclose(model(batch).detach().numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["fnn", "ipnn", "opnn", "pin"])
def test_deep_models_feed_embeddings_and_products_to_mlp(name: str) -> None:
    fmap = tiny_map()
    model = build_model(name, fmap, tiny_cfg()).double()
    _set_random(model)
    model.eval()
    batch = tiny_batch(fmap, n=7, seed=5)
    batch = Batch(batch.cat, batch.cont.double(), batch.pairs, batch.label)
    seen: list[torch.Tensor] = []
    model.mlp.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    out = model(batch)
    x = seen[0].numpy()
    _, e = _numpy_parts(model, batch)
    n = len(batch)
    parts = [e.reshape(n, -1)] if name != "pin" else []  # PIN's MLP sees only the sub-networks
    pairs = all_field_pairs(len(fmap.fields))
    if name == "ipnn":
        parts.append(np.stack([(e[:, i] * e[:, j]).sum(1) for i, j in pairs], 1))
    elif name == "opnn":
        K = model.product.weight.detach().numpy()
        parts.append(np.stack([np.einsum("bd,bf,df->b", e[:, i], e[:, j], K[k]) for k, (i, j) in enumerate(pairs)], 1))
    elif name == "pin":
        sub = model.product
        h = np.stack([np.concatenate([e[:, i], e[:, j], e[:, i] * e[:, j]], 1) for i, j in pairs], 1)
        for li in range(len(SUBNET)):
            w, b = sub.weights[li].detach().numpy(), sub.biases[li].detach().numpy()
            h = np.maximum(np.stack([h[:, k] @ w[k] + b[k] for k in range(len(pairs))], 1), 0)  # B × P × H
            mu, var = h.mean((1, 2), keepdims=True), h.var((1, 2), keepdims=True)  # per row over P × H
            h = (h - mu) / np.sqrt(var + 1e-5) * sub.gains[li].detach().numpy() + sub.shifts[li].detach().numpy()
        parts.append(h.reshape(n, -1))
    np.testing.assert_allclose(x, np.concatenate(parts, 1), rtol=1e-8, atol=1e-10)
    assert out.shape == (n,)


def _planted_data(n: int, seed: int) -> tuple[Batch, np.ndarray]:
    """Three categorical fields (10 values each); the click logit is a pure interaction of a and b
    (2.5 · s_a · s_b with balanced random signs s), plus a weak main effect of c: LR cannot see a×b."""
    rng = np.random.default_rng(seed)
    # balanced signs: each value of a (of b) has no main effect, only the product matters
    sign = np.zeros((2, 12))
    for k, r in enumerate(np.random.default_rng(99).spawn(2)):
        sign[k, 2:] = r.permutation([-1.0, 1.0] * 5)
    main = np.random.default_rng(98).normal(0, 0.3, size=12)
    ids = rng.integers(2, 12, size=(n, 3))
    logit = 2.5 * sign[0, ids[:, 0]] * sign[1, ids[:, 1]] + main[ids[:, 2]]
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.float32)
    batch = Batch(torch.from_numpy(ids), torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.long), torch.from_numpy(y))
    return batch, p


def _fit(model: CTRModel, data: Batch, epochs: int, lr: float, bs: int = 256) -> CTRModel:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    n = len(data)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            b = Batch(data.cat[idx], data.cont[idx], data.pairs[idx], data.label[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b), b.label)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_fm_beats_lr_on_planted_interaction() -> None:
    torch.manual_seed(0)
    fields = [FieldSpec(c, "categorical", c, c, vocab_size=12) for c in "abc"]
    fmap = FeatureMap("planted", "label", fields, [], {"train": SplitInfo(1, 0, "train")})
    train, _ = _planted_data(6000, seed=1)
    test, p_true = _planted_data(3000, seed=2)
    y = test.label.numpy()
    auc = {}
    for name in ("lr", "fm"):
        model = _fit(build_model(name, fmap, ModelConfig(embed_dim=4)), train, epochs=6, lr=0.05)
        with torch.no_grad():
            auc[name] = roc_auc_score(y, model(test).numpy())
    bayes = roc_auc_score(y, p_true)
    # LR sees only c's weak main effect; FM recovers the rank-1 a×b interaction.
    assert auc["fm"] > auc["lr"] + 0.15, auc
    assert auc["fm"] > bayes - 0.02, (auc, bayes)
    assert math.isfinite(auc["lr"])
