"""GRDA: generalized regularized dual averaging (Chao & Cheng 2019; Chao et al. 2020), the
optimizer AutoFIS uses for its gates α so that unimportant gates become exactly zero.

For a parameter w with initial value w_0, learning rate γ, and constants c, μ, after n steps::

    a_n = w_0 − γ Σ_{k=1..n} g_k                       (dual average of the gradients)
    ℓ_n = ℓ_{n−1} + c γ^{1/2+μ} (n^μ − (n−1)^μ)         (= c γ^{1/2} (nγ)^μ for a constant γ)
    w_n = sign(a_n) · max(|a_n| − ℓ_n, 0)               (soft threshold)

The threshold ℓ_n grows with n, so a gate whose accumulated gradient does not keep it away from
zero ends at exactly 0. ℓ is accumulated increment by increment, as the reference
implementations (the GRDA authors' and AutoFIS's) do, so a changing γ affects only later steps.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer


class GRDA(Optimizer):
    """``GRDA(params, lr=0.01, c=5e-4, mu=0.8)``; see the module docstring for the update rule."""

    def __init__(self, params: Iterable[Any], lr: float = 0.01, c: float = 5e-4, mu: float = 0.8) -> None:
        if lr <= 0:
            raise ValueError(f"GRDA: lr must be > 0, got {lr}")
        if c < 0:
            raise ValueError(f"GRDA: c must be >= 0, got {c}")
        if not 0.0 < mu < 1.0:
            raise ValueError(f"GRDA: mu must be in (0, 1), got {mu}")
        super().__init__(params, dict(lr=lr, c=c, mu=mu))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, c, mu = group["lr"], group["c"], group["mu"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GRDA does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["accumulator"] = p.detach().clone()  # a_0 = w_0
                    state["l1"] = 0.0
                state["step"] += 1
                n = state["step"]
                acc: torch.Tensor = state["accumulator"]
                acc.add_(p.grad, alpha=-lr)
                state["l1"] += c * lr ** (0.5 + mu) * (n**mu - (n - 1) ** mu)
                p.copy_(torch.sign(acc) * (acc.abs() - state["l1"]).clamp_min(0.0))
        return loss
