"""The search stage (Algorithm 1) and the "no re-train" ablation (Table IX).

:func:`search` trains a search model (any model implementing the search-model protocol of
:mod:`optinter.models.base`: OptInter's α, AutoFIS's gates): Θ and the architecture parameters
are updated on the same mini-batch with separate optimizers (lr_o / lr_c for Θ, lr_a for α), or
alternately (Θ on train, α on validation batches) when ``train.bilevel`` is set; the
temperature τ follows :func:`tau_at` over the search's steps. The model selected on the
validation AUC gives the architecture (argmax per pair, eq. 19); with
``train.search_prune = "valid"`` (the data-derived default) the pairs whose removal does not
measurably raise the validation loss are then made naive (:mod:`optinter.prune`).

:func:`evaluate_without_retrain` scores the searched model directly, with the one-hot argmax
choice per pair (``mode="argmax"``, the discrete architecture the re-train would use; the
default) or the expected weights softmax(α/τ_end) (``mode="expected"``).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import torch

from .architecture import Architecture
from .config import ModelConfig, RunConfig, apply_overrides
from .models.base import Batch, CTRModel
from .prune import prune_on_valid, supports_pruning
from .tracking import Tracker
from .train import FitResult, evaluate, fit

log = logging.getLogger(__name__)


def search(
    model: CTRModel,
    train_data: Any,
    valid_data: Iterable[Batch],
    cfg: RunConfig,
    work_dir: str | Path | None = None,
    tracker: Tracker | None = None,
    *,
    bilevel_data: Any | None = None,
    fingerprint: str = "",
) -> tuple[Architecture, FitResult]:
    """Run Algorithm 1 for ``cfg.train.search_epochs`` epochs; return (architecture, fit result).

    ``bilevel_data`` (shuffled validation batches) is required when ``cfg.train.bilevel``.
    """
    if not model.is_search_model:
        raise ValueError(f"model {model.name!r} has no architecture parameters; it cannot be searched")
    if cfg.train.bilevel and bilevel_data is None:
        raise ValueError("train.bilevel=true needs validation batches for the α updates (bilevel_data)")
    result = fit(
        model,
        train_data,
        valid_data,
        search_run_config(cfg),
        work_dir,
        tracker,
        epochs=cfg.train.search_epochs,
        bilevel_data=bilevel_data if cfg.train.bilevel else None,
        fingerprint=fingerprint,
        metric_prefix="search_",
        temperature=partial(tau_at, cfg.model),
    )
    arch = model.derive_architecture()
    arch.source = "bilevel" if cfg.train.bilevel else "search"
    arch.meta.update({"best_epoch": result.best_epoch, "search_valid_auc": result.best_valid_auc})
    m, f, n = arch.counts()
    log.info("search: %d memorize, %d factorize, %d naive (best epoch %d)", m, f, n, result.best_epoch)
    warn_if_undecided(arch, cfg)
    if cfg.train.search_prune == "valid":
        if supports_pruning(model):
            device = next(model.parameters()).device
            arch = prune_on_valid(model, arch, valid_data, device, cfg.train.prune_z, cfg.train.prune_rows)
        else:
            log.info("train.search_prune=valid: model %r has no per-pair slots to ablate; not pruned", model.name)
    return arch, result


def tau_at(mcfg: ModelConfig, progress: float) -> float:
    """The search's temperature after a fraction ``progress`` ∈ [0, 1] of its steps: exponential
    interpolation ``tau_start · (tau_end / tau_start) ** progress`` (``fit`` sets it before every step)."""
    p = min(max(progress, 0.0), 1.0)
    return float(mcfg.tau_start * (mcfg.tau_end / mcfg.tau_start) ** p)


def search_run_config(cfg: RunConfig) -> RunConfig:
    """The settings the search trains with: Θ's learning rates constant (``lr_decay`` = 1;
    decaying them while α still moves lets α lock in early memorize choices: on the synthetic
    data 6 of 23 no-interaction pairs ended naive with a halving every epoch, 18 without), and
    ``train.search_lr`` (when set) for every group of Θ."""
    t = cfg.train
    over: dict[str, Any] = {"train.lr_decay": 1.0, "train.lr_schedule": "epoch"}
    if t.search_lr > 0:
        over.update({"train.lr_o": t.search_lr, "train.lr_c": t.search_lr, "train.lr_first": t.search_lr})
    return apply_overrides(cfg, over)


def warn_if_undecided(arch: Architecture, cfg: RunConfig) -> dict[str, Any]:
    """Log how decided the searched architecture is; a loud warning when it is not (most pairs'
    probabilities still close together, so the argmax is initialisation noise)."""
    d = arch.decision()
    if d["decided"]:
        log.info("search decided: %.0f%% of pairs clear (mean max probability %.3f, mean entropy %.3f)",
                 100 * d["clear_share"], d["max_prob_mean"], d["entropy_mean"])
    else:
        log.warning(
            "SEARCH UNDECIDED: only %d of %d pairs have a clear choice (mean max probability %.3f, "
            "mean entropy %.3f of uniform); the architecture is close to a coin flip. α moved too "
            "little: raise train.lr_a (now %g) or train.search_epochs (now %d), or use the defaults "
            "derived from the data (no --paper).",
            d["n_clear"], len(arch.pairs), d["max_prob_mean"], d["entropy_mean"], cfg.train.lr_a,
            cfg.train.search_epochs)
    return d


def evaluate_without_retrain(
    model: CTRModel, batches: Iterable[Batch], device: torch.device, mode: str = "argmax", amp: bool = False
) -> dict[str, float]:
    """AUC / log loss of the searched model itself (Table IX "w.o." re-train).

    ``mode="argmax"``: each pair uses only its argmax candidate (one-hot weights, no noise);
    ``"expected"``: the deterministic relaxed weights softmax(α/τ). The model's eval-weight
    setting is restored afterwards.
    """
    if not hasattr(model, "set_eval_weights"):
        return evaluate(model, batches, device, amp)
    model.set_eval_weights(mode)
    try:
        return evaluate(model, batches, device, amp)
    finally:
        model.set_eval_weights("expected")
