"""Starting a model's first-order term from a fitted logistic regression (not in the paper).

OptInter with ``model.first_order`` is LR plus an MLP over [e^o, e^b] whose output unit starts at
zero (``model.zero_init_output``), so at step 0 it *is* a logistic regression — but one with zero
weights. Trained jointly from there, the first-order weights and the network grow together and
early stopping on the validation AUC picks the best compromise: on the 3.8k–7.5k-row real files
that ended 0.003–0.008 test AUC below a plain LR (the network over-fits before the linear part has
converged). With ``train.first_order_init = "lr"`` (the data-derived default for the OptInter
models) the stage first fits the project's ``lr`` model with *its* data-derived defaults (same
seed, device and threads), copies its weights into the first-order term, and only then trains
the whole model; the re-train keeps that starting point as a candidate (its "epoch 0"): if no
epoch beats its validation AUC, the model ends as the LR it started from.

``lr`` and the first-order term are the same module (:class:`~optinter.layers.embedding.FieldBias`),
so the copy is exact; the network's output unit is zero, so the starting model predicts exactly
what the fitted LR predicts.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from preprocess.feature_map import FeatureMap

from .config import RunConfig, apply_overrides, default_config
from .layers.embedding import FieldBias
from .models.base import Batch, CTRModel
from .train import evaluate, fit

log = logging.getLogger(__name__)

#: TrainConfig keys the LR fit takes from the stage's config (where and how, not what to learn).
SHARED_TRAIN_KEYS = ("seed", "device", "amp", "num_threads", "eval_batch_size", "max_steps_per_epoch")
#: Fitted LR weights per (cache key, feature-map hash, LR settings), the newest few.
_FITTED: dict[tuple[str, str, str], tuple[dict[str, torch.Tensor], int]] = {}
_FITTED_MAX = 4


@dataclass
class WarmStart:
    """The fitted LR the model started from: its validation AUC / log loss, epochs and seconds,
    and (for :func:`keep_better`; None when not asked for) the model's state right after the copy."""

    valid_auc: float
    valid_logloss: float
    epochs: int
    seconds: float
    state: dict[str, torch.Tensor] | None

    def metrics(self) -> dict[str, Any]:
        return {"warm_start_valid_auc": self.valid_auc, "warm_start_valid_logloss": self.valid_logloss,
                "warm_start_epochs": self.epochs, "warm_start_seconds": self.seconds}


def wants_warm_start(model: CTRModel, cfg: RunConfig) -> bool:
    """Whether ``cfg`` asks for it and ``model`` has a first-order term to start."""
    return cfg.train.first_order_init == "lr" and isinstance(getattr(model, "linear", None), FieldBias)


def lr_config(fmap: FeatureMap, cfg: RunConfig) -> RunConfig:
    """The ``lr`` model's data-derived defaults, with :data:`SHARED_TRAIN_KEYS` from ``cfg``."""
    base = default_config(fmap, "lr")
    return apply_overrides(base, {f"train.{k}": getattr(cfg.train, k) for k in SHARED_TRAIN_KEYS})


def warm_start_first_order(
    model: CTRModel, fmap: FeatureMap, cfg: RunConfig,
    loaders: Callable[[CTRModel, RunConfig], Mapping[str, Iterable[Batch]]], device: torch.device,
    valid: Iterable[Batch], cache_key: str | None = None, snapshot: bool = True,
) -> WarmStart:
    """Fit ``lr`` (see the module docstring) and copy its weights into ``model.linear``.

    ``loaders(model, cfg)`` returns a model's ``{"train", "valid"}`` batches (the stage's loader
    factory, called for the LR); ``valid``: ``model``'s own validation batches, on which the start
    is scored. With a ``cache_key`` (e.g. the data folder) the fitted weights are kept in this
    process for the next call with the same key, data and LR settings (the tune stage's trials
    share one LR fit). ``snapshot=False`` skips the copy of the model's state that
    :func:`keep_better` needs (the search never falls back to it). The global RNG is saved and restored, so what the stage draws afterwards
    (dropout masks, shuffles) does not depend on whether it warm-started.
    """
    from .registry import build_model

    t0 = time.perf_counter()
    lcfg = lr_config(fmap, cfg)
    key = (cache_key, fmap.content_hash, repr(lcfg)) if cache_key is not None else None
    if key is not None and key in _FITTED:
        weights, epochs = _FITTED[key]
    else:
        rng = torch.get_rng_state()
        try:
            lr = build_model("lr", fmap, lcfg.model).to(device)
            data = loaders(lr, lcfg)
            res = fit(lr, data["train"], data["valid"], lcfg, None, None)
        finally:
            torch.set_rng_state(rng)
        weights = {k: v.detach().cpu().clone() for k, v in lr.linear.state_dict().items()}
        epochs = res.epochs
        if key is not None:
            while len(_FITTED) >= _FITTED_MAX:
                _FITTED.pop(next(iter(_FITTED)))
            _FITTED[key] = (weights, epochs)
    with torch.no_grad():
        model.linear.load_state_dict(weights)  # type: ignore[union-attr]
    model.to(device)
    start = evaluate(model, valid, device, cfg.train.amp)
    ws = WarmStart(valid_auc=start["auc"], valid_logloss=start["logloss"], epochs=epochs,
                   seconds=time.perf_counter() - t0,
                   state=copy.deepcopy(model.state_dict()) if snapshot else None)
    log.info("first-order term started from a fitted LR: valid AUC %.4f, log loss %.4f (%d epochs, %.1f s)",
             ws.valid_auc, ws.valid_logloss, ws.epochs, ws.seconds)
    return ws


def keep_better(model: CTRModel, ws: WarmStart, trained_valid_auc: float) -> bool:
    """Restore the warm start when training never beat its validation AUC; True if restored."""
    if trained_valid_auc >= ws.valid_auc:
        return False
    if ws.state is None:
        raise ValueError("keep_better needs the warm start's state: call warm_start_first_order(snapshot=True)")
    model.load_state_dict(ws.state)
    log.info("no epoch beat the fitted LR it started from on valid (%.4f < %.4f): keeping the start",
             trained_valid_auc, ws.valid_auc)
    return True
