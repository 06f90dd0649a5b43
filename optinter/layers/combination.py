"""The combination block of OptInter's search stage (paper eq. 15–18, Fig. 3).

For each pair (i, j) the block outputs

    e^b_(i,j) = p^m · e^m_(i,j) + p^f · e^f_(i,j) + p^n · e^n,      e^n = 0       (eq. 18)

with p = relax(α_(i,j)) ∈ Δ³ from the architecture parameters α ∈ R^{P×3} (columns in the order
``CHOICES = (memorize, factorize, naive)``; α holds log-probabilities up to a constant, i.e.
logits, initialised to 0 = uniform).

Relaxations (``model.relaxation``):

* ``"gumbel"`` (eq. 16–17): p = softmax((α + g) / τ), g = −log(−log u), u ~ U(0, 1), one
  noise draw per pair per training step (P × 3), drawn on the CPU from the block's own seeded
  ``torch.Generator`` (its state is saved in ``state_dict`` so a resumed run draws the same noise);
* ``"softmax"``: p = softmax(α / τ) with an annealed τ (the authors' released code).

τ is *set by the training loop* (:meth:`CombinationBlock.set_temperature`, the search's schedule
``tau_start → tau_end``, :func:`optinter.search.tau_at`); ``forward`` never changes it. In eval mode no noise is drawn and the
weights are either the expected weights softmax(α / τ) (``eval_weights="expected"``) or the
one-hot argmax of α (``"argmax"``, eq. 19) — the "no re-train" ablation of Table IX.

Dimensions: memorized embeddings have width s2 (``mem_dim``) and factorized ones width
``fac_dim`` (s1 for ``factorize_source="orig"``, s2 for ``"table"``). During search every pair
gets one slot of width W = max(mem_dim, fac_dim); the narrower candidate is zero-padded on the
right (so e.g. with s1=20, s2=10 the memorized embedding fills the first 10 coordinates of the
slot). The re-trained model has no block: each pair contributes only its own width
(s2 memorized, fac_dim factorized, 0 naive).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RELAXATIONS
from .cross import pair_chunks

EVAL_WEIGHTS = ("expected", "argmax")


class _FactorizeCombine(torch.autograd.Function):
    """Fused Hadamard products (eq. 14) and mixing (eq. 18) with a hand-written backward.

    forward(emb B × F × Df, e_m B × P × Dm, w P × 3, left P, right P, prefix B × K or None)
    → B × P × W, W = max(Df, Dm):
    ``out[:, p] = w[p, 0] · pad(e_m[:, p]) + w[p, 1] · pad(emb[:, left[p]] ⊙ emb[:, right[p]])``;
    with a ``prefix`` the result is ``cat([prefix, out.flatten(1)], 1)`` (B × (K + P·W)), written
    in place, so the MLP input is built without a separate concatenation.

    It computes the same numbers as the unfused :meth:`CombinationBlock.forward` over
    :class:`~optinter.layers.cross.HadamardPairs`, but the search step is memory-bound on CPU
    (B × P × W tensors of ~50 MB at Criteo size), so it works on chunks of pairs small enough to
    stay in cache (:func:`~optinter.layers.cross.pair_chunks`): the gathered field embeddings and
    their products are never written to memory as B × P × W tensors; the backward recomputes them
    chunk by chunk (only ``emb``, ``e_m`` and ``w`` are saved). On CUDA it runs as one chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, emb: torch.Tensor, e_m: torch.Tensor, w: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
        prefix: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, num_pairs, d_m = e_m.shape
        d_f = emb.shape[-1]
        width = max(d_f, d_m)
        k = prefix.shape[1] if prefix is not None else 0
        full = e_m.new_empty(batch, k + num_pairs * width)  # written once, no concatenation
        if prefix is not None:
            full[:, :k] = prefix
        out = full[:, k:].view(batch, num_pairs, width)
        for sl in pair_chunks(num_pairs, batch, width, emb.device):
            w_m, w_f = w[sl, 0].view(1, -1, 1), w[sl, 1].view(1, -1, 1)
            ea = emb.index_select(1, left[sl]).mul_(w_f)  # B × c × Df
            eb = emb.index_select(1, right[sl])
            o = out[:, sl]
            if d_f >= d_m:
                torch.mul(ea, eb, out=o)
                o[..., :d_m].addcmul_(e_m[:, sl], w_m)
            else:
                torch.mul(e_m[:, sl], w_m, out=o)
                o[..., :d_f].addcmul_(ea, eb)
        ctx.save_for_backward(emb, e_m, w, left, right)
        ctx.k = k
        return full if prefix is not None else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        emb, e_m, w, left, right = ctx.saved_tensors
        batch, num_pairs, d_m = e_m.shape
        d_f = emb.shape[-1]
        d_prefix = None
        if ctx.k:
            d_prefix, grad = grad[:, : ctx.k], grad[:, ctx.k :].view(batch, num_pairs, -1)
        need_emb, need_em, need_w = ctx.needs_input_grad[:3]
        d_emb = torch.zeros_like(emb) if need_emb else None
        d_em = torch.empty_like(e_m) if need_em else None
        d_w = torch.zeros_like(w) if need_w else None
        for sl in pair_chunks(num_pairs, batch, grad.shape[-1], emb.device):
            g = grad[:, sl]
            g_f, g_m = g[..., :d_f], g[..., :d_m]
            w_m, w_f = w[sl, 0].view(1, -1, 1), w[sl, 1].view(1, -1, 1)
            ea, eb = emb.index_select(1, left[sl]), emb.index_select(1, right[sl])
            if need_w:
                d_w[sl, 0] = (g_m * e_m[:, sl]).sum(2).sum(0)
                d_w[sl, 1] = (g_f * ea * eb).sum(2).sum(0)
            if need_emb:
                t = g_f * w_f
                d_emb.index_add_(1, left[sl], t * eb).index_add_(1, right[sl], t.mul_(ea))
            if need_em:
                torch.mul(g_m, w_m, out=d_em[:, sl])
        return d_emb, d_em, d_w, None, None, d_prefix


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """i.i.d. standard Gumbel noise −log(−log u) (CPU float32), drawn from ``generator``."""
    u = torch.rand(shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


class CombinationBlock(nn.Module):
    """Relaxed per-pair choice among memorized / factorized / naive embeddings.

    forward: e_m B × P × mem_dim, e_f B × P × fac_dim → e_b B × P × W, W = max(mem_dim, fac_dim).
    """

    def __init__(
        self,
        num_pairs: int,
        mem_dim: int,
        fac_dim: int,
        relaxation: str = "gumbel",
        tau: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {relaxation!r}")
        self.num_pairs = num_pairs
        self.mem_dim = mem_dim
        self.fac_dim = fac_dim
        self.width = max(mem_dim, fac_dim)
        self.relaxation = relaxation
        self.alpha = nn.Parameter(torch.zeros(num_pairs, 3))
        self.tau = float(tau)
        self.eval_weights = "expected"
        self.generator = torch.Generator().manual_seed(int(seed))

    # ---- settings (called by the training loop, never inside forward) ---------------------------
    def set_temperature(self, tau: float) -> None:
        if not tau > 0:
            raise ValueError(f"temperature must be > 0, got {tau}")
        self.tau = float(tau)

    def set_eval_weights(self, mode: str) -> None:
        if mode not in EVAL_WEIGHTS:
            raise ValueError(f"eval weights must be one of {EVAL_WEIGHTS}, got {mode!r}")
        self.eval_weights = mode

    # ---- weights ---------------------------------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """softmax(α) (τ = 1, no noise): P × 3, reported in architecture.json."""
        return torch.softmax(self.alpha.detach().float(), dim=-1)

    def weights(self) -> torch.Tensor:
        """The P × 3 mixing weights p used by the next forward pass (draws noise in training)."""
        if not self.training:
            if self.eval_weights == "argmax":
                return F.one_hot(self.alpha.argmax(dim=-1), 3).to(self.alpha.dtype)
            return torch.softmax(self.alpha / self.tau, dim=-1)
        logits = self.alpha
        if self.relaxation == "gumbel":
            logits = logits + gumbel_noise(tuple(self.alpha.shape), self.generator).to(self.alpha.device)
        return torch.softmax(logits / self.tau, dim=-1)

    def forward(self, e_m: torch.Tensor, e_f: torch.Tensor) -> torch.Tensor:
        """e_m: B × P × mem_dim, e_f: B × P × fac_dim → B × P × W (eq. 18, zero-padded to W)."""
        w = self.weights().to(e_m.dtype)
        w_m, w_f = w[:, 0].view(1, -1, 1), w[:, 1].view(1, -1, 1)
        # p^n · e^n vanishes: e^n is the zero vector. The narrower candidate fills the first
        # coordinates of the slot (zero padding), written without materializing the padding.
        if self.mem_dim == self.fac_dim:
            return e_m * w_m + e_f * w_f
        wide, narrow = (e_f * w_f, e_m * w_m) if self.fac_dim > self.mem_dim else (e_m * w_m, e_f * w_f)
        k = narrow.shape[-1]
        return torch.cat([wide[..., :k] + narrow, wide[..., k:]], dim=-1)

    def forward_factorized(
        self, e_m: torch.Tensor, emb: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same as ``forward(e_m, emb[:, left] ⊙ emb[:, right])`` (eq. 14 + 18), fused.

        e_m: B × P × mem_dim, emb: B × F × fac_dim (the field embeddings the pairs factorize
        from), left/right: P field indices → B × P × W; with ``prefix`` (B × K):
        ``cat([prefix, e_b.flatten(1)], 1)``, B × (K + P·W).
        """
        w = self.weights().to(emb.dtype)
        return _FactorizeCombine.apply(emb, e_m.to(emb.dtype), w, left, right, prefix)

    # ---- the noise generator and τ travel with the state dict ------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "tau": self.tau, "eval_weights": self.eval_weights}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.tau = float(state["tau"])
        self.eval_weights = state.get("eval_weights", "expected")

    def extra_repr(self) -> str:
        return f"pairs={self.num_pairs}, mem_dim={self.mem_dim}, fac_dim={self.fac_dim}, relaxation={self.relaxation}"
