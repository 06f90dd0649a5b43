"""The classifier MLP of eq. 9–12: a^{l+1} = LN(relu(W^l a^l + b^l)), then a linear output unit.

Xavier-uniform weights, zero biases (section III-A4); ``zero_output`` starts the output unit at
zero weights, so the network adds nothing until training finds a use for it. The sigmoid of eq. 12 is left to the loss
(``BCEWithLogitsLoss``) for numerical stability; the module returns logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .norm import LayerNorm


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
                layers.append(LayerNorm(h))
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
        return self._head(self.body(x))

    @property
    def first(self) -> nn.Linear:
        """The first linear layer (needs at least one hidden layer)."""
        first = self.body[0] if len(self.body) else None
        if not isinstance(first, nn.Linear):
            raise ValueError("this MLP has no hidden layer")
        return first

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the network from the first layer's pre-activation h (B × hidden[0]):
        ``forward(x) == after_first(first(x))``. Lets a caller change a few input columns by
        updating h (the first layer is linear) instead of recomputing it."""
        return self._head(self.body[1:](h))

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            h = self.out(h)
        return h.squeeze(-1) if self.squeeze else h
