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

from typing import Any, Sequence

import torch
from torch import nn

from .embedding import OffsetEmbedding


# Target size of one chunk's B × c × D temporaries in the pair ops (here and in
# optinter.layers.combination._FactorizeCombine): 4 MiB of float32. At benchmarks/train.py's shape
# (2000 × 325 × 20) that is 26 pairs a chunk: the search's fused forward + backward takes 185 ms
# against 335 ms unchunked on one thread.
PAIR_CHUNK_FLOATS = 1 << 20


def pair_chunks(num_pairs: int, batch: int, width: int, device: torch.device) -> list[slice]:
    """Slices of the pair axis for the chunked pair ops: cache-sized on CPU (the ops are
    memory-bound there), one slice on CUDA."""
    step = num_pairs if device.type == "cuda" else max(1, PAIR_CHUNK_FLOATS // max(1, batch * width))
    return [slice(s, s + step) for s in range(0, num_pairs, step)]


class _ChunkedHadamard(torch.autograd.Function):
    """emb B × F × D, left K, right K → B × K × D, ``out[:, k] = emb[:, left[k]] ⊙ emb[:, right[k]]``.

    On CPU the pairs are processed in cache-sized chunks and the backward recomputes the gathered
    embeddings chunk by chunk (only ``emb`` is saved), so the B × K × D gathers never go through
    memory (:func:`pair_chunks`; :class:`optinter.layers.combination._FactorizeCombine` does the same).
    """

    @staticmethod
    def forward(ctx: Any, emb: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        batch, _, dim = emb.shape
        out = emb.new_empty(batch, left.numel(), dim)
        for sl in pair_chunks(left.numel(), batch, dim, emb.device):
            torch.mul(emb.index_select(1, left[sl]), emb.index_select(1, right[sl]), out=out[:, sl])
        ctx.save_for_backward(emb, left, right)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        emb, left, right = ctx.saved_tensors
        d_emb = torch.zeros_like(emb)
        for sl in pair_chunks(left.numel(), emb.shape[0], emb.shape[2], emb.device):
            g = grad[:, sl]
            d_emb.index_add_(1, left[sl], g * emb.index_select(1, right[sl]))
            d_emb.index_add_(1, right[sl], g * emb.index_select(1, left[sl]))
        return d_emb, None, None


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
        return _ChunkedHadamard.apply(emb, self.left, self.right)


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
