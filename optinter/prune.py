"""Pruning the searched architecture on the validation split (not in the paper).

The search (Algorithm 1) trains α on the *training* loss, where memorizing a pair always helps a
little: a cross-product table can fit the noise of the rows it sees, and nothing in that loss
charges for it. On the synthetic data with 23 planted no-interaction pairs the joint search
memorized or factorized 7–13 of them on four of five generator seeds. Whether a pair's
interaction helps *on rows the search did not train on* is a question the validation split can
answer directly, so the search stage asks it, once, after Algorithm 1:

for every pair the searched architecture memorizes or factorizes, compare the searched model's
per-row validation log loss with that pair's combined embedding e^b_k and with e^b_k = 0 (naive),
everything else as searched (argmax weights, eq. 19). The per-row differences
δ_k = loss(naive k) − loss(searched) give a mean Δ_k and a standard error SE_k; the pair keeps
its choice only when Δ_k > z · SE_k (``train.prune_z``, a one-sided test: removing it is
measurably worse), otherwise it becomes naive. Planted interactions sit at z = 10–25, the
no-interaction pairs between −4.4 and +3.4 (five seeds).

Cost: one evaluation pass plus, per candidate pair and row, the network above its first layer —
the first layer is linear, so removing pair k's W input columns changes its pre-activation by
``−x_k W_kᵀ`` (B × W times W × H) instead of a full recomputation. At most ``train.prune_rows``
validation rows are used (the first ones, in split order).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .architecture import Architecture
from .models.base import Batch, CTRModel

log = logging.getLogger(__name__)

@dataclass
class PairAblation:
    """Per candidate pair: mean and standard error of δ = loss(pair naive) − loss(searched), in
    nats per validation row, over ``rows`` rows (``base_logloss``: the searched model's loss)."""

    pairs: list[str]
    delta: np.ndarray
    se: np.ndarray
    rows: int
    base_logloss: float

    def z(self) -> np.ndarray:
        """Δ / SE; where SE = 0, +∞ if Δ > 0, else 0 (a pair whose removal changes nothing)."""
        return np.divide(self.delta, self.se, out=np.where(self.delta > 0, np.inf, 0.0), where=self.se > 0)


def supports_pruning(model: CTRModel) -> bool:
    """Whether ``model`` exposes what :func:`ablate_pairs` needs (OptInter's search model does)."""
    return all(hasattr(model, a) for a in ("mlp_input", "pair_slot", "first_order_logit", "mlp"))


def ablate_pairs(
    model: CTRModel, batches: Iterable[Batch], device: torch.device, candidates: list[int], max_rows: int = 0
) -> PairAblation:
    """Valid-loss change when each pair in ``candidates`` (feature-map pair indices) is made naive.

    ``model`` must be in its final state with eval weights "argmax" set by the caller (or any
    fixed weights: the comparison is against the model as it is). ``max_rows`` > 0 stops after
    that many rows. Runs in float32, no autocast.
    """
    if not supports_pruning(model):
        raise TypeError(f"model {model.name!r} does not support pair ablation")
    fmap = model.feature_map
    mlp = model.mlp  # type: ignore[attr-defined]
    first = mlp.first
    slots = [model.pair_slot(k) for k in candidates]  # type: ignore[attr-defined]
    n = 0
    s1 = np.zeros(len(candidates))  # Σδ and Σδ² per pair, float64
    s2 = np.zeros(len(candidates))
    base_sum = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                if max_rows and n >= max_rows:
                    break
                if max_rows and n + len(b) > max_rows:
                    b = _head(b, max_rows - n)
                b = b.to(device)
                x = model.mlp_input(b).float()  # type: ignore[attr-defined]  # B × K
                y = b.label.float()
                lin = model.first_order_logit(b)  # type: ignore[attr-defined]
                h = first(x)  # B × H
                base = F.binary_cross_entropy_with_logits(mlp.after_first(h) + lin, y, reduction="none")
                base_sum += float(base.sum())
                for j, sl in enumerate(slots):
                    h_k = torch.addmm(h, x[:, sl], first.weight[:, sl].T, alpha=-1.0)  # pair k → 0
                    d = F.binary_cross_entropy_with_logits(mlp.after_first(h_k) + lin, y, reduction="none") - base
                    d64 = d.double()
                    s1[j] += float(d64.sum())
                    s2[j] += float((d64 * d64).sum())
                n += len(y)
    finally:
        model.train(was_training)
    if n < 2:
        raise ValueError(f"pair ablation needs at least 2 validation rows, got {n}")
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0.0) * n / (n - 1)
    return PairAblation(pairs=[fmap.pairs[k].name for k in candidates], delta=mean, se=np.sqrt(var / n), rows=n,
                        base_logloss=base_sum / n)


def _head(b: Batch, k: int) -> Batch:
    """The first ``k`` rows of a batch."""
    return Batch(b.cat[:k], b.cont[:k], b.pairs[:k], b.label[:k], b.multi[:k] if b.multi is not None else None)


def prune_architecture(arch: Architecture, ablation: PairAblation, z_min: float) -> tuple[Architecture, list[str]]:
    """A copy of ``arch`` where every ablated pair with Δ ≤ ``z_min`` · SE is naive; returns it and
    the pruned pairs. ``arch.meta["prune"]`` records the rule and every candidate's Δ, SE and z;
    ``arch.probs`` stay the searched α probabilities."""
    if not math.isfinite(z_min):
        raise ValueError(f"train.prune_z must be finite, got {z_min}")
    z = ablation.z()
    pos = {p: k for k, p in enumerate(arch.pairs)}
    choices = list(arch.choices)
    pruned: list[str] = []
    per_pair: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(ablation.pairs):
        keep = bool(z[j] > z_min)
        per_pair[name] = {"searched": choices[pos[name]], "delta": float(ablation.delta[j]),
                          "se": float(ablation.se[j]), "z": float(z[j]), "kept": keep}
        if not keep:
            choices[pos[name]] = "naive"
            pruned.append(name)
    out = Architecture(pairs=list(arch.pairs), choices=choices, probs=arch.probs, model=arch.model,
                       source=arch.source, feature_map_hash=arch.feature_map_hash, meta=dict(arch.meta))
    out.meta["prune"] = {"rule": "valid", "z_min": z_min, "rows": ablation.rows,
                         "base_logloss": ablation.base_logloss, "candidates": len(ablation.pairs),
                         "pruned": pruned, "pairs": per_pair}
    return out, pruned


def prune_on_valid(
    model: CTRModel, arch: Architecture, batches: Iterable[Batch], device: torch.device, z_min: float, max_rows: int
) -> Architecture:
    """Ablate every non-naive pair of ``arch`` on ``batches`` with the model's argmax weights and
    return the pruned architecture (see the module docstring). The model's α of pruned pairs is
    set to naive, so evaluating the searched model afterwards scores the pruned architecture."""
    candidates = [k for k, c in enumerate(arch.choices) if c != "naive"]
    if not candidates:
        arch.meta["prune"] = {"rule": "valid", "z_min": z_min, "rows": 0, "candidates": 0, "pruned": [], "pairs": {}}
        return arch
    model.set_eval_weights("argmax")  # type: ignore[attr-defined]
    try:
        ablation = ablate_pairs(model, batches, device, candidates, max_rows)
    finally:
        model.set_eval_weights("expected")  # type: ignore[attr-defined]
    pruned_arch, pruned = prune_architecture(arch, ablation, z_min)
    if pruned:
        model.force_choice([arch.pairs.index(p) for p in pruned], "naive")  # type: ignore[attr-defined]
    m, f, nv = pruned_arch.counts()
    log.info("prune on valid (%d rows, z > %g): %d of %d searched pairs made naive → %d memorize, %d factorize, "
             "%d naive", ablation.rows, z_min, len(pruned), len(candidates), m, f, nv)
    return pruned_arch
