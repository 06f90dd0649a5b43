"""Stage functions used by the CLI and the Prefect flows: search, re-train, train.

Each one validates the configuration, the feature map, the architecture and the parquet schema
*before* training (clear errors), trains with checkpoints in a work folder next to ``out_dir``
(``<out_dir>.work``; an interrupted run resumes from it), evaluates the test split once with the
best (validation-AUC) weights, writes its outputs into a temporary folder that is renamed to
``out_dir`` at the end, logs params / metrics / artifacts to the tracker and returns the metrics.

Re-train and train also write ``encoder/`` (the data's feature map and the vocabularies the model
needs, :func:`preprocess.encoder.export_encoder`), so the output folder alone scores raw rows
(:mod:`optinter.predict`), and log the model as an MLflow pyfunc model when the tracker logs models.

``metrics.json`` keys: ``model``, ``stage``, ``valid_auc``, ``valid_logloss``, ``test_auc``,
``test_logloss``, ``params``, ``epochs``, ``best_epoch``, ``seconds``, ``samples_per_s``, and for
models with an architecture ``n_memorize``, ``n_factorize``, ``n_naive``, ``arch_hash``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from preprocess.atomic import atomic_output_dir
from preprocess.feature_map import FeatureMap, fingerprint

from .architecture import ARCH_FILE, Architecture
from .config import RunConfig
from .data import ParquetBatches, check_split_schema
from .models.base import CTRModel
from .registry import available_models, build_model, build_search_model, has_search_variant, needs_architecture
from .search import evaluate_without_retrain, search
from .tracking import Tracker, as_tracker
from .warmstart import WarmStart, keep_better, warm_start_first_order, wants_warm_start
from .train import FitResult, evaluate, final_metric_name, fit, resolve_device, seed_everything

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
#: The encoder state in a trained model's folder (feature map + vocabularies it needs).
ENCODER_DIR = "encoder"


# ---- helpers ----------------------------------------------------------------------------------------
def load_feature_map(data_dir: str | Path) -> FeatureMap:
    """The feature map of an encoded data folder (clear error when it is not one)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data folder does not exist (run `optinter preprocess` first)")
    return FeatureMap.load(data_dir)


def _validate(cfg: RunConfig, data_dir: str | Path) -> FeatureMap:
    cfg.validate()
    fmap = load_feature_map(data_dir)
    for split in ("train", "valid", "test"):
        if split not in fmap.splits:
            raise ValueError(f"{data_dir}/feature_map.json: no {split!r} split")
    if not fmap.fields:
        raise ValueError(f"{data_dir}/feature_map.json: no fields")
    return fmap


def _check_data(data_dir: str | Path, fmap: FeatureMap, model: CTRModel) -> None:
    """Schema and row counts of every split for the columns ``model`` reads."""
    for split in ("train", "valid", "test"):
        rows = check_split_schema(data_dir, fmap, split, model.required_pairs())
        if rows == 0:
            raise ValueError(f"{fmap.split_dir(data_dir, split)}: split {split!r} is empty")


def make_loaders(data_dir: str | Path, fmap: FeatureMap, model: CTRModel, cfg: RunConfig) -> dict[str, ParquetBatches]:
    """``train`` (shuffled per seed/epoch), ``valid`` and ``test`` (stored order) and
    ``valid_shuffled`` (for the bi-level α updates) batch streams with the model's columns."""
    pairs = model.required_pairs()
    t = cfg.train
    return {
        "train": ParquetBatches(data_dir, fmap, "train", t.batch_size, pairs, shuffle=True, seed=t.seed),
        "valid": ParquetBatches(data_dir, fmap, "valid", t.eval_batch_size, pairs),
        "test": ParquetBatches(data_dir, fmap, "test", t.eval_batch_size, pairs),
        "valid_shuffled": ParquetBatches(data_dir, fmap, "valid", t.batch_size, pairs, shuffle=True, seed=t.seed + 1),
    }


def work_dir_for(out_dir: str | Path) -> Path:
    """Checkpoint folder of a stage writing ``out_dir`` (kept until the stage succeeds)."""
    out = Path(out_dir)
    return out.with_name(f"{out.name}.work")


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))


def _fingerprint(stage: str, name: str, cfg: RunConfig, fmap: FeatureMap, arch: Architecture | None) -> str:
    return fingerprint([stage, name, cfg.to_dict(), fmap.content_hash, fmap.to_dict()["pairs"],
                        arch.hash() if arch is not None else None])


def _log_start(tr: Tracker, stage: str, name: str, cfg: RunConfig, data_dir: str | Path, fmap: FeatureMap) -> None:
    # the data folder is a machine path: a tag, not a param (params are compared across runs)
    tr.set_tags({"stage": stage, "model": name, "dataset": fmap.dataset, "data_dir": str(data_dir)})
    tr.log_params({**cfg.flat(), "stage": stage, "model": name, "feature_map_hash": fmap.content_hash})


def _warm_start(model: CTRModel, data_dir: str | Path, fmap: FeatureMap, cfg: RunConfig, device: torch.device,
                valid: ParquetBatches, snapshot: bool = True) -> WarmStart | None:
    """Start the first-order term from a fitted LR when ``train.first_order_init = "lr"``
    (``snapshot``: keep the start's state for :func:`~optinter.warmstart.keep_better`)."""
    if not wants_warm_start(model, cfg):
        return None
    return warm_start_first_order(model, fmap, cfg, lambda m, c: make_loaders(data_dir, fmap, m, c), device, valid,
                                  snapshot=snapshot)


def _setup(cfg: RunConfig) -> torch.device:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    if cfg.train.amp and device.type != "cuda":
        log.warning("train.amp is only used on CUDA; training in float32 on %s", device)
    return device


def _fit_metrics(name: str, stage: str, model: CTRModel, res: FitResult, valid: dict[str, float],
                 test: dict[str, float], fmap: FeatureMap) -> dict[str, Any]:
    return {
        "model": name,
        "stage": stage,
        "dataset": fmap.dataset,
        "valid_auc": valid["auc"],
        "valid_logloss": valid["logloss"],
        "test_auc": test["auc"],
        "test_logloss": test["logloss"],
        "params": model.num_params(),
        "epochs": res.epochs,
        "best_epoch": res.best_epoch,
        "seconds": res.seconds,
        "samples_per_s": res.samples_per_s,
        **model.extra_metrics(),
    }


def save_bundle(out: Path, name: str, model: CTRModel, cfg: RunConfig, fmap: FeatureMap, arch: Architecture | None,
                data_dir: str | Path) -> None:
    """What scoring needs (:mod:`optinter.predict`): ``model.pt`` (weights, name, config, architecture,
    feature-map hash) and ``encoder/`` (the feature map and the vocabularies of the pairs the model
    reads, :func:`preprocess.encoder.export_encoder`)."""
    from preprocess.encoder import export_encoder

    torch.save({"model": name, "state_dict": {k: v for k, v in model.state_dict().items()},
                "config": cfg.to_dict(), "architecture": arch.to_dict() if arch is not None else None,
                "feature_map_hash": fmap.content_hash}, out / MODEL_FILE)
    export_encoder(data_dir, out / ENCODER_DIR, model.required_pairs())


CONFIG_FILE = "config.json"


def _write_config(path: Path, cfg: RunConfig, fmap: FeatureMap, model: str) -> None:
    """``config.json``: the settings the stage ran with, the data statistics the defaults read,
    why each default has its value, and which settings differ from those defaults."""
    from .defaults import data_config

    resolved = data_config(fmap, model)
    ran, dflt = cfg.flat(), resolved.config.flat()
    _write_json(path, {"config": cfg.to_dict(), "data_stats": resolved.stats.to_dict() if resolved.stats else {},
                       "default_reasons": resolved.reasons,
                       "differs_from_defaults": {k: {"ran": v, "default": dflt.get(k)}
                                                 for k, v in ran.items() if dflt.get(k) != v and k != "train.seed"}})


def _finish(tr: Tracker, out: Path, metrics: dict[str, Any], prefixes: tuple[str, ...] = ("",)) -> None:
    # ``prefixes``: the metric prefixes fit() logged per-epoch curves with; a final figure of such a
    # curve gets its own name (valid_auc → best_valid_auc) instead of one more point on the curve.
    step = int(metrics.get("epochs") or 0)
    tr.log_metrics({final_metric_name(k, prefixes): float(v) for k, v in metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
    for f in sorted(out.iterdir()):
        if f.suffix == ".json":
            tr.log_artifact(f)


def _log_model(tr: Tracker, out: Path) -> None:
    """The trained model in ``out`` as an MLflow pyfunc model, when the tracker logs models."""
    log_model = getattr(tr, "log_model", None)
    if log_model is not None:
        log_model(out)


# ---- search ------------------------------------------------------------------------------------------
def _search_core(data_dir: str | Path, fmap: FeatureMap, cfg: RunConfig, model_name: str, work: Path,
                 tracker: Tracker) -> tuple[Architecture, dict[str, Any]]:
    seed_everything(cfg.train.seed)
    model = build_search_model(model_name, fmap, cfg.model)
    _check_data(data_dir, fmap, model)
    device = _setup(cfg)
    loaders = make_loaders(data_dir, fmap, model, cfg)
    log.info("search %s: %d pairs, %d parameters, device %s", model_name, fmap.num_pairs, model.num_params(), device)
    ws = _warm_start(model, data_dir, fmap, cfg, device, loaders["valid"], snapshot=False)  # no fallback in search
    arch, res = search(model, loaders["train"], loaders["valid"], cfg, work, tracker,
                       bilevel_data=loaders["valid_shuffled"], fingerprint=_fingerprint("search", model_name, cfg, fmap, None))
    arch.model = model_name
    arch.feature_map_hash = fmap.content_hash
    valid = evaluate_without_retrain(model, loaders["valid"], device, "argmax", cfg.train.amp)
    test = evaluate_without_retrain(model, loaders["test"], device, "argmax", cfg.train.amp)
    expected_test = evaluate_without_retrain(model, loaders["test"], device, "expected", cfg.train.amp)
    metrics = _fit_metrics(model_name, "search", model, res, valid, test, fmap)
    metrics.update({
        **arch.count_dict(),
        "arch_hash": arch.hash(),
        "search_valid_auc": res.best_valid_auc,
        "search_valid_logloss": res.best_valid_logloss,
        "noretrain_mode": "argmax",
        "noretrain_expected_test_auc": expected_test["auc"],
        "noretrain_expected_test_logloss": expected_test["logloss"],
        "bilevel": cfg.train.bilevel,
        **prune_metrics(arch),
        **(ws.metrics() if ws is not None else {}),
        **decision_metrics(arch),
    })
    if not metrics["search_decided"]:
        tracker.set_tags({"optinter.search_undecided": "true"})
    return arch, metrics


def prune_metrics(arch: Architecture) -> dict[str, Any]:
    """``search_prune_candidates`` / ``search_pruned``: searched pairs ablated on the validation
    split and those made naive (:mod:`optinter.prune`); empty when the search did not prune."""
    pr = arch.meta.get("prune")
    if not pr:
        return {}
    return {"search_prune_candidates": int(pr["candidates"]), "search_pruned": len(pr["pruned"])}


def decision_metrics(arch: Architecture) -> dict[str, Any]:
    """``search_decided`` (bool), ``search_clear_share``, ``search_max_prob_mean`` /
    ``_min``, ``search_entropy_mean`` of :meth:`Architecture.decision`."""
    d = arch.decision()
    return {"search_decided": bool(d["decided"]), "search_clear_share": d["clear_share"],
            "search_max_prob_mean": d["max_prob_mean"], "search_max_prob_min": d["max_prob_min"],
            "search_entropy_mean": d["entropy_mean"]}


def run_search(data_dir: str | Path, out_dir: str | Path, cfg: RunConfig, tracker: Tracker | None = None,
               model: str = "optinter") -> dict[str, Any]:
    """Search stage (Algorithm 1): writes ``architecture.json`` and ``metrics.json`` into ``out_dir``.

    The metrics' ``valid_*``/``test_*`` are those of the searched model used directly with the
    argmax architecture (Table IX "without re-train"); ``search_valid_auc`` is the selection
    metric (relaxed weights).
    """
    t0 = time.perf_counter()
    fmap = _validate(cfg, data_dir)
    tr = as_tracker(tracker)
    _log_start(tr, "search", model, cfg, data_dir, fmap)
    work = work_dir_for(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        arch, metrics = _search_core(data_dir, fmap, cfg, model, work, tr)
        metrics["wall_seconds"] = time.perf_counter() - t0
        arch.save(tmp / ARCH_FILE)
        _write_json(tmp / METRICS_FILE, metrics)
        _write_config(tmp / CONFIG_FILE, cfg, fmap, model)
    shutil.rmtree(work, ignore_errors=True)
    _finish(tr, Path(out_dir), metrics, ("search_",))
    log.info("search done: %s", _summary(metrics))
    return metrics


# ---- re-train / train --------------------------------------------------------------------------------
def _train_core(data_dir: str | Path, fmap: FeatureMap, cfg: RunConfig, name: str, arch: Architecture | None,
                work: Path, tracker: Tracker, out: Path, stage: str) -> dict[str, Any]:
    seed_everything(cfg.train.seed)
    model = build_model(name, fmap, cfg.model, arch=arch)
    if model.is_search_model:
        raise ValueError(f"model {name!r} has architecture parameters; train it with run_search/run_train")
    _check_data(data_dir, fmap, model)
    device = _setup(cfg)
    loaders = make_loaders(data_dir, fmap, model, cfg)
    log.info("%s %s: %d parameters, device %s", stage, name, model.num_params(), device)
    ws = _warm_start(model, data_dir, fmap, cfg, device, loaders["valid"])
    res = fit(model, loaders["train"], loaders["valid"], cfg, work, tracker,
              fingerprint=_fingerprint(stage, name, cfg, fmap, arch))
    valid = {"auc": res.best_valid_auc, "logloss": res.best_valid_logloss}
    kept = ws is not None and keep_better(model, ws, res.best_valid_auc)
    if kept:
        valid = {"auc": ws.valid_auc, "logloss": ws.valid_logloss}
    test = evaluate(model, loaders["test"], device, cfg.train.amp)  # the one look at the test split
    metrics = _fit_metrics(name, stage, model, res, valid, test, fmap)
    if ws is not None:
        metrics.update({**ws.metrics(), "warm_start_kept": kept})
    if arch is not None:
        metrics.update({**arch.count_dict(), "arch_hash": arch.hash(), "arch_source": arch.source})
    save_bundle(out, name, model, cfg, fmap, arch, data_dir)
    return metrics


def run_retrain(data_dir: str | Path, arch_path: str | Path, out_dir: str | Path, cfg: RunConfig,
                tracker: Tracker | None = None) -> dict[str, Any]:
    """Re-train stage (Algorithm 2): a new model of ``arch.model`` from scratch with the argmax
    architecture in ``arch_path``; writes ``metrics.json``, ``model.pt`` and a copy of the
    architecture into ``out_dir``."""
    t0 = time.perf_counter()
    fmap = _validate(cfg, data_dir)
    arch = Architecture.load(arch_path)
    arch.validate(fmap, where=str(arch_path))
    if arch.feature_map_hash and fmap.content_hash and arch.feature_map_hash != fmap.content_hash:
        log.warning("%s was searched on another encoding (feature map hash %s, data has %s)",
                    arch_path, arch.feature_map_hash[:12], fmap.content_hash[:12])
    if not needs_architecture(arch.model):
        raise ValueError(f"{arch_path}: model {arch.model!r} is not re-trained from an architecture")
    tr = as_tracker(tracker)
    _log_start(tr, "retrain", arch.model, cfg, data_dir, fmap)
    work = work_dir_for(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        metrics = _train_core(data_dir, fmap, cfg, arch.model, arch, work, tr, tmp, "retrain")
        metrics["wall_seconds"] = time.perf_counter() - t0
        arch.save(tmp / ARCH_FILE)
        _write_json(tmp / METRICS_FILE, metrics)
        _write_config(tmp / CONFIG_FILE, cfg, fmap, arch.model)
    shutil.rmtree(work, ignore_errors=True)
    _finish(tr, Path(out_dir), metrics)
    _log_model(tr, Path(out_dir))
    log.info("retrain done: %s", _summary(metrics))
    return metrics


def run_train(data_dir: str | Path, model_name: str, out_dir: str | Path, cfg: RunConfig,
              tracker: Tracker | None = None) -> dict[str, Any]:
    """Train any registered model. Models with a search variant (``optinter``, ``autofis``) are
    searched then re-trained; ``out_dir`` then also holds ``architecture.json`` and
    ``search_metrics.json``, and the metrics gain ``search_seconds``."""
    t0 = time.perf_counter()
    fmap = _validate(cfg, data_dir)
    searched = has_search_variant(model_name)
    if not searched and needs_architecture(model_name):
        raise ValueError(f"model {model_name!r} needs an architecture; use `retrain --arch`")
    known = available_models()
    if model_name not in known:
        raise ValueError(f"unknown model {model_name!r}; known models: {', '.join(known)}")
    tr = as_tracker(tracker)
    _log_start(tr, "train", model_name, cfg, data_dir, fmap)
    work = work_dir_for(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        arch = None
        search_metrics: dict[str, Any] | None = None
        if searched:
            arch, search_metrics = _search_core(data_dir, fmap, cfg, model_name, work / "search", tr)
            arch.save(tmp / ARCH_FILE)
            _write_json(tmp / "search_metrics.json", search_metrics)
        metrics = _train_core(data_dir, fmap, cfg, model_name, arch, work / "train", tr, tmp, "train")
        if search_metrics is not None:
            metrics["search_seconds"] = search_metrics["seconds"]
            metrics["noretrain_test_auc"] = search_metrics["test_auc"]
            metrics.update({k: v for k, v in search_metrics.items() if k.startswith("search_") and k != "search_seconds"})
        metrics["wall_seconds"] = time.perf_counter() - t0
        _write_json(tmp / METRICS_FILE, metrics)
        _write_config(tmp / CONFIG_FILE, cfg, fmap, model_name)
    shutil.rmtree(work, ignore_errors=True)
    _finish(tr, Path(out_dir), metrics, ("search_", "") if searched else ("",))
    _log_model(tr, Path(out_dir))
    log.info("train done: %s", _summary(metrics))
    return metrics


def _summary(m: dict[str, Any]) -> str:
    s = (f"{m['model']} valid AUC {m['valid_auc']:.4f} logloss {m['valid_logloss']:.4f} | "
         f"test AUC {m['test_auc']:.4f} logloss {m['test_logloss']:.4f} | {m['params']:,} params, "
         f"{m['epochs']} epochs, {m['samples_per_s']:.0f} samples/s")
    if "n_memorize" in m:
        s += f" | arch [m,f,n]=[{m['n_memorize']},{m['n_factorize']},{m['n_naive']}]"
    return s


def summary_line(metrics: dict[str, Any]) -> str:
    """One-line result for the CLI."""
    return _summary(metrics)
