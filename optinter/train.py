"""The training loop, in small separate pieces: optimizers, one step, evaluation, checkpoints, fit.

* :func:`make_optimizers` — Adam per parameter group (Table IV: ``orig`` lr_o/l2_o, ``cross``
  lr_c/l2_c) and the model's own architecture optimizer (``arch``: lr_a) for search models;
* :func:`train_step` / :func:`bilevel_step` — one update (Algorithm 1: Θ and α on the same
  mini-batch; bi-level: Θ on a train batch, then α on a validation batch);
* :func:`predict` / :func:`evaluate` — probabilities, AUC and log loss over a split;
* :func:`save_checkpoint` / :func:`load_checkpoint` — the state after each epoch, so an
  interrupted run resumes where it stopped (same result as an uninterrupted run on CPU);
* :func:`fit` — epochs with early stopping and model selection on the validation AUC only.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, RunConfig, TrainConfig
from .metrics import auc, log_loss
from .models.base import Batch, CTRModel
from .tracking import Tracker, as_tracker

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"


# ---- setup -----------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda when available, else cpu; otherwise ``torch.device(name)`` (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global RNG."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


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


def _sparse_params(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}


def make_optimizers(model: CTRModel, tcfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """``{"model": Adam, "sparse": LazyAdam, "arch": model.make_arch_optimizer(...)}``.

    Parameter groups follow Table IV: ``orig`` (lr_o, l2_o) and ``cross`` (lr_c, l2_c); ``first``
    (an optional first-order term: lr_first, or lr_o when 0; l2_o); other groups
    than ``orig``/``cross``/``first``/``arch`` get the ``orig`` settings. L2 is coupled weight decay.
    Embedding tables with ``sparse=True`` (cross-product tables, ``model.sparse_cross``) go to
    :class:`LazyAdam` with the same per-group settings. ``sparse`` and ``arch`` are present only
    when needed (``arch``: search models).
    """
    groups = model.named_param_groups()
    sparse_ids = _sparse_params(model)
    settings = {"orig": (tcfg.lr_o, tcfg.l2_o), "cross": (tcfg.lr_c, tcfg.l2_c),
                "first": (tcfg.lr_first or tcfg.lr_o, tcfg.l2_o)}
    dense_groups, sparse_groups = [], []
    for name, params in groups.items():
        if name == "arch" or not params:
            continue
        lr, wd = settings.get(name, settings["orig"])
        dense = [p for p in params if id(p) not in sparse_ids]
        sparse = [p for p in params if id(p) in sparse_ids]
        if dense:
            dense_groups.append({"params": dense, "lr": lr, "weight_decay": wd, "name": name})
        if sparse:
            sparse_groups.append({"params": sparse, "lr": lr, "weight_decay": wd, "name": name})
    out: dict[str, torch.optim.Optimizer] = {}
    if dense_groups:
        # fused: one kernel over all tensors (CPU and CUDA), ~4x faster than the per-tensor loop
        out["model"] = torch.optim.Adam(dense_groups, eps=tcfg.eps, fused=True)
    if sparse_groups:
        out["sparse"] = LazyAdam(sparse_groups, eps=tcfg.eps)
    arch_opt = model.make_arch_optimizer(tcfg)
    if arch_opt is not None:
        out["arch"] = arch_opt
    return out


def tau_at(mcfg: ModelConfig, progress: float) -> float:
    """Temperature after a fraction ``progress`` ∈ [0, 1] of the search: exponential
    interpolation ``tau_start · (tau_end / tau_start) ** progress``."""
    p = min(max(progress, 0.0), 1.0)
    return float(mcfg.tau_start * (mcfg.tau_end / mcfg.tau_start) ** p)


class EmbeddingPenalty:
    """L2 on the embedding rows *looked up* in the training batch (the authors' code; Table IV
    l2 of the embeddings, applied lazily, so rare values are not shrunk on steps that never see
    them): ``Σ_tables coef · Σ_{b, k} ‖e_{b,k}‖² / B`` over every ``nn.Embedding`` output of the
    forward pass, ``coef = train.emb_l2_c`` for tables of the ``"cross"`` parameter group and
    ``train.emb_l2_o`` for the others (original-feature embeddings, first-order weights).

    Implemented with forward hooks, so it works for every model without model code; outputs are
    recorded only in training mode with gradients enabled. ``pop()`` returns the penalty of the
    forward passes since the last call (None when nothing was recorded or both coefficients are 0).
    """

    def __init__(self, model: nn.Module, tcfg: TrainConfig) -> None:
        self._terms: list[torch.Tensor] = []
        self._handles: list[Any] = []
        if not (tcfg.emb_l2_o or tcfg.emb_l2_c):
            return
        groups = model.named_param_groups() if hasattr(model, "named_param_groups") else {}
        cross = {id(p) for p in groups.get("cross", [])}
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                coef = tcfg.emb_l2_c if id(m.weight) in cross else tcfg.emb_l2_o
                if coef > 0:
                    self._handles.append(m.register_forward_hook(self._hook(coef)))

    def _hook(self, coef: float) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                rows = output.shape[0] if output.ndim > 1 else 1
                self._terms.append(coef * output.float().pow(2).sum() / rows)
        return hook

    def pop(self) -> torch.Tensor | None:
        terms, self._terms = self._terms, []
        return torch.stack(terms).sum() if terms else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._terms = []


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


# ---- steps -----------------------------------------------------------------------------------------
def batch_loss(model: CTRModel, batch: Batch, amp: bool = False,
               penalty: EmbeddingPenalty | None = None) -> torch.Tensor:
    """Mean BCE-with-logits (eq. 13) plus the model's regularization term (and the looked-up
    embedding L2 of ``penalty``, when given)."""
    device = batch.label.device
    with _autocast(device, amp):
        logits = model(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch.label)
    reg = model.regularization()
    if reg is not None:
        loss = loss + reg
    pen = penalty.pop() if penalty is not None else None
    return loss + pen if pen is not None else loss


def _zero(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)


def train_step(
    model: CTRModel, batch: Batch, optimizers: dict[str, torch.optim.Optimizer], amp: bool = False,
    penalty: EmbeddingPenalty | None = None,
) -> float:
    """One joint update (Algorithm 1 lines 3–6): one loss, Θ and α (if any) stepped together."""
    _zero(optimizers)
    loss = batch_loss(model, batch, amp, penalty)
    loss.backward()
    for opt in optimizers.values():
        opt.step()
    return float(loss.detach())


def bilevel_step(
    model: CTRModel,
    batch: Batch,
    valid_batch: Batch,
    optimizers: dict[str, torch.optim.Optimizer],
    amp: bool = False,
    penalty: EmbeddingPenalty | None = None,
) -> float:
    """Alternating (first-order DARTS) update: Θ on the train batch, then α on a validation batch."""
    _zero(optimizers)
    loss = batch_loss(model, batch, amp, penalty)
    loss.backward()
    for k, opt in optimizers.items():
        if k != "arch":
            opt.step()
    _zero(optimizers)
    batch_loss(model, valid_batch, amp, penalty).backward()
    optimizers["arch"].step()
    return float(loss.detach())


# ---- evaluation ------------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    model: CTRModel, batches: Iterable[Batch], device: torch.device, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, click probabilities) over ``batches`` in order, model in eval mode."""
    was_training = model.training
    model.eval()
    ys, ps = [], []
    try:
        for b in batches:
            b = b.to(device)
            with _autocast(device, amp):
                logits = model(b)
            ys.append(b.label.cpu().numpy())
            ps.append(torch.sigmoid(logits.float()).cpu().numpy())
    finally:
        model.train(was_training)
    if not ys:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(ys), np.concatenate(ps)


def evaluate(model: CTRModel, batches: Iterable[Batch], device: torch.device, amp: bool = False) -> dict[str, float]:
    """``{"auc", "logloss", "rows"}`` of the model over ``batches``."""
    y, p = predict(model, batches, device, amp)
    return {"auc": auc(y, p), "logloss": log_loss(y, p), "rows": float(len(y))}


# ---- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (write to a temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# ---- fit -------------------------------------------------------------------------------------------
@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_auc: float
    valid_logloss: float
    seconds: float
    samples: int
    samples_per_s: float
    tau: float | None = None


@dataclass
class FitResult:
    """What :func:`fit` returns; the model holds the best (validation-AUC) weights afterwards."""

    best_epoch: int
    best_valid_auc: float
    best_valid_logloss: float
    epochs: int
    seconds: float
    samples_per_s: float
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _optimizer_states(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """A detached CPU copy of every optimizer's state (``lr_schedule="plateau"`` goes back to it)."""
    def copy(v: Any) -> Any:
        if torch.is_tensor(v):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: copy(x) for k, x in v.items()}
        if isinstance(v, list):
            return [copy(x) for x in v]
        return v

    return {k: copy(o.state_dict()) for k, o in optimizers.items()}


def _restore_best(
    model: CTRModel, optimizers: dict[str, torch.optim.Optimizer], best_state: dict[str, Any] | None,
    best_opt_state: dict[str, Any] | None, best_path: Path | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Load the best epoch's weights and optimizer state (from memory, or ``best.pt`` after a
    resume); the learning rates are set again at the start of the next epoch."""
    if best_state is None and best_path is not None and best_path.exists():
        ck = load_checkpoint(best_path) or {}
        best_state, best_opt_state = ck.get("model"), ck.get("optimizers")
    if best_state is not None:
        model.load_state_dict(best_state)
    if best_opt_state is not None:
        for k, opt in optimizers.items():
            if k in best_opt_state:
                opt.load_state_dict(best_opt_state[k])
    return best_state, best_opt_state


#: Per-epoch metrics :func:`fit` logs at steps 1..epochs (keys prefixed with its ``metric_prefix``).
EPOCH_METRICS = ("train_loss", "valid_auc", "valid_logloss", "samples_per_s", "tau")
#: The final figure of a per-epoch metric is logged under its own name, not as one more point of the curve.
FINAL_METRIC_NAMES = {"valid_auc": "best_valid_auc", "valid_logloss": "best_valid_logloss",
                      "samples_per_s": "mean_samples_per_s"}


def final_metric_name(key: str, prefixes: Iterable[str] = ("",)) -> str:
    """The name under which a final figure ``key`` is logged after :func:`fit` ran with each of
    ``prefixes``: ``valid_auc`` → ``best_valid_auc`` (``search_valid_auc`` → ``search_best_valid_auc``)
    when that run logged a ``valid_auc`` curve; other keys unchanged."""
    for p in prefixes:
        base = key[len(p):] if key.startswith(p) else None
        if base in FINAL_METRIC_NAMES:
            return p + FINAL_METRIC_NAMES[base]
    return key


def _cycle(loader: Any, train_epoch: int) -> Iterator[Batch]:
    """Endless validation batches for the bi-level α updates; the order depends only on the
    training epoch (so a resumed run sees the same batches)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(1_000_003 * (train_epoch + 1) + epoch)
        n = 0
        for b in loader:
            n += 1
            yield b
        if n == 0:
            raise ValueError("validation data is empty; the bi-level search needs validation batches")
        epoch += 1


def fit(
    model: CTRModel,
    train_data: Any,
    valid_data: Iterable[Batch],
    cfg: RunConfig,
    work_dir: str | Path | None = None,
    tracker: Tracker | None = None,
    *,
    epochs: int | None = None,
    bilevel_data: Any | None = None,
    fingerprint: str = "",
    metric_prefix: str = "",
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` with early stopping on the validation AUC; returns with the best weights loaded.

    ``train_data``: a :class:`~optinter.data.ParquetBatches` (or any iterable of batches with
    ``set_epoch``); ``valid_data``: batches of the validation split. ``epochs`` defaults to
    ``cfg.train.epochs``. A search model (``model.is_search_model``) also updates its
    architecture parameters: jointly on the same batch, or, when ``bilevel_data`` (shuffled
    validation batches) is given, alternately. Its temperature follows :func:`tau_at`.
    ``work_dir``: where ``checkpoint.pt`` (after every epoch) and ``best.pt`` live; an existing
    checkpoint with the same ``fingerprint`` is resumed. ``on_epoch_end`` is called after each
    epoch's checkpoint (tests use it to simulate an interruption).
    """
    tcfg = cfg.train
    n_epochs = epochs or tcfg.epochs
    device = resolve_device(tcfg.device)
    tr = as_tracker(tracker)
    model.to(device)
    optimizers = make_optimizers(model, tcfg)
    base_lrs = {k: [g["lr"] for g in opt.param_groups] for k, opt in optimizers.items() if k != "arch"}
    penalty = EmbeddingPenalty(model, tcfg)
    search = model.is_search_model
    if bilevel_data is not None and "arch" not in optimizers:
        raise ValueError("bi-level training needs a search model with architecture parameters")
    steps_per_epoch = len(train_data)
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tcfg.max_steps_per_epoch)
    total_steps = max(1, n_epochs * steps_per_epoch)

    wd = Path(work_dir) if work_dir is not None else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
    ckpt_path = wd / CHECKPOINT_FILE if wd is not None else None
    best_path = wd / BEST_FILE if wd is not None else None

    history: list[EpochRecord] = []
    best = {"epoch": -1, "auc": -math.inf, "logloss": math.nan}
    bad_epochs = 0
    start_epoch = 0
    step = 0
    lr_scale = 1.0  # lr_schedule="plateau": product of the decays so far
    plateau = tcfg.lr_schedule == "plateau"
    best_state: dict[str, torch.Tensor] | None = None
    best_opt_state: dict[str, Any] | None = None
    resumed_from: int | None = None
    ck = load_checkpoint(ckpt_path) if (ckpt_path is not None and tcfg.checkpoint) else None
    if ck is not None:
        if ck.get("fingerprint") != fingerprint:
            log.warning("%s: checkpoint of another run (fingerprint differs); starting fresh", ckpt_path)
        else:
            model.load_state_dict(ck["model"])
            for k, opt in optimizers.items():
                opt.load_state_dict(ck["optimizers"][k])
            torch.set_rng_state(ck["torch_rng"])
            history = [EpochRecord(**r) for r in ck["history"]]
            best, bad_epochs, step = ck["best"], ck["bad_epochs"], ck["step"]
            lr_scale = float(ck.get("lr_scale", 1.0))
            start_epoch = ck["epoch"] + 1
            resumed_from = ck["epoch"]
            log.info("%sresuming from %s after epoch %d", metric_prefix, ckpt_path, ck["epoch"] + 1)
            if ck.get("stopped"):
                start_epoch = n_epochs

    try:
        for epoch in range(start_epoch, n_epochs):
            # train.lr_decay: a function of the epoch (or of the plateaus so far), so resuming is exact
            scale = lr_scale if plateau else tcfg.lr_decay**epoch
            for k, lrs in base_lrs.items():
                for g, lr in zip(optimizers[k].param_groups, lrs):
                    g["lr"] = lr * scale
            bilevel_iter = _cycle(bilevel_data, epoch) if bilevel_data is not None else None
            if hasattr(train_data, "set_epoch"):
                train_data.set_epoch(epoch)
            model.train()
            t0 = time.perf_counter()
            last_log = t0
            loss_sum, n_seen, n_steps = 0.0, 0, 0
            tau = None
            for batch in train_data:
                if tcfg.max_steps_per_epoch and n_steps >= tcfg.max_steps_per_epoch:
                    break
                if search:
                    tau = tau_at(cfg.model, step / total_steps)
                    model.set_temperature(tau)
                batch = batch.to(device, non_blocking=True)
                if bilevel_iter is not None:
                    loss = bilevel_step(model, batch, next(bilevel_iter).to(device), optimizers, tcfg.amp, penalty)
                else:
                    loss = train_step(model, batch, optimizers, tcfg.amp, penalty)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"{metric_prefix}training loss is {loss} at epoch {epoch + 1}, step {n_steps}")
                loss_sum += loss * len(batch)
                n_seen += len(batch)
                n_steps += 1
                step += 1
                now = time.perf_counter()
                if now - last_log > 30:
                    log.info("%sepoch %d: %d/%d steps, loss %.5f, %.0f samples/s", metric_prefix, epoch + 1,
                             n_steps, steps_per_epoch, loss_sum / n_seen, n_seen / (now - t0))
                    last_log = now
            train_secs = time.perf_counter() - t0
            if search:
                model.set_temperature(tau_at(cfg.model, step / total_steps))
            ev = evaluate(model, valid_data, device, tcfg.amp)
            rec = EpochRecord(
                epoch=epoch + 1,
                train_loss=loss_sum / max(n_seen, 1),
                valid_auc=ev["auc"],
                valid_logloss=ev["logloss"],
                seconds=train_secs,
                samples=n_seen,
                samples_per_s=n_seen / train_secs if train_secs > 0 else 0.0,
                tau=tau,
            )
            history.append(rec)
            log.info(
                "%sepoch %d/%d: loss %.5f, valid AUC %.5f, valid logloss %.5f, %.0f samples/s%s",
                metric_prefix, epoch + 1, n_epochs, rec.train_loss, rec.valid_auc, rec.valid_logloss,
                rec.samples_per_s, "" if tau is None else f", tau {tau:.4f}",
            )
            metrics = {"train_loss": rec.train_loss, "valid_auc": rec.valid_auc, "valid_logloss": rec.valid_logloss,
                       "samples_per_s": rec.samples_per_s}
            if tau is not None:
                metrics["tau"] = tau
            tr.log_metrics({metric_prefix + k: v for k, v in metrics.items()}, step=epoch + 1)

            improved = rec.valid_auc > best["auc"] or best["epoch"] < 0
            if improved:
                best = {"epoch": epoch + 1, "auc": rec.valid_auc, "logloss": rec.valid_logloss}
                bad_epochs = 0
                best_state = {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                              for k, v in model.state_dict().items()}
                best_opt_state = _optimizer_states(optimizers) if plateau else None
                if best_path is not None:
                    save_checkpoint(best_path, {"model": model.state_dict(), "epoch": epoch + 1, "fingerprint": fingerprint,
                                                "optimizers": best_opt_state})
            else:
                bad_epochs += 1
            stop = (not improved) and bad_epochs >= max(tcfg.patience, 1)
            if plateau and not improved and not stop:
                lr_scale *= tcfg.lr_decay
                best_state, best_opt_state = _restore_best(model, optimizers, best_state, best_opt_state, best_path)
                log.info("%sno improvement: back to epoch %d's weights, learning rates x%.3g", metric_prefix,
                         best["epoch"], lr_scale)
            if ckpt_path is not None and tcfg.checkpoint:
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(),
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(r) for r in history],
                    "best": best, "bad_epochs": bad_epochs, "step": step, "epoch": epoch,
                    "fingerprint": fingerprint, "stopped": stop, "lr_scale": lr_scale,
                })
            if on_epoch_end is not None:
                on_epoch_end(rec)
            if stop:
                log.info("%searly stop after epoch %d (best epoch %d, valid AUC %.5f)", metric_prefix, epoch + 1,
                         best["epoch"], best["auc"])
                break
    finally:
        penalty.remove()
    # restore the best weights
    if best_state is not None:
        model.load_state_dict(best_state)
    elif best_path is not None and best_path.exists():
        model.load_state_dict(load_checkpoint(best_path)["model"])
    model.to(device)
    total_secs = sum(r.seconds for r in history)
    total_samples = sum(r.samples for r in history)
    return FitResult(
        best_epoch=int(best["epoch"]),
        best_valid_auc=float(best["auc"]),
        best_valid_logloss=float(best["logloss"]),
        epochs=len(history),
        seconds=total_secs,
        samples_per_s=total_samples / total_secs if total_secs > 0 else 0.0,
        history=history,
        resumed_from=resumed_from,
    )
