"""What every CTR model in the registry is: a ``torch.nn.Module`` over a :class:`Batch`.

Shapes: B = batch size, Fc = (univalent) categorical fields, Fm = multivalent fields, L = the
longest id list of a multivalent field (``max(max_len)``), Fn = continuous fields,
F = Fc + Fm + Fn, P = pairs (cross-product features), D = embedding size.

Search-model protocol
---------------------
Models that *search* an architecture before being re-trained (OptInter, AutoFIS) share one
search → re-train machinery (:mod:`optinter.search`, :mod:`optinter.stages`). Such a model:

* returns its architecture parameters (OptInter's α, AutoFIS's gates) from
  :meth:`CTRModel.arch_parameters`; they form the ``"arch"`` group of
  :meth:`CTRModel.named_param_groups` and are updated by the optimizer returned by
  :meth:`CTRModel.make_arch_optimizer` (default ``Adam(lr=train.lr_a)``; AutoFIS overrides it
  with GRDA). Θ (every other parameter) is updated by the ordinary optimizer, on the same
  mini-batch (Algorithm 1) or alternately on validation batches (``train.bilevel``);
* may take a temperature: the training loop calls :meth:`CTRModel.set_temperature` between
  steps (the search's τ schedule :func:`optinter.search.tau_at`, ``model.tau_start → model.tau_end``); ``forward`` never mutates state;
* turns its learned parameters into an :class:`optinter.architecture.Architecture` with
  :meth:`CTRModel.derive_architecture` (each pair → "memorize" / "factorize" / "naive").

It is registered with ``@register_search_model("name")`` in :mod:`optinter.registry`; the
re-train model (``@register_model("name", needs_arch=True)``) is built from that architecture
with ``build_model("name", fmap, cfg, arch=arch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from preprocess.feature_map import FeatureMap

if TYPE_CHECKING:  # pragma: no cover
    from ..architecture import Architecture
    from ..config import TrainConfig


@dataclass
class Batch:
    """One mini-batch, already on the model's device.

    cat:   B × Fc int64 ids of the categorical fields (order of ``FeatureMap.categorical``)
    cont:  B × Fn float32 min-max scaled continuous values (order of ``FeatureMap.continuous``)
    pairs: B × P' int64 ids of the cross-product features the model reads, in the order of
           ``model.required_pairs()`` (all of ``FeatureMap.pairs`` by default); an empty
           B × 0 tensor when the model does not read pairs
    label: B float32 0/1
    multi: B × Fm × L int64 token ids of the multivalent fields (order of
           ``FeatureMap.multivalent``), each row's list left-aligned and padded with PAD = 0;
           B × 0 × 0 when the feature map has none (the default when not given)
    """

    cat: torch.Tensor
    cont: torch.Tensor
    pairs: torch.Tensor
    label: torch.Tensor
    multi: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.multi is None:
            self.multi = torch.zeros(self.label.shape[0], 0, 0, dtype=torch.long, device=self.label.device)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(
            self.cat.to(device, non_blocking=non_blocking),
            self.cont.to(device, non_blocking=non_blocking),
            self.pairs.to(device, non_blocking=non_blocking),
            self.label.to(device, non_blocking=non_blocking),
            self.multi.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return int(self.label.shape[0])


class CTRModel(nn.Module):
    """Base class: ``forward(batch) -> logits`` of shape B (pre-sigmoid).

    Subclasses set ``uses_pairs = True`` when they read ``batch.pairs`` (the data loader then
    reads the pair columns named by :meth:`required_pairs`; otherwise it skips them, which is
    much faster).
    ``named_param_groups`` splits parameters for the optimizer(s) following Table IV of the paper:
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

    def required_pairs(self) -> list[str]:
        """Names of the pair columns this model reads, in the column order of ``batch.pairs``.

        Default: every pair of the feature map when ``uses_pairs`` else none. A model that reads
        only some pairs (re-trained OptInter: the memorized ones) overrides this.
        """
        return [p.name for p in self.feature_map.pairs] if self.uses_pairs else []

    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group name; default: architecture parameters are ``"arch"``, the rest ``"orig"``."""
        arch = {id(p) for p in self.arch_parameters()}
        groups: dict[str, list[nn.Parameter]] = {
            "orig": [p for p in self.parameters() if p.requires_grad and id(p) not in arch]
        }
        if arch:
            groups["arch"] = list(self.arch_parameters())
        return groups

    def output_bias(self) -> nn.Parameter:
        """The scalar bias added to every logit: the first-order term's global bias when the model
        has one (``self.linear``, a :class:`~optinter.layers.embedding.FieldBias`), else the
        output unit of its MLP (``self.mlp``). Models with another output override this."""
        from ..layers.embedding import FieldBias
        from ..layers.mlp import MLP

        lin = getattr(self, "linear", None)
        if isinstance(lin, FieldBias):
            return lin.bias
        mlp = getattr(self, "mlp", None)
        if isinstance(mlp, MLP) and mlp.out is not None and mlp.out_dim == 1:
            return mlp.out.bias
        raise NotImplementedError(f"model {type(self).__name__}: no output bias to initialise")

    @torch.no_grad()
    def init_base_rate(self, pos_ratio: float) -> None:
        """Start from the base rate: :meth:`output_bias` = log(p / (1 − p)) of the train split
        (``p`` clipped to [1e-6, 1 − 1e-6]), so the first steps learn structure rather than the
        click rate (at p = 1% a zero bias costs ~0.64 nats of log loss per row more than the
        constant base rate)."""
        p = min(max(float(pos_ratio), 1e-6), 1 - 1e-6)
        self.output_bias().fill_(math.log(p / (1 - p)))

    def regularization(self) -> torch.Tensor | None:
        """Extra loss term added during training (e.g. l2 on looked-up embeddings); None if none."""
        return None

    def num_params(self) -> int:
        """Number of scalars in the allocated parameter tensors."""
        return sum(p.numel() for p in self.parameters())

    def extra_metrics(self) -> dict[str, Any]:
        """Model-specific figures for metrics.json (e.g. architecture counts)."""
        return {}

    # ---- search-model protocol (see the module docstring) -------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """Architecture parameters (α, gates); empty for models that do not search."""
        return []

    @property
    def is_search_model(self) -> bool:
        return len(self.arch_parameters()) > 0

    def make_arch_optimizer(self, train_cfg: "TrainConfig") -> torch.optim.Optimizer | None:
        """Optimizer of the architecture parameters: ``Adam(lr=train.lr_a, eps=train.eps)``.

        None for models without architecture parameters. Override for another rule (GRDA).
        """
        params = self.arch_parameters()
        if not params:
            return None
        return torch.optim.Adam(params, lr=train_cfg.lr_a, eps=train_cfg.eps)

    def set_temperature(self, tau: float) -> None:
        """Relaxation temperature τ, set by the training loop between steps (default: ignored)."""

    def derive_architecture(self) -> "Architecture":
        """The discrete architecture chosen by the learned architecture parameters."""
        raise NotImplementedError(f"model {self.name!r} is not a search model")
