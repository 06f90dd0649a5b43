"""What every CTR model in the registry is: a ``torch.nn.Module`` over a :class:`Batch`.

Shapes: B = batch size, Fc = categorical fields, Fn = continuous fields, F = Fc + Fn,
P = pairs (cross-product features), D = embedding size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from preprocess.feature_map import FeatureMap


@dataclass
class Batch:
    """One mini-batch, already on the model's device.

    cat:   B × Fc int64 ids of the categorical fields (order of ``FeatureMap.categorical``)
    cont:  B × Fn float32 min-max scaled continuous values (order of ``FeatureMap.continuous``)
    pairs: B × P  int64 ids of the cross-product features (order of ``FeatureMap.pairs``);
           an empty B × 0 tensor when the model does not read pairs
    label: B float32 0/1
    """

    cat: torch.Tensor
    cont: torch.Tensor
    pairs: torch.Tensor
    label: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(
            self.cat.to(device, non_blocking=non_blocking),
            self.cont.to(device, non_blocking=non_blocking),
            self.pairs.to(device, non_blocking=non_blocking),
            self.label.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return int(self.label.shape[0])


class CTRModel(nn.Module):
    """Base class: ``forward(batch) -> logits`` of shape B (pre-sigmoid).

    Subclasses set ``uses_pairs = True`` when they read ``batch.pairs`` (the data loader then
    reads the pair columns; otherwise it skips them, which is much faster).
    ``param_groups`` splits parameters for the optimizer(s) following Table IV of the paper:
    ``"orig"`` (original-feature embeddings + network: lr_o, l2_o), ``"cross"`` (memorized
    cross-product embeddings: lr_c, l2_c) and ``"arch"`` (architecture parameters α: lr_a).
    """

    uses_pairs: bool = False
    name: str = "base"

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__()
        self.feature_map = feature_map

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group name; default: everything is ``"orig"``."""
        return {"orig": [p for p in self.parameters() if p.requires_grad]}

    def regularization(self) -> torch.Tensor | None:
        """Extra loss term added during training (e.g. l2 on looked-up embeddings); None if none."""
        return None

    def num_params(self) -> int:
        """Number of scalars in the allocated parameter tensors."""
        return sum(p.numel() for p in self.parameters())

    def extra_metrics(self) -> dict[str, Any]:
        """Model-specific figures for metrics.json (e.g. architecture counts)."""
        return {}
