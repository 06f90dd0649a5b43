"""LazyAdam: Adam for embedding tables with sparse gradients (the memorized cross-product tables)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam for embedding tables with sparse gradients ("lazy" Adam, like ``torch.optim.SparseAdam``):
    only the rows that have a gradient in this step move, and only their moments decay.
    ``weight_decay`` (a param-group key) is coupled L2: ``wd · w`` is added to the gradient of the
    touched rows.

    The gradient is coalesced once (one sort of the looked-up ids); the rows' parameters and
    moments are gathered into dense U × D blocks, updated with dense in-place ops and scattered
    back, which costs O(U · D) for U distinct rows, whatever the table size.
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"LazyAdam: bad settings lr={lr}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise ValueError("LazyAdam needs sparse gradients (nn.Embedding(sparse=True))")
                g = p.grad.coalesce()
                idx, vals = g.indices()[0], g.values()
                if idx.numel() == 0:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    # first and second moments side by side: one gather and one scatter per step
                    state["moments"] = p.new_zeros(p.shape[0], 2, *p.shape[1:])
                state["step"] += 1
                t = state["step"]
                w = p.index_select(0, idx)
                if wd:
                    vals = vals.add(w, alpha=wd)
                mv = state["moments"].index_select(0, idx)  # U × 2 × D
                m, v = mv[:, 0], mv[:, 1]
                m.lerp_(vals, 1 - b1)
                v.mul_(b2).addcmul_(vals, vals, value=1 - b2)
                state["moments"].index_copy_(0, idx, mv)
                denom = v.sqrt_().div_(math.sqrt(1 - b2**t)).add_(eps)  # in place: mv is stored already
                p.index_copy_(0, idx, w.addcdiv_(m, denom, value=-lr / (1 - b1**t)))
        return loss
