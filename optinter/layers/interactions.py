"""Second-order feature-interaction functions of the factorized baselines (paper Table III).

All layers read the field embeddings ``e`` (B × F × D, the output of
:class:`optinter.layers.embedding.FieldEmbedding`: categorical fields first, then multivalent, then
continuous) and a fixed list of P field pairs ``(i, j)`` with ``i < j`` given as positions in that
order.
Everything is vectorized over the P pairs (gather + batched products, no Python loop over pairs).

* :class:`InnerProduct` — ⟨e_i, e_j⟩ per pair (FM, IPNN, DeepFM, AutoFIS): B × P.
* :func:`fm_second_order` — FM's Σ_{i<j} ⟨e_i, e_j⟩ over *all* pairs with the
  square-of-sum trick, O(F·D) instead of O(F²·D): B.
* :class:`FieldWeightedProduct` — FwFM's ⟨e_i, e_j⟩ w_(i,j): B × P.
* :class:`BilinearProduct` — e_i W_(i,j) e_jᵀ with one D × D matrix per pair: FmFM's field-matrixed
  product, and OPNN's outer-product kernel (Σ_{d,d'} (e_i e_jᵀ ⊙ K_(i,j))_{d,d'} = e_i K_(i,j) e_jᵀ,
  the PNN authors' "mat" kernel product): B × P.
* :class:`PairSubNetwork` — PIN's per-pair micro network net_(i,j)([e_i, e_j, e_i ⊙ e_j]) with its
  own weights for each pair, as one batched ``einsum`` over P: B × P × H_last.

Which pairs: :func:`all_field_pairs` (every pair of the F embedded fields, categorical,
multivalent (mean-pooled) and continuous, as FM/PNN/DeepFM/AutoFIS define them) or
:func:`feature_map_pair_positions` (the cross-product pairs of ``feature_map.json``, univalent
categorical fields only).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from preprocess.feature_map import FeatureMap

Pairs = Sequence[tuple[int, int]]


# ---- which pairs ------------------------------------------------------------------------------
def embedding_order(feature_map: FeatureMap) -> list[str]:
    """Field names in the order of FieldEmbedding's output: categorical, multivalent, continuous fields."""
    return [f.name for f in feature_map.categorical + feature_map.multivalent + feature_map.continuous]


def all_field_pairs(num_fields: int) -> list[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i < j`` of ``num_fields`` fields, row-major (0,1), (0,2), …, (F-2,F-1)."""
    return [(i, j) for i in range(num_fields) for j in range(i + 1, num_fields)]


def feature_map_pair_positions(feature_map: FeatureMap) -> list[tuple[int, int]]:
    """Positions (in :func:`embedding_order`) of the two fields of each ``feature_map.pairs`` entry."""
    pos = {name: k for k, name in enumerate(embedding_order(feature_map))}
    return [(pos[p.fields[0]], pos[p.fields[1]]) for p in feature_map.pairs]


def pair_names(feature_map: FeatureMap, pairs: Pairs) -> list[str]:
    """``"A|B"`` names of the given position pairs (for reports and architecture files)."""
    names = embedding_order(feature_map)
    return [f"{names[i]}|{names[j]}" for i, j in pairs]


class PairGather(nn.Module):
    """Gathers the two sides of each pair: B × F × D → (B × P × D, B × P × D)."""

    def __init__(self, pairs: Pairs) -> None:
        super().__init__()
        pairs = list(pairs)
        for i, j in pairs:
            if i == j or i < 0 or j < 0:
                raise ValueError(f"bad field pair ({i}, {j}): need two distinct non-negative positions")
        rows = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        cols = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.num_pairs = len(pairs)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e: B × F × D → (e[:, rows], e[:, cols]), each B × P × D."""
        return e.index_select(1, self.rows), e.index_select(1, self.cols)

    def pair_major(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e: B × F × D → the two sides as contiguous P × B × D tensors (ready for ``bmm`` over P)."""
        et = e.transpose(0, 1).contiguous()  # F × B × D: each gathered row is one memcpy
        return et.index_select(0, self.rows), et.index_select(0, self.cols)


# ---- interaction functions --------------------------------------------------------------------
class InnerProduct(PairGather):
    """⟨e_i, e_j⟩ for each pair: B × F × D → B × P.

    Computed from the Gram matrix e eᵀ (B × F × F, one batched matmul) and a gather of its
    P entries, which is much cheaper than gathering two B × P × D tensors when P ≫ F.
    """

    def forward(self, e: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gram = torch.bmm(e, e.transpose(1, 2))  # B × F × F
        return gram.flatten(1).index_select(1, self.rows * e.shape[1] + self.cols)


def fm_second_order(e: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} ⟨e_i, e_j⟩ over all F fields: B × F × D → B.

    Uses ½ Σ_d [(Σ_i e_id)² − Σ_i e_id²] (Rendle 2010), O(F·D) per row.
    """
    s = e.sum(1)
    return 0.5 * (s.pow(2) - e.pow(2).sum(1)).sum(-1)


class FieldWeightedProduct(InnerProduct):
    """FwFM: ⟨e_i, e_j⟩ · w_(i,j) with one learned scalar per pair: B × F × D → B × P.

    ``w`` starts at 1, so an untrained FwFM computes FM's interactions.
    """

    def __init__(self, pairs: Pairs) -> None:
        super().__init__(pairs)
        self.weight = nn.Parameter(torch.ones(self.num_pairs))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return super().forward(e) * self.weight


class BilinearProduct(PairGather):
    """e_i W_(i,j) e_jᵀ with one D × D matrix per pair: B × F × D → B × P.

    ``init="identity"`` (starts as the inner product: FmFM, and OPNN as the PNN authors' code
    initializes its kernel) or ``"xavier"`` (uniform ±√(6 / 2D)).
    Computed as ``((e_i W) ⊙ e_j).sum(-1)`` with a batched matmul over pairs — never materializes
    the B × P × D × D outer products.
    """

    def __init__(self, pairs: Pairs, dim: int, init: str = "identity") -> None:
        super().__init__(pairs)
        self.dim = dim
        w = torch.empty(self.num_pairs, dim, dim)
        if init == "identity":
            w.copy_(torch.eye(dim).expand_as(w))
        elif init == "xavier":
            bound = math.sqrt(6.0 / (2 * dim))
            nn.init.uniform_(w, -bound, bound)
        else:
            raise ValueError(f"BilinearProduct init must be 'identity' or 'xavier', got {init!r}")
        self.weight = nn.Parameter(w)

    def forward(self, e: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """e: B × F × D → B × P."""
        left, right = self.pair_major(e)  # P × B × D
        lw = torch.bmm(left, self.weight)  # one D × D matmul per pair, batched over P
        return (lw * right).sum(-1).t()

    def total(self, e: torch.Tensor) -> torch.Tensor:
        """Σ_p e_i W_p e_jᵀ: B × F × D → B, as one quadratic form x M xᵀ with x = flatten(e)
        (B × F·D) and M the F·D × F·D block matrix holding W_p at block (i, j) — a single
        dense matmul instead of P small ones."""
        f, d = e.shape[1], self.dim
        m = e.new_zeros(f, f, d, d).index_put((self.rows, self.cols), self.weight)
        m = m.permute(0, 2, 1, 3).reshape(f * d, f * d)
        x = e.reshape(e.shape[0], f * d)
        return ((x @ m) * x).sum(-1)


class PairSubNetwork(PairGather):
    """PIN's product: a micro network per pair, ``net_(i,j)([e_i, e_j, e_i ⊙ e_j])``.

    Each pair has its own weights (P × in × out per layer, Xavier-uniform per pair). Every layer
    is Linear → ReLU [→ LayerNorm], as the outer MLP's hidden layers (eq. 9–11). The LayerNorm
    of a sub-network layer normalizes each row over all P × H units of that layer, with a gain
    and shift per unit shared by the pairs (H each), as the PIN authors' code does; normalizing
    each pair's H ≤ 5 outputs on their own would collapse them to ±1.
    Input 3·D, hidden sizes ``hidden`` (Table IV: [40, 5]); output B × P × hidden[-1].
    """

    def __init__(self, pairs: Pairs, dim: int, hidden: Sequence[int], layer_norm: bool = True) -> None:
        super().__init__(pairs)
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"model.pin_subnet must be a non-empty list of positive sizes, got {tuple(hidden)}")
        self.layer_norm = layer_norm
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.gains = nn.ParameterList()
        self.shifts = nn.ParameterList()
        d_in = 3 * dim
        for h in hidden:
            w = torch.empty(self.num_pairs, d_in, h)
            bound = math.sqrt(6.0 / (d_in + h))  # Xavier uniform per pair
            nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(self.num_pairs, h)))
            if layer_norm:
                self.gains.append(nn.Parameter(torch.ones(h)))
                self.shifts.append(nn.Parameter(torch.zeros(h)))
            d_in = h
        self.out_dim = d_in

    def forward(self, e: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """e: B × F × D → B × P × hidden[-1]."""
        left, right = self.pair_major(e)
        h = torch.cat([left, right, left * right], dim=-1)  # P × B × 3D, pair-major for bmm
        p, last = self.num_pairs, len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w))  # P × B × H: pair k's own weights
            if self.layer_norm:  # LayerNorm per row over all P × H units (batch-major)
                hdim = h.shape[-1]
                h = F.layer_norm(h.transpose(0, 1).contiguous(), (p, hdim))  # no affine: see layers.norm
                h = torch.addcmul(self.shifts[k], h, self.gains[k])  # thread-invariant gain / shift grads
                if k < last:
                    h = h.transpose(0, 1).contiguous()
            elif k == last:
                h = h.transpose(0, 1)
        return h
