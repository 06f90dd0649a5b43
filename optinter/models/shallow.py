"""Shallow baselines of Table III: LR, Poly2, FM, FwFM, FmFM.

All output a logit B = first-order terms (:class:`FieldBias`: a weight per categorical value, a
weight per continuous field, a global bias) + an interaction term:

* ``lr``    — naive: no interaction term.
* ``poly2`` — memorized: a learned weight per cross-product value of every ``feature_map.pairs``
  pair (one table with per-pair offsets, reads ``batch.pairs``; group ``"cross"``).
* ``fm``    — factorized: Σ_{i<j} ⟨e_i, e_j⟩ over all F fields (square-of-sum trick).
* ``fwfm``  — factorized: Σ_{i<j} ⟨e_i, e_j⟩ w_(i,j).
* ``fmfm``  — factorized: Σ_{i<j} e_i W_(i,j) e_jᵀ.

The factorized models pair *all* F embedded fields (categorical and continuous; a continuous
field's embedding is value × vector), as FM does; ``feature_map.pairs`` lists only categorical
crosses and matters only to the memorized models.
"""

from __future__ import annotations

import torch

from preprocess.feature_map import FeatureMap

from ..config import ModelConfig
from ..layers.embedding import FieldBias, FieldEmbedding, OffsetEmbedding
from ..layers.interactions import BilinearProduct, FieldWeightedProduct, all_field_pairs, fm_second_order
from ..registry import register_model
from .base import Batch, CTRModel


class LR(CTRModel):
    """Logistic regression on the original features (naive): logit = Σ w_x + Σ w_j x_j + b."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map)
        self.linear = FieldBias.from_feature_map(feature_map)

    def forward(self, batch: Batch) -> torch.Tensor:
        """→ B logits."""
        return self.linear(batch.cat, batch.cont, batch.multi)


class Poly2(LR):
    """LR + one weight per cross-product value of each pair (degree-2 polynomial, memorized).

    Pair ids come from ``batch.pairs`` (B × P, order of ``feature_map.pairs``); the OOV id of a
    pair has its own weight, PAD's weight starts at 0. Cross weights are the ``"cross"`` group.
    """

    uses_pairs = True

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        if not feature_map.pairs:
            raise ValueError(f"model {type(self).__name__.lower()} needs cross-product pairs in the feature map; it has none")
        self.cross = OffsetEmbedding([p.vocab_size for p in feature_map.pairs], 1, init_std=0.0)

    def cross_logit(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs: B × P ids → B (Σ_p w_(p, id))."""
        return self.cross(pairs).sum(dim=(1, 2))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.linear(batch.cat, batch.cont, batch.multi) + self.cross_logit(batch.pairs)

    def named_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        cross = list(self.cross.parameters())
        ids = {id(p) for p in cross}
        return {"orig": [p for p in self.parameters() if id(p) not in ids], "cross": cross}


class FM(LR):
    """Factorization machine: LR + Σ_{i<j} ⟨e_i, e_j⟩ (embeddings of size ``embed_dim``)."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        self.embedding = FieldEmbedding.from_feature_map(feature_map, cfg.embed_dim)

    def interaction(self, e: torch.Tensor) -> torch.Tensor:
        """e: B × F × D → B."""
        return fm_second_order(e)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch.cat, batch.cont, batch.multi)
        return self.linear(batch.cat, batch.cont, batch.multi) + self.interaction(e)


class FwFM(FM):
    """Field-weighted FM: LR + Σ_{i<j} ⟨e_i, e_j⟩ w_(i,j)."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        self.product = FieldWeightedProduct(all_field_pairs(self.embedding.num_fields))

    def interaction(self, e: torch.Tensor) -> torch.Tensor:
        return self.product(e).sum(-1)


class FmFM(FM):
    """Field-matrixed FM: LR + Σ_{i<j} e_i W_(i,j) e_jᵀ (W starts at the identity, i.e. at FM)."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg)
        self.product = BilinearProduct(all_field_pairs(self.embedding.num_fields), cfg.embed_dim, init="identity")

    def interaction(self, e: torch.Tensor) -> torch.Tensor:
        return self.product.total(e)


# Each class is its own factory ``(feature_map, model_config) -> CTRModel``.
for _name, _cls in {"lr": LR, "poly2": Poly2, "fm": FM, "fwfm": FwFM, "fmfm": FmFM}.items():
    register_model(_name)(_cls)
