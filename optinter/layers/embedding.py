"""Embedding layers (paper eq. 4, 7, 8 and section III-A1).

* :class:`FieldEmbedding` — the original fields: one table for all categorical fields with
  per-field offsets, and a per-field vector for each continuous field that is multiplied by the
  field's min-max scaled value. Output B × F × D, categorical fields first, then continuous.
* :class:`OffsetEmbedding` — a generic "several vocabularies in one table" lookup, used for the
  original fields and for the memorized cross-product features (one table, per-pair offsets).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


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

    def l2(self, ids: torch.Tensor) -> torch.Tensor:
        """Sum of squares of the rows looked up for ``ids`` (B × K), for lazy l2 regularization."""
        return self.forward(ids).pow(2).sum()


class FieldEmbedding(nn.Module):
    """Original-feature embeddings e^o (eq. 7): B × F × D with F = Fc + Fn.

    Categorical field i: ``E^o x^o_i`` (one table, per-field offsets).
    Continuous field j: ``x_j * v_j`` with a learned vector v_j ∈ R^D (min-max scaled x_j ∈ [0,1]).
    """

    def __init__(self, cat_vocab_sizes: Sequence[int], num_continuous: int, dim: int) -> None:
        super().__init__()
        self.num_cat = len(cat_vocab_sizes)
        self.num_cont = num_continuous
        self.dim = dim
        self.cat = OffsetEmbedding(cat_vocab_sizes, dim) if self.num_cat else None
        self.cont = nn.Parameter(torch.empty(num_continuous, dim)) if num_continuous else None
        if self.cont is not None:
            nn.init.xavier_uniform_(self.cont)

    @property
    def num_fields(self) -> int:
        return self.num_cat + self.num_cont

    def forward(self, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """cat: B × Fc int64, cont: B × Fn float → B × F × D."""
        parts = []
        if self.cat is not None:
            parts.append(self.cat(cat))
        if self.cont is not None:
            parts.append(cont.unsqueeze(-1) * self.cont.unsqueeze(0))
        return torch.cat(parts, dim=1)


class FieldBias(nn.Module):
    """First-order (linear) terms: per-value weights for categorical fields, per-field weights
    for continuous fields, and a global bias. Output B (a logit contribution)."""

    def __init__(self, cat_vocab_sizes: Sequence[int], num_continuous: int) -> None:
        super().__init__()
        self.cat = OffsetEmbedding(cat_vocab_sizes, 1, init_std=0.0) if len(cat_vocab_sizes) else None
        self.cont = nn.Parameter(torch.zeros(num_continuous)) if num_continuous else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """cat: B × Fc, cont: B × Fn → B."""
        out = self.bias.expand(cat.shape[0] if cat.ndim == 2 else cont.shape[0])
        if self.cat is not None:
            out = out + self.cat(cat).sum(dim=(1, 2))
        if self.cont is not None:
            out = out + cont @ self.cont
        return out
