"""The training loop, in small separate pieces: optimizers, one step, evaluation, checkpoints, fit.

* :func:`make_optimizers` — Adam per parameter group (Table IV: ``orig`` lr_o/l2_o, ``cross``
  lr_c/l2_c; sparse tables: :class:`optinter.optim.LazyAdam`) and the model's own architecture
  optimizer (``arch``: lr_a) for search models;
* :func:`train_step` / :func:`bilevel_step` — one update (Algorithm 1: Θ and α on the same
  mini-batch; bi-level: Θ on a train batch, then α on a validation batch);
* :func:`predict` / :func:`evaluate` — probabilities, AUC and log loss over a split;
* :func:`save_checkpoint` / :func:`load_checkpoint` — the state after each epoch, so an
  interrupted run resumes where it stopped (same result as an uninterrupted run on CPU);
* :func:`fit` — epochs with early stopping and model selection on the validation AUC only, in
  named steps (resume, one epoch, end of epoch, finish). Schedules that belong to one kind of
  training come in as arguments (the search's τ schedule: ``temperature``, from
  :mod:`optinter.search`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from preprocess.atomic import atomic_file

from .config import RunConfig, TrainConfig
from .metrics import auc, log_loss
from .models.base import Batch, CTRModel
from .optim import LazyAdam  # noqa: F401 - also importable from here, as before
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
    """Atomically write ``state`` (:func:`preprocess.atomic.atomic_file`: a temp file, then rename)."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


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


#: ``temperature(progress)``: the model's relaxation temperature after a fraction ``progress`` ∈
#: [0, 1] of the training steps (the search's τ schedule, :func:`optinter.search.tau_at`).
Temperature = Callable[[float], float]


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
    temperature: Temperature | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` with early stopping on the validation AUC; returns with the best weights loaded.

    ``train_data``: a :class:`~optinter.data.ParquetBatches` (or any iterable of batches with
    ``set_epoch``); ``valid_data``: batches of the validation split. ``epochs`` defaults to
    ``cfg.train.epochs``. A search model (``model.is_search_model``) also updates its
    architecture parameters: jointly on the same batch, or, when ``bilevel_data`` (shuffled
    validation batches) is given, alternately. ``temperature`` (the search passes its τ schedule)
    is set on the model before every step and before each evaluation, and recorded per epoch (``tau``).
    ``work_dir``: where ``checkpoint.pt`` (after every epoch) and ``best.pt`` live; an existing
    checkpoint with the same ``fingerprint`` is resumed. ``on_epoch_end`` is called after each
    epoch's checkpoint (tests use it to simulate an interruption).

    The steps, in order: :meth:`_Loop.resume`, then per epoch :meth:`_Loop.train_epoch` and
    :meth:`_Loop.end_epoch` (evaluate, log, keep the best, learning-rate plateau, checkpoint, early
    stop), and :meth:`_Loop.finish` (the best weights back).
    """
    loop = _Loop(model, train_data, valid_data, cfg, work_dir, tracker, epochs=epochs, bilevel_data=bilevel_data,
                 fingerprint=fingerprint, prefix=metric_prefix, temperature=temperature)
    try:
        loop.resume()
        for epoch in range(loop.state.start_epoch, loop.n_epochs):
            rec = loop.train_epoch(epoch)
            stop = loop.end_epoch(rec)
            if on_epoch_end is not None:
                on_epoch_end(rec)
            if stop:
                break
    finally:
        loop.penalty.remove()
    return loop.finish()


@dataclass
class _LoopState:
    """What :func:`fit` carries from epoch to epoch (and a checkpoint restores)."""

    history: list[EpochRecord] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": -1, "auc": -math.inf, "logloss": math.nan})
    bad_epochs: int = 0
    step: int = 0  # training steps so far, over all epochs
    lr_scale: float = 1.0  # lr_schedule="plateau": product of the decays so far
    start_epoch: int = 0
    resumed_from: int | None = None
    best_state: dict[str, Any] | None = None  # the best epoch's weights (CPU copy)
    best_opt_state: dict[str, Any] | None = None  # and optimizer states (plateau schedule only)


class _Loop:
    """The pieces of :func:`fit`: set-up here, then :meth:`resume`, :meth:`train_epoch`,
    :meth:`end_epoch` and :meth:`finish`."""

    def __init__(self, model: CTRModel, train_data: Any, valid_data: Iterable[Batch], cfg: RunConfig,
                 work_dir: str | Path | None, tracker: Tracker | None, *, epochs: int | None,
                 bilevel_data: Any | None, fingerprint: str, prefix: str, temperature: Temperature | None) -> None:
        self.model, self.train_data, self.valid_data = model, train_data, valid_data
        self.tcfg = tcfg = cfg.train
        self.n_epochs = epochs or tcfg.epochs
        self.device = resolve_device(tcfg.device)
        self.tracker = as_tracker(tracker)
        self.bilevel_data, self.fingerprint, self.prefix, self.temperature = bilevel_data, fingerprint, prefix, temperature
        model.to(self.device)
        self.optimizers = make_optimizers(model, tcfg)
        if bilevel_data is not None and "arch" not in self.optimizers:
            raise ValueError("bi-level training needs a search model with architecture parameters")
        self.base_lrs = {k: [g["lr"] for g in opt.param_groups] for k, opt in self.optimizers.items() if k != "arch"}
        self.penalty = EmbeddingPenalty(model, tcfg)
        self.plateau = tcfg.lr_schedule == "plateau"
        steps = len(train_data)
        self.steps_per_epoch = min(steps, tcfg.max_steps_per_epoch) if tcfg.max_steps_per_epoch else steps
        self.total_steps = max(1, self.n_epochs * self.steps_per_epoch)
        wd = Path(work_dir) if work_dir is not None else None
        if wd is not None:
            wd.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = wd / CHECKPOINT_FILE if wd is not None and tcfg.checkpoint else None
        self.best_path = wd / BEST_FILE if wd is not None else None
        self.state = _LoopState()

    # ---- resume ------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` when it holds this run (same fingerprint)."""
        ck = load_checkpoint(self.ckpt_path) if self.ckpt_path is not None else None
        if ck is None:
            return
        if ck.get("fingerprint") != self.fingerprint:
            log.warning("%s: checkpoint of another run (fingerprint differs); starting fresh", self.ckpt_path)
            return
        self.model.load_state_dict(ck["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ck["optimizers"][k])
        torch.set_rng_state(ck["torch_rng"])
        st = self.state
        st.history = [EpochRecord(**r) for r in ck["history"]]
        st.best, st.bad_epochs, st.step = ck["best"], ck["bad_epochs"], ck["step"]
        st.lr_scale = float(ck.get("lr_scale", 1.0))
        st.start_epoch = self.n_epochs if ck.get("stopped") else ck["epoch"] + 1
        st.resumed_from = ck["epoch"]
        log.info("%sresuming from %s after epoch %d", self.prefix, self.ckpt_path, ck["epoch"] + 1)

    # ---- one epoch ---------------------------------------------------------------------------------
    def _set_learning_rates(self, epoch: int) -> None:
        """train.lr_decay: a function of the epoch (or of the plateaus so far), so resuming is exact."""
        scale = self.state.lr_scale if self.plateau else self.tcfg.lr_decay**epoch
        for k, lrs in self.base_lrs.items():
            for g, lr in zip(self.optimizers[k].param_groups, lrs):
                g["lr"] = lr * scale

    def _set_temperature(self) -> float | None:
        if self.temperature is None:
            return None
        tau = float(self.temperature(self.state.step / self.total_steps))
        self.model.set_temperature(tau)
        return tau

    def train_epoch(self, epoch: int) -> EpochRecord:
        """One pass over the training batches (at most ``train.max_steps_per_epoch`` steps); the
        record's validation figures are filled in by :meth:`end_epoch`."""
        tcfg, model, prefix = self.tcfg, self.model, self.prefix
        self._set_learning_rates(epoch)
        bilevel_iter = _cycle(self.bilevel_data, epoch) if self.bilevel_data is not None else None
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(epoch)
        model.train()
        t0 = last_log = time.perf_counter()
        loss_sum, n_seen, n_steps = 0.0, 0, 0
        tau = None
        for batch in self.train_data:
            if tcfg.max_steps_per_epoch and n_steps >= tcfg.max_steps_per_epoch:
                break
            tau = self._set_temperature()
            batch = batch.to(self.device, non_blocking=True)
            if bilevel_iter is not None:
                loss = bilevel_step(model, batch, next(bilevel_iter).to(self.device), self.optimizers, tcfg.amp,
                                    self.penalty)
            else:
                loss = train_step(model, batch, self.optimizers, tcfg.amp, self.penalty)
            if not math.isfinite(loss):
                raise FloatingPointError(f"{prefix}training loss is {loss} at epoch {epoch + 1}, step {n_steps}")
            loss_sum += loss * len(batch)
            n_seen += len(batch)
            n_steps += 1
            self.state.step += 1
            now = time.perf_counter()
            if now - last_log > 30:
                log.info("%sepoch %d: %d/%d steps, loss %.5f, %.0f samples/s", prefix, epoch + 1,
                         n_steps, self.steps_per_epoch, loss_sum / n_seen, n_seen / (now - t0))
                last_log = now
        secs = time.perf_counter() - t0
        return EpochRecord(epoch=epoch + 1, train_loss=loss_sum / max(n_seen, 1), valid_auc=math.nan,
                           valid_logloss=math.nan, seconds=secs, samples=n_seen,
                           samples_per_s=n_seen / secs if secs > 0 else 0.0, tau=tau)

    # ---- end of epoch ------------------------------------------------------------------------------
    def end_epoch(self, rec: EpochRecord) -> bool:
        """Evaluate, log, keep the best weights, apply the plateau schedule and checkpoint; returns
        whether to stop early."""
        st, tcfg, prefix = self.state, self.tcfg, self.prefix
        self._set_temperature()
        ev = evaluate(self.model, self.valid_data, self.device, tcfg.amp)
        rec.valid_auc, rec.valid_logloss = ev["auc"], ev["logloss"]
        st.history.append(rec)
        self._log_epoch(rec)
        improved = rec.valid_auc > st.best["auc"] or st.best["epoch"] < 0
        if improved:
            self._keep_best(rec)
        else:
            st.bad_epochs += 1
        stop = (not improved) and st.bad_epochs >= max(tcfg.patience, 1)
        if self.plateau and not improved and not stop:
            st.lr_scale *= tcfg.lr_decay
            st.best_state, st.best_opt_state = _restore_best(self.model, self.optimizers, st.best_state,
                                                             st.best_opt_state, self.best_path)
            log.info("%sno improvement: back to epoch %d's weights, learning rates x%.3g", prefix,
                     st.best["epoch"], st.lr_scale)
        self._save_checkpoint(rec.epoch - 1, stop)
        if stop:
            log.info("%searly stop after epoch %d (best epoch %d, valid AUC %.5f)", prefix, rec.epoch,
                     st.best["epoch"], st.best["auc"])
        return stop

    def _log_epoch(self, rec: EpochRecord) -> None:
        log.info(
            "%sepoch %d/%d: loss %.5f, valid AUC %.5f, valid logloss %.5f, %.0f samples/s%s",
            self.prefix, rec.epoch, self.n_epochs, rec.train_loss, rec.valid_auc, rec.valid_logloss,
            rec.samples_per_s, "" if rec.tau is None else f", tau {rec.tau:.4f}",
        )
        metrics = {"train_loss": rec.train_loss, "valid_auc": rec.valid_auc, "valid_logloss": rec.valid_logloss,
                   "samples_per_s": rec.samples_per_s}
        if rec.tau is not None:
            metrics["tau"] = rec.tau
        self.tracker.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=rec.epoch)

    def _keep_best(self, rec: EpochRecord) -> None:
        st = self.state
        st.best = {"epoch": rec.epoch, "auc": rec.valid_auc, "logloss": rec.valid_logloss}
        st.bad_epochs = 0
        st.best_state = {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                         for k, v in self.model.state_dict().items()}
        st.best_opt_state = _optimizer_states(self.optimizers) if self.plateau else None
        if self.best_path is not None:
            save_checkpoint(self.best_path, {"model": self.model.state_dict(), "epoch": rec.epoch,
                                             "fingerprint": self.fingerprint, "optimizers": st.best_opt_state})

    def _save_checkpoint(self, epoch: int, stopped: bool) -> None:
        if self.ckpt_path is None:
            return
        st = self.state
        save_checkpoint(self.ckpt_path, {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in st.history],
            "best": st.best, "bad_epochs": st.bad_epochs, "step": st.step, "epoch": epoch,
            "fingerprint": self.fingerprint, "stopped": stopped, "lr_scale": st.lr_scale,
        })

    # ---- finish ------------------------------------------------------------------------------------
    def finish(self) -> FitResult:
        """Load the best weights; the run's figures."""
        st, model = self.state, self.model
        if st.best_state is not None:
            model.load_state_dict(st.best_state)
        elif self.best_path is not None and self.best_path.exists():
            model.load_state_dict(load_checkpoint(self.best_path)["model"])
        model.to(self.device)
        total_secs = sum(r.seconds for r in st.history)
        total_samples = sum(r.samples for r in st.history)
        return FitResult(
            best_epoch=int(st.best["epoch"]),
            best_valid_auc=float(st.best["auc"]),
            best_valid_logloss=float(st.best["logloss"]),
            epochs=len(st.history),
            seconds=total_secs,
            samples_per_s=total_samples / total_secs if total_secs > 0 else 0.0,
            history=st.history,
            resumed_from=st.resumed_from,
        )
