"""Deep baselines of Table III: FNN, IPNN, OPNN, DeepFM, PIN, Wide&Deep.

Every model embeds the F original fields (B × F × D, ``model.embed_dim``) and feeds an MLP
(``model.mlp_dims``, ReLU, LayerNorm when ``model.layer_norm``, ``model.dropout``; eq. 9–12):

* ``fnn``       — naive: MLP(flatten(e)).
* ``ipnn``      — MLP([flatten(e), ⟨e_i, e_j⟩ for all i<j]) (product layer = linear signal z +
  inner-product signal p, both fed to the first hidden layer).
* ``opnn``      — MLP([flatten(e), e_i K_(i,j) e_jᵀ for all i<j]): the outer product e_i e_jᵀ
  weighted element-wise by a learned D × D kernel per pair and summed (kernel product; the
  kernels start at the identity, as in the PNN authors' code).
* ``deepfm``    — FieldBias + FM(e) + MLP(flatten(e)), embeddings shared.
* ``pin``       — MLP([net_(i,j)([e_i, e_j, e_i ⊙ e_j]) for all i<j]): a per-pair sub-network of
  sizes ``model.pin_subnet`` (Table IV: [40, 5]) whose outputs alone feed the MLP (PIN authors'
  code: the embeddings reach the MLP only through the sub-networks).
* ``wide_deep`` — wide: FieldBias + a memorized weight per cross-product value of every
  ``feature_map.pairs`` pair (``"cross"`` group, reads ``batch.pairs``); deep: MLP(flatten(e)).

Factorized products pair all F embedded fields (categorical and continuous), as the original
models do.
"""

from __future__ import annotations

import torch
from torch import nn

from preprocess.feature_map import FeatureMap

from ..config import ModelConfig
from ..layers.embedding import FieldBias, FieldEmbedding, OffsetEmbedding
from ..layers.interactions import BilinearProduct, InnerProduct, PairSubNetwork, all_field_pairs, fm_second_order
from ..layers.mlp import MLP
from ..registry import register_model
from .base import Batch, CTRModel


class DeepModel(CTRModel):
    """Embeddings → [flatten(e), product features] → MLP → logit B.

    Subclasses define :meth:`products` (B × F × D → B × K extra MLP inputs) and its width
    ``product_dim``; FNN has none.
    """

    product_dim: int = 0
    uses_embeddings_in_mlp: bool = True  # flatten(e) is part of the MLP input

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map)
        if feature_map.num_fields == 0:
            raise ValueError("the feature map has no fields")
        self.embedding = FieldEmbedding.from_feature_map(feature_map, cfg.embed_dim)
        self.num_fields = self.embedding.num_fields
        self.field_pairs = all_field_pairs(self.num_fields)
        self.build_products(cfg)
        self.mlp = MLP(
            (self.num_fields * cfg.embed_dim if self.uses_embeddings_in_mlp else 0) + self.product_dim,
            cfg.mlp_dims,
            layer_norm=cfg.layer_norm,
            dropout=cfg.dropout,
        )

    def build_products(self, cfg: ModelConfig) -> None:
        """Create the product layer and set ``product_dim`` (default: none)."""

    def products(self, e: torch.Tensor) -> torch.Tensor | None:
        """e: B × F × D → B × product_dim, or None."""
        return None

    def deep(self, e: torch.Tensor) -> torch.Tensor:
        """e: B × F × D → B (the MLP's logit)."""
        parts = [e.flatten(1)] if self.uses_embeddings_in_mlp else []
        p = self.products(e)
        if p is not None:
            parts.append(p)
        return self.mlp(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.deep(self.embedding(batch.cat, batch.cont, batch.multi))


class FNN(DeepModel):
    """MLP on the concatenated embeddings (naive)."""


class IPNN(DeepModel):
    """Inner-product neural network: MLP([flatten(e), ⟨e_i, e_j⟩_{i<j}])."""

    def build_products(self, cfg: ModelConfig) -> None:
        self.product = InnerProduct(self.field_pairs)
        self.product_dim = self.product.num_pairs

    def products(self, e: torch.Tensor) -> torch.Tensor:
        return self.product(e)


class OPNN(DeepModel):
    """Outer-product neural network with a D × D kernel per pair: MLP([flatten(e), e_i K e_jᵀ])."""

    def build_products(self, cfg: ModelConfig) -> None:
        self.product = BilinearProduct(self.field_pairs, cfg.embed_dim, init="identity")
        self.product_dim = self.product.num_pairs

    def products(self, e: torch.Tensor) -> torch.Tensor:
        return self.product(e)


class PIN(DeepModel):
    """Product-network-in-network: MLP([net_(i,j)([e_i, e_j, e_i ⊙ e_j])_{i<j}])."""

    uses_embeddings_in_mlp = False

    def build_products(self, cfg: ModelConfig) -> None:
        self.product = PairSubNetwork(self.field_pairs, cfg.embed_dim, cfg.pin_subnet, layer_norm=cfg.layer_norm)
        self.product_dim = self.product.num_pairs * self.product.out_dim

    def products(self, e: torch.Tensor) -> torch.Tensor:
        return self.product(e).flatten(1)


class DeepFM(DeepModel):
    """FieldBias + Σ_{i<j} ⟨e_i, e_j⟩ + MLP(flatten(e)), one shared embedding table."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        self.linear = FieldBias.from_feature_map(feature_map)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch.cat, batch.cont, batch.multi)
        return self.linear(batch.cat, batch.cont, batch.multi) + fm_second_order(e) + self.deep(e)


class WideDeep(DeepModel):
    """Wide (first order + memorized cross-product weights) & deep (MLP on embeddings)."""

    uses_pairs = True

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        if not feature_map.pairs:
            raise ValueError("model wide_deep needs cross-product pairs in the feature map; it has none")
        self.linear = FieldBias.from_feature_map(feature_map)
        self.cross = OffsetEmbedding([p.vocab_size for p in feature_map.pairs], 1, init_std=0.0)

    def forward(self, batch: Batch) -> torch.Tensor:
        wide = self.linear(batch.cat, batch.cont, batch.multi) + self.cross(batch.pairs).sum(dim=(1, 2))
        return wide + self.deep(self.embedding(batch.cat, batch.cont, batch.multi))

    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        cross = list(self.cross.parameters())
        ids = {id(p) for p in cross}
        return {"orig": [p for p in self.parameters() if id(p) not in ids], "cross": cross}


# Each class is its own factory ``(feature_map, model_config) -> CTRModel``.
for _name, _cls in {"fnn": FNN, "ipnn": IPNN, "opnn": OPNN, "deepfm": DeepFM, "pin": PIN, "wide_deep": WideDeep}.items():
    register_model(_name)(_cls)
