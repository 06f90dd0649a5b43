"""Embedding layers (paper eq. 4, 7, 8 and section III-A1).

* :class:`FieldEmbedding` — the original fields: one table for all categorical fields (univalent
  and multivalent) with per-field offsets, and a per-field vector for each continuous field that
  is multiplied by the field's min-max scaled value. Output B × F × D with F = Fc + Fm + Fn, in
  the order univalent categorical fields, multivalent fields, continuous fields
  (:func:`optinter.layers.interactions.embedding_order`).
* :class:`OffsetEmbedding` — a generic "several vocabularies in one table" lookup, used for the
  original fields and for the memorized cross-product features (one table, per-pair offsets);
  :meth:`OffsetEmbedding.pooled` mean-pools padded id lists (multivalent fields).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from preprocess.feature_map import FeatureMap


class OffsetEmbedding(nn.Module):
    """One ``nn.Embedding`` over the concatenation of several vocabularies.

    ``vocab_sizes[k]`` is the vocabulary size of slot k (ids 0 .. vocab_sizes[k]-1, PAD = 0).
    forward: B × K int64 ids → B × K × D. The PAD row of each slot is zero-initialised.
    """

    def __init__(self, vocab_sizes: Sequence[int], dim: int, init_std: float | None = None) -> None:
        super().__init__()
        sizes = torch.as_tensor(list(vocab_sizes), dtype=torch.long)
        offsets = torch.zeros_like(sizes)
        if len(sizes) > 1:
            offsets[1:] = torch.cumsum(sizes, 0)[:-1]
        self.register_buffer("offsets", offsets, persistent=False)
        self.num_slots = len(sizes)
        self.dim = dim
        self.table = nn.Embedding(int(sizes.sum().item()) if len(sizes) else 1, dim)
        with torch.no_grad():
            if init_std is None:
                nn.init.xavier_uniform_(self.table.weight)
            else:
                nn.init.normal_(self.table.weight, std=init_std)
            if len(sizes):
                self.table.weight[offsets] = 0.0  # PAD rows

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: B × K (int64) → B × K × D."""
        return self.table(ids + self.offsets)

    def lookup(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids: B × K of slots ``start .. start+K-1`` → B × K × D."""
        return self.table(ids + self.offsets[start : start + ids.shape[1]])

    def pooled(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Mean over the non-PAD ids of each list: ids B × K × L of slots ``start .. start+K-1`` → B × K × D.

        PAD (0) entries are masked out of the mean, so they get no gradient; a list of PAD only
        gives the zero vector.
        """
        off = self.offsets[start : start + ids.shape[1]]
        e = self.table(ids + off[None, :, None])  # B × K × L × D
        mask = (ids != 0).to(e.dtype)  # B × K × L
        count = mask.sum(dim=2, keepdim=True).clamp_min(1.0)  # B × K × 1
        return (e * mask.unsqueeze(-1)).sum(dim=2) / count

    def l2(self, ids: torch.Tensor) -> torch.Tensor:
        """Sum of squares of the rows looked up for ``ids`` (B × K), for lazy l2 regularization."""
        return self.forward(ids).pow(2).sum()


def _vocab_sizes(fields: Sequence) -> list[int]:
    return [int(f.vocab_size) for f in fields]


class FieldEmbedding(nn.Module):
    """Original-feature embeddings e^o (eq. 7): B × F × D with F = Fc + Fm + Fn.

    Categorical field i: ``E^o x^o_i`` (one table, per-field offsets).
    Multivalent field m: the mean of ``E^o t`` over the non-PAD token ids t of the row (same
    table, its own offset); a row without tokens gives the zero vector.
    Continuous field j: ``x_j * v_j`` with a learned vector v_j ∈ R^D (min-max scaled x_j ∈ [0,1]).
    """

    def __init__(self, cat_vocab_sizes: Sequence[int], num_continuous: int, dim: int,
                 multi_vocab_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_cat = len(cat_vocab_sizes)
        self.num_multi = len(multi_vocab_sizes)
        self.num_cont = num_continuous
        self.dim = dim
        sizes = list(cat_vocab_sizes) + list(multi_vocab_sizes)
        self.cat = OffsetEmbedding(sizes, dim) if sizes else None
        self.cont = nn.Parameter(torch.empty(num_continuous, dim)) if num_continuous else None
        if self.cont is not None:
            nn.init.xavier_uniform_(self.cont)

    @classmethod
    def from_feature_map(cls, fmap: "FeatureMap", dim: int) -> "FieldEmbedding":
        """The embeddings of every field of ``fmap`` (categorical, multivalent, continuous)."""
        return cls(_vocab_sizes(fmap.categorical), len(fmap.continuous), dim, _vocab_sizes(fmap.multivalent))

    @property
    def num_fields(self) -> int:
        return self.num_cat + self.num_multi + self.num_cont

    def forward(self, cat: torch.Tensor, cont: torch.Tensor, multi: torch.Tensor | None = None) -> torch.Tensor:
        """cat: B × Fc int64, cont: B × Fn float, multi: B × Fm × L int64 (PAD = 0) → B × F × D."""
        parts = []
        if self.num_cat:
            parts.append(self.cat.lookup(cat))
        if self.num_multi:
            _check_multi(multi, self.num_multi)
            parts.append(self.cat.pooled(multi, start=self.num_cat))
        if self.cont is not None:
            parts.append(cont.unsqueeze(-1) * self.cont.unsqueeze(0))
        return torch.cat(parts, dim=1)


def _check_multi(multi: torch.Tensor | None, num_multi: int) -> None:
    if multi is None or multi.ndim != 3 or multi.shape[1] != num_multi:
        got = None if multi is None else tuple(multi.shape)
        raise ValueError(f"expected multivalent ids of shape B × {num_multi} × L, got {got}")


class FieldBias(nn.Module):
    """First-order (linear) terms: per-value weights for categorical fields (the mean of the
    token weights for a multivalent field, 0 for a row without tokens), per-field weights for
    continuous fields, and a global bias. Output B (a logit contribution)."""

    def __init__(self, cat_vocab_sizes: Sequence[int], num_continuous: int,
                 multi_vocab_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_cat = len(cat_vocab_sizes)
        self.num_multi = len(multi_vocab_sizes)
        sizes = list(cat_vocab_sizes) + list(multi_vocab_sizes)
        self.cat = OffsetEmbedding(sizes, 1, init_std=0.0) if sizes else None
        self.cont = nn.Parameter(torch.zeros(num_continuous)) if num_continuous else None
        self.bias = nn.Parameter(torch.zeros(1))

    @classmethod
    def from_feature_map(cls, fmap: "FeatureMap") -> "FieldBias":
        return cls(_vocab_sizes(fmap.categorical), len(fmap.continuous), _vocab_sizes(fmap.multivalent))

    def forward(self, cat: torch.Tensor, cont: torch.Tensor, multi: torch.Tensor | None = None) -> torch.Tensor:
        """cat: B × Fc, cont: B × Fn, multi: B × Fm × L → B."""
        out = self.bias.expand(cat.shape[0] if cat.ndim == 2 else cont.shape[0])
        if self.num_cat:
            out = out + self.cat.lookup(cat).sum(dim=(1, 2))
        if self.num_multi:
            _check_multi(multi, self.num_multi)
            out = out + self.cat.pooled(multi, start=self.num_cat).sum(dim=(1, 2))
        if self.cont is not None:
            out = out + cont @ self.cont
        return out
