"""Interaction layers against explicit per-pair numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optinter.layers.interactions import (
    BilinearProduct,
    FieldWeightedProduct,
    InnerProduct,
    PairSubNetwork,
    all_field_pairs,
    embedding_order,
    feature_map_pair_positions,
    fm_second_order,
    pair_names,
)
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo

B, F, D = 5, 4, 3


@pytest.fixture
def emb() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(B, F, D, generator=g, dtype=torch.float64)


def test_all_field_pairs_order() -> None:
    pairs = all_field_pairs(4)
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(all_field_pairs(39)) == 39 * 38 // 2


def test_fm_second_order_equals_pairwise_sum(emb: torch.Tensor) -> None:
    e = emb.numpy()
    expected = np.zeros(B)
    for i in range(F):
        for j in range(i + 1, F):
            expected += (e[:, i] * e[:, j]).sum(-1)
    np.testing.assert_allclose(fm_second_order(emb).numpy(), expected, rtol=1e-10)


def test_inner_product_matches_dot_products(emb: torch.Tensor) -> None:
    pairs = [(0, 2), (1, 3), (3, 0)]
    out = InnerProduct(pairs)(emb).numpy()
    e = emb.numpy()
    assert out.shape == (B, len(pairs))
    for k, (i, j) in enumerate(pairs):
        np.testing.assert_allclose(out[:, k], np.einsum("bd,bd->b", e[:, i], e[:, j]), rtol=1e-10)


def test_field_weighted_product_matches_loop(emb: torch.Tensor) -> None:
    pairs = all_field_pairs(F)
    layer = FieldWeightedProduct(pairs).double()
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-1.0, 2.0, len(pairs), dtype=torch.float64))
    out = layer(emb).detach().numpy()
    e, w = emb.numpy(), layer.weight.detach().numpy()
    for k, (i, j) in enumerate(pairs):
        np.testing.assert_allclose(out[:, k], w[k] * (e[:, i] * e[:, j]).sum(-1), rtol=1e-10)


def test_field_weighted_starts_as_fm(emb: torch.Tensor) -> None:
    layer = FieldWeightedProduct(all_field_pairs(F)).double()
    torch.testing.assert_close(layer(emb).sum(-1), fm_second_order(emb))


@pytest.mark.parametrize("init", ["identity", "xavier"])
def test_bilinear_product_matches_outer_product_kernel(emb: torch.Tensor, init: str) -> None:
    pairs = all_field_pairs(F)
    layer = BilinearProduct(pairs, D, init=init).double()
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    out = layer(emb).detach().numpy()
    e, w = emb.numpy(), layer.weight.detach().numpy()
    for k, (i, j) in enumerate(pairs):
        for b in range(B):
            # FmFM form e_i W e_j^T, and OPNN form sum(outer(e_i, e_j) * K): the same number
            np.testing.assert_allclose(out[b, k], e[b, i] @ w[k] @ e[b, j], rtol=1e-10)
            np.testing.assert_allclose(out[b, k], (np.outer(e[b, i], e[b, j]) * w[k]).sum(), rtol=1e-10)


def test_bilinear_identity_init_is_inner_product(emb: torch.Tensor) -> None:
    pairs = all_field_pairs(F)
    torch.testing.assert_close(BilinearProduct(pairs, D).double()(emb), InnerProduct(pairs)(emb))


@pytest.mark.parametrize("layer_norm", [True, False])
def test_pair_subnetwork_matches_per_pair_loop(emb: torch.Tensor, layer_norm: bool) -> None:
    torch.manual_seed(0)
    pairs = all_field_pairs(F)
    layer = PairSubNetwork(pairs, D, (6, 2), layer_norm=layer_norm).double()
    with torch.no_grad():  # non-trivial LN gains / biases
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = layer(emb).detach().numpy()
    assert out.shape == (B, len(pairs), 2)
    e = emb.numpy()
    h = [np.concatenate([e[:, i], e[:, j], e[:, i] * e[:, j]], axis=1) for i, j in pairs]  # per pair B × 3D
    for li in range(2):
        w, b = layer.weights[li].detach().numpy(), layer.biases[li].detach().numpy()
        h = [np.maximum(h[k] @ w[k] + b[k], 0.0) for k in range(len(pairs))]  # pair k's own weights
        if layer_norm:  # each row normalized over all pairs' units of the layer
            stacked = np.stack(h, axis=1)
            mu, var = stacked.mean((1, 2), keepdims=True), stacked.var((1, 2), keepdims=True)
            stacked = (stacked - mu) / np.sqrt(var + 1e-5)
            stacked = stacked * layer.gains[li].detach().numpy() + layer.shifts[li].detach().numpy()
            h = [stacked[:, k] for k in range(len(pairs))]
    np.testing.assert_allclose(out, np.stack(h, axis=1), rtol=1e-8, atol=1e-10)


def test_pair_subnetwork_rejects_empty_subnet() -> None:
    with pytest.raises(ValueError, match="pin_subnet"):
        PairSubNetwork([(0, 1)], D, ())


def test_positions_follow_embedding_order() -> None:
    # continuous field listed first in the feature map, but FieldEmbedding puts categoricals first
    fields = [
        FieldSpec("n0", "continuous", "n0", "n0", min=0.0, max=1.0),
        FieldSpec("a", "categorical", "a", "a", vocab_size=4),
        FieldSpec("b", "categorical", "b", "b", vocab_size=5),
        FieldSpec("c", "categorical", "c", "c", vocab_size=3),
    ]
    pairs = [PairSpec("a|c", ("a", "c"), "a|c", 6, 1), PairSpec("b|c", ("b", "c"), "b|c", 7, 1)]
    fmap = FeatureMap("t", "label", fields, pairs, {"train": SplitInfo(1, 0, "train")})
    assert embedding_order(fmap) == ["a", "b", "c", "n0"]
    assert feature_map_pair_positions(fmap) == [(0, 2), (1, 2)]
    assert pair_names(fmap, [(0, 3), (1, 2)]) == ["a|n0", "b|c"]


def test_bilinear_total_equals_sum_of_pairs(emb: torch.Tensor) -> None:
    pairs = [(0, 1), (0, 3), (2, 1), (2, 3)]  # any pairs, either order
    layer = BilinearProduct(pairs, D, init="xavier").double()
    total = layer.total(emb)
    torch.testing.assert_close(total, layer(emb).sum(-1))
    total.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
