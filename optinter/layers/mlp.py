"""The classifier MLP of eq. 9–12: a^{l+1} = LN(relu(W^l a^l + b^l)), then a linear output unit.

Xavier-uniform weights, zero biases (section III-A4); ``zero_output`` starts the output unit at
zero weights, so the network adds nothing until training finds a use for it. The sigmoid of eq. 12 is left to the loss
(``BCEWithLogitsLoss``) for numerical stability; the module returns logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """in_dim → hidden dims (Linear → ReLU → LayerNorm [→ Dropout]) → ``out_dim`` (linear).

    forward: B × in_dim → B × out_dim (``out_dim=1`` is squeezed to B when ``squeeze``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int = 1,
        layer_norm: bool = True,
        dropout: float = 0.0,
        squeeze: bool = True,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            lin = nn.Linear(d, h)
            layers += [lin, nn.ReLU()]
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(d, out_dim) if out_dim > 0 else None
        self.out_dim = out_dim if out_dim > 0 else d
        self.squeeze = squeeze and out_dim == 1
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_output and self.out is not None:
            nn.init.zeros_(self.out.weight)  # the network starts silent: output = bias only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B × in_dim → B (or B × out_dim)."""
        h = self.body(x)
        if self.out is not None:
            h = self.out(h)
        return h.squeeze(-1) if self.squeeze else h
