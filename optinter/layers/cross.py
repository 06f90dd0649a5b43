"""Pairwise interaction embeddings of OptInter (paper eq. 4, 8 and 14).

* Memorized embedding e^m_(i,j) = E^m x^m_(i,j) (eq. 4, 8): the cross-product feature of a pair
  has its own embedding row; all pairs share one table with per-pair offsets
  (:class:`~optinter.layers.embedding.OffsetEmbedding`), size s2 = ``model.cross_embed_dim``.
* Factorized embedding e^f_(i,j) = e_i ⊙ e_j (eq. 14), the Hadamard product of two field
  embeddings. :class:`HadamardPairs` computes it for a list of field-index pairs from any
  B × F × D tensor: the original field embeddings e^o (``factorize_source="orig"``, the paper's
  text, D = s1) or a separate factorization table (``"table"``, as the authors' released code,
  D = s2; see :class:`FactorizationTable`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .embedding import OffsetEmbedding


class HadamardPairs(nn.Module):
    """e_i ⊙ e_j for each listed pair (eq. 14).

    ``pairs[k] = (i, j)`` indexes the field axis of the input. forward: B × F × D → B × K × D.
    """

    def __init__(self, pairs: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        idx = torch.as_tensor(list(pairs), dtype=torch.long).reshape(-1, 2)
        self.register_buffer("left", idx[:, 0].clone(), persistent=False)
        self.register_buffer("right", idx[:, 1].clone(), persistent=False)

    @property
    def num_pairs(self) -> int:
        return int(self.left.numel())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb: B × F × D → B × K × D."""
        return emb.index_select(1, self.left) * emb.index_select(1, self.right)


class FactorizationTable(nn.Module):
    """A separate embedding of the categorical fields used only to factorize pairs (released code).

    forward: cat ids B × Fc → Hadamard products B × K × D for the listed (categorical) pairs.
    """

    def __init__(
        self, cat_vocab_sizes: Sequence[int], dim: int, pairs: Sequence[tuple[int, int]], sparse: bool = False
    ) -> None:
        super().__init__()
        self.table = OffsetEmbedding(cat_vocab_sizes, dim)
        self.table.table.sparse = sparse
        self.hadamard = HadamardPairs(pairs)

    def forward(self, cat: torch.Tensor) -> torch.Tensor:
        """cat: B × Fc int64 → B × K × D."""
        return self.hadamard(self.table(cat))


class MemorizedEmbedding(OffsetEmbedding):
    """Cross-product embeddings e^m (eq. 4, 8): pair ids B × K → B × K × s2, one table, per-pair offsets.

    Only the pairs it is built for get rows: a re-trained OptInter builds it over the memorized
    pairs alone, so no parameters are allocated for factorized or naive pairs.
    ``sparse=True``: sparse gradients (updated by a lazy Adam, see
    :func:`optinter.train.make_optimizers`), so a step costs O(batch rows), not O(table size).
    """

    def __init__(self, pair_vocab_sizes: Sequence[int], dim: int, sparse: bool = False) -> None:
        super().__init__(pair_vocab_sizes, dim)
        self.table.sparse = sparse
