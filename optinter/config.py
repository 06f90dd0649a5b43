"""Model, training and search settings as plain dataclasses, with the paper's Table IV defaults.

``RunConfig`` bundles one stage's settings. ``default_config(feature_map, model)`` gives the
defaults derived from the data (:mod:`optinter.defaults`), ``paper_config(dataset, model)`` the
paper's Table IV; ``load_config_file(path)`` reads a YAML / JSON settings file (``--config``) and
``apply_overrides(cfg, ["train.lr_o=1e-4", "model.mlp_dims=400,400"])`` changes settings with a
clear error for unknown keys or bad values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

RELAXATIONS = ("gumbel", "softmax")
FACTORIZE_SOURCES = ("orig", "table")
LR_SCHEDULES = ("epoch", "plateau")
#: train.search_prune (optinter.prune, which imports torch, keeps its own copy)
PRUNE_MODES = ("none", "valid")
#: train.first_order_init (optinter.warmstart)
FIRST_ORDER_INITS = ("zero", "lr")


@dataclass
class ModelConfig:
    """Architecture settings (Table IV: s1, s2, net, LN)."""

    embed_dim: int = 20  # s1: original-feature embedding size
    cross_embed_dim: int = 10  # s2: memorized cross-product embedding size
    mlp_dims: tuple[int, ...] = (700, 700, 700, 700, 700)
    layer_norm: bool = True
    dropout: float = 0.0
    # OptInter specifics
    factorize_source: str = "orig"  # "orig": e_i ⊙ e_j (paper text); "table": separate table (released code)
    relaxation: str = "gumbel"  # "gumbel" (eq. 16-17) or "softmax" (annealed, released code)
    tau_start: float = 1.0
    tau_end: float = 0.1
    # Optional first-order (LR) term on the original features added to OptInter's logit (the
    # "wide" part of Wide&Deep / DeepFM). Not in the paper (False = paper model); see
    # optinter/defaults.py for why small data sets use it.
    first_order: bool = False
    # Output unit of OptInter's MLP initialised to zero weights: with first_order the model starts
    # as logistic regression and the network's part grows only where training finds it useful.
    zero_init_output: bool = False
    # Cross-product (and factorization) tables get sparse gradients and lazy Adam updates
    # (only the rows of the batch move; l2_c applies to those rows). False: dense Adam.
    sparse_cross: bool = True
    # PIN sub-network
    pin_subnet: tuple[int, ...] = (40, 5)
    # AutoFIS / GRDA
    grda_mu: float = 0.8
    grda_c: float = 5e-4
    grda_lr: float = 1.0  # GRDA learning rate of the AutoFIS gates (1.0 in the AutoFIS code)

    def validate(self) -> None:
        if self.embed_dim <= 0 or self.cross_embed_dim <= 0:
            raise ValueError("model.embed_dim and model.cross_embed_dim must be positive")
        if any(d <= 0 for d in self.mlp_dims):
            raise ValueError(f"model.mlp_dims must be positive, got {self.mlp_dims}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"model.relaxation must be one of {RELAXATIONS}, got {self.relaxation!r}")
        if self.factorize_source not in FACTORIZE_SOURCES:
            raise ValueError(f"model.factorize_source must be one of {FACTORIZE_SOURCES}, got {self.factorize_source!r}")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ValueError("model.tau_start and model.tau_end must be > 0")


@dataclass
class TrainConfig:
    """Optimization settings (Table IV: bs, lr_o, lr_c, lr_a, l2_o, l2_c, eps)."""

    batch_size: int = 2000
    epochs: int = 10
    patience: int = 2  # early stopping on validation AUC
    lr_o: float = 5e-4  # original embeddings + network
    lr_c: float = 5e-4  # memorized cross-product embeddings
    lr_a: float = 3e-5  # architecture parameters α
    lr_first: float = 0.0  # first-order weights (model.first_order; group "first"); 0 = lr_o
    l2_o: float = 0.0
    l2_c: float = 0.0
    # L2 on the embedding rows looked up in each batch (mean over the batch of Σ‖e‖², added to
    # the loss; the authors' code): ``emb_l2_o`` original-feature tables (and first-order
    # weights), ``emb_l2_c`` cross-product tables. See optinter.train.EmbeddingPenalty.
    emb_l2_o: float = 0.0
    emb_l2_c: float = 0.0
    eps: float = 1e-8
    # learning rates of Θ (not α) are multiplied by lr_decay: after every epoch
    # (lr_schedule="epoch"; 1.0 = constant) or, with lr_schedule="plateau", after every epoch that
    # does not improve the validation AUC, which also restores the best weights and optimizer state
    lr_decay: float = 1.0
    lr_schedule: str = "epoch"
    seed: int = 2026
    device: str = "auto"  # "auto" → cuda when available, else cpu
    amp: bool = False  # mixed precision (bf16 autocast) on CUDA
    max_steps_per_epoch: int = 0  # 0 = whole epoch
    eval_batch_size: int = 8192
    search_epochs: int = 1  # search stage epochs (Algorithm 1)
    # Θ's learning rate during the search (every group but α; 0 = lr_o / lr_c / lr_first as in
    # training). The search keeps Θ's rates constant: train.lr_decay applies to training only.
    search_lr: float = 0.0
    bilevel: bool = False  # alternate Θ / α updates (DARTS-style ablation, Table VIII)
    # After the search: "valid" makes naive every searched pair whose removal does not raise the
    # validation log loss by more than prune_z standard errors (optinter.prune; not in the paper),
    # on at most prune_rows validation rows (0 = all); "none" keeps Algorithm 1's argmax.
    search_prune: str = "none"
    prune_z: float = 2.0
    prune_rows: int = 200_000
    # "lr": fit the lr model first and start model.first_order's weights from it; the re-train
    # keeps that start if no epoch beats it on valid (optinter.warmstart). "zero": from zero.
    first_order_init: str = "zero"
    checkpoint: bool = True
    num_threads: int = 0  # 0 = torch default

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"train.batch_size must be positive, got {self.batch_size}")
        if self.epochs <= 0 or self.search_epochs <= 0:
            raise ValueError("train.epochs and train.search_epochs must be positive")
        for k in ("lr_o", "lr_c", "lr_a"):
            if getattr(self, k) <= 0:
                raise ValueError(f"train.{k} must be positive, got {getattr(self, k)}")
        for k in ("l2_o", "l2_c", "emb_l2_o", "emb_l2_c", "eps", "search_lr"):
            if getattr(self, k) < 0:
                raise ValueError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        if self.patience < 0:
            raise ValueError("train.patience must be >= 0")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.first_order_init not in FIRST_ORDER_INITS:
            raise ValueError(f"train.first_order_init must be one of {FIRST_ORDER_INITS}, got {self.first_order_init!r}")
        if self.search_prune not in PRUNE_MODES:
            raise ValueError(f"train.search_prune must be one of {PRUNE_MODES}, got {self.search_prune!r}")
        if not math.isfinite(self.prune_z):
            raise ValueError(f"train.prune_z must be a finite number, got {self.prune_z}")
        if self.prune_rows < 0:
            raise ValueError(f"train.prune_rows must be >= 0 (0 = every validation row), got {self.prune_rows}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


@dataclass
class RunConfig:
    """Settings of one training / search stage."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        m = dict(d.get("model", {}))
        for k in ("mlp_dims", "pin_subnet"):
            if k in m:
                m[k] = tuple(m[k])
        return cls(model=ModelConfig(**m), train=TrainConfig(**d.get("train", {})))

    def flat(self) -> dict[str, Any]:
        """``{"model.embed_dim": 20, "train.lr_o": 5e-4, ...}`` for tracking params."""
        out: dict[str, Any] = {}
        for sec, obj in (("model", self.model), ("train", self.train)):
            for k, v in dataclasses.asdict(obj).items():
                out[f"{sec}.{k}"] = v
        return out


# Table IV. Keys are "dataset" → {"section.key": value}; per-model entries refine them.
_TABLE_IV: dict[str, dict[str, Any]] = {
    "criteo": {"train.batch_size": 2000, "train.lr_o": 5e-4, "train.eps": 1e-8, "model.embed_dim": 20,
               "model.cross_embed_dim": 10, "model.mlp_dims": (700,) * 5,
               "train.lr_c": 1e-4, "train.l2_c": 3e-8, "train.lr_a": 3e-5,
               "model.grda_mu": 0.8, "model.grda_c": 5e-4},
    "avazu": {"train.batch_size": 2000, "train.lr_o": 5e-4, "train.eps": 1e-8, "model.embed_dim": 40,
              "model.cross_embed_dim": 4, "model.mlp_dims": (500,) * 5,
              "train.lr_c": 1e-4, "train.l2_c": 3e-8, "train.lr_a": 3e-5,
              "model.grda_mu": 0.8, "model.grda_c": 5e-4},
    "ipinyou": {"train.batch_size": 2000, "train.lr_o": 1e-5, "train.l2_o": 1e-6, "train.eps": 1e-4,
                "model.embed_dim": 20, "model.cross_embed_dim": 2, "model.mlp_dims": (300,) * 3,
                "train.lr_c": 1e-6, "train.l2_c": 3e-8, "train.lr_a": 1e-3,
                "model.grda_mu": 0.535, "model.grda_c": 5e-3},
}


def paper_config(dataset: str = "synthetic", model: str = "optinter") -> RunConfig:
    """The paper's settings: Table IV for criteo / avazu / ipinyou (full datasets), library
    defaults otherwise. ``default_config`` starts from these."""
    cfg = RunConfig()
    overrides = dict(_TABLE_IV.get(dataset, {}))
    if dataset == "ipinyou" and model == "lr":
        overrides["train.lr_o"] = 1e-4
    if dataset == "ipinyou" and model == "fm":
        overrides.update({"train.lr_o": 1e-4, "train.l2_o": 1e-9, "train.eps": 1e-6})
    if model in ("optinter", "optinter_m", "optinter_f") and dataset in ("criteo", "avazu"):
        overrides["train.lr_o"] = 1e-4
    _apply(cfg, overrides)
    return cfg


# Why the data-derived defaults (optinter/defaults.py) take the values they take at the size of
# the shipped Criteo sample (../shared/data/criteo/split, relative to the repository: 109,711 /
# 13,714 / 13,714 rows, ~400x smaller than the paper's 45M rows), chosen there on the validation
# split only:
# * LR at lr_o = 5e-4 is still under-fitted after 10 epochs (valid 0.750) -> lr_o = 3e-3,
#   batch 500 (more, smaller steps: valid 0.7579, test 0.7627; sklearn LR reaches 0.7632);
# * a 700x5 MLP over-fits in its first epoch (and costs ~10 s a step on 2 CPU cores) -> a
#   128x128 MLP with dropout 0.3, s1 = 10, lr_o = 5e-4;
# * memorized cross-product tables over-fit first -> lr_c = 1e-4 (Table IV's lr_c < lr_o);
# * lr_a = 3e-5 moves α by ~1e-3 in a one-epoch search (argmax = initialisation noise) ->
#   lr_a = 1e-2 over 2 search epochs of 220 steps (α can travel ~4 logits);
# * OptInter models get the optional first-order term (model.first_order, not in the paper;
#   its weights at lr_first = 3e-3 like LR): at this size the logistic part carries most of the
#   signal and the MLP alone does not recover it before it over-fits (optinter_f, MLP 256x256,
#   dropout 0.3: valid 0.7537 without, 0.7566-0.7571 with);
# * OptInter models: L2 3e-3 on the looked-up original embeddings (train.emb_l2_o, as the
#   authors' code regularizes looked-up rows): search + re-train valid 0.7563 -> 0.7572
#   (1e-2: 0.7557);
# * every model: learning rates halved after each epoch of 220 steps (train.lr_decay = 0.5; the
#   models peak after 2-3 epochs and a constant step overshoots): valid lr 0.7579 -> 0.7581,
#   deepfm 0.7549 -> 0.7560, optinter_f 0.7576 -> 0.7591 (0.3: 0.7585), optinter_m (s2 = 2)
#   0.7582 -> 0.7588;
# * OptInter models: s2 = 2 (the paper's Fig. 4 knob; Table IV uses 2 on iPinYou): a 2-wide
#   memorized embedding over-fits far less at 110k rows (optinter_m valid: s2 = 10 0.7562,
#   4 0.7567, 2 0.7582, 1 0.7579; search + re-train with the decay: s2 = 10 0.7564, s2 = 2 0.7590);
# * Poly2: 325 OOV cross weights act as 325 copies of the bias, so the cross group needs L2 on the
#   looked-up weights (valid 0.7332 at lr_c 3e-3 -> 0.7590 with emb_l2_c = 1e-2).
# optinter/defaults.py states each of these as a rule of the data's statistics, so the same
# reasoning carries to other sizes; ``paper_config(dataset, model)`` (or the override set
# PAPER_OVERRIDES[dataset]) gives Table IV.
PAPER_OVERRIDES: dict[str, dict[str, Any]] = {d: dict(v) for d, v in _TABLE_IV.items()}
PAPER_DATASETS = tuple(_TABLE_IV)


def default_config(source: Any = None, model: str = "optinter") -> RunConfig:
    """The defaults of ``model``: derived from the data when ``source`` is a
    :class:`~preprocess.feature_map.FeatureMap` or :class:`optinter.defaults.DataStats`
    (:func:`optinter.defaults.resolve_defaults`), the library's dataclass defaults when it is
    None (for checking override keys before any data exists). A dataset *name* is refused: the
    defaults never depend on it (use :func:`paper_config` for the paper's per-dataset settings)."""
    if source is None:
        return RunConfig()
    if isinstance(source, str):
        raise TypeError("default_config takes a FeatureMap or DataStats, not a dataset name; "
                        "use paper_config(dataset, model) for Table IV")
    from .defaults import DataStats, resolve_defaults

    stats = source if isinstance(source, DataStats) else DataStats.from_feature_map(source)
    return resolve_defaults(stats, model).config


def _coerce(current: Any, raw: Any, key: str) -> Any:
    if not isinstance(raw, str):
        ok = (isinstance(raw, bool) if isinstance(current, bool)
              else isinstance(raw, int) and not isinstance(raw, bool) if isinstance(current, int)
              else isinstance(raw, (int, float)) and not isinstance(raw, bool) if isinstance(current, float)
              else isinstance(raw, (list, tuple)) and all(isinstance(x, int) for x in raw)
              if isinstance(current, tuple) else True)
        if not ok:
            raise ValueError(f"config override {key}={raw!r}: expected a {type(current).__name__}")
        return tuple(raw) if isinstance(current, tuple) else float(raw) if isinstance(current, float) else raw
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            return tuple(int(x) for x in raw.replace("x", ",").split(",") if x.strip()) if raw.strip() else ()
    except ValueError:
        raise ValueError(f"config override {key}={raw!r}: expected a {type(current).__name__}") from None
    return raw


def _apply(cfg: RunConfig, overrides: dict[str, Any]) -> None:
    for key, raw in overrides.items():
        sec, _, name = key.partition(".")
        if sec not in ("model", "train") or not name:
            raise ValueError(f"config override {key!r}: keys look like model.<name> or train.<name>")
        obj = getattr(cfg, sec)
        if not hasattr(obj, name):
            known = ", ".join(f"{sec}.{f.name}" for f in dataclasses.fields(obj))
            raise ValueError(f"config override {key!r}: unknown key; known keys: {known}")
        setattr(obj, name, _coerce(getattr(obj, name), raw, key))


def apply_overrides(cfg: RunConfig, overrides: Iterable[str] | dict[str, Any]) -> RunConfig:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied, validated."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    if not isinstance(overrides, dict):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"config override {item!r}: expected key=value")
            k, v = item.split("=", 1)
            parsed[k.strip()] = v.strip()
        overrides = parsed
    _apply(cfg, overrides)
    cfg.validate()
    return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML or JSON file (``--config FILE``, what ``optinter tune`` writes), as a
    flat ``{"section.key": value}`` dict checked against the dataclasses.

    Accepted shapes: nested ``{"model": {"embed_dim": 8}, "train": {"lr_o": 1e-3}}`` or flat
    ``{"model.embed_dim": 8, "train.lr_o": 1e-3}``; other top-level keys of a tuning result
    (``tuned``: what was tuned and how well) are ignored. An unknown key, a bad value or a file
    that is not a mapping is a ``ValueError`` naming the file and the key."""
    import json

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config {p}: no such file")
    text = p.read_text()
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"--config {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"--config {p}: expected a mapping of model.* / train.* settings, got {type(raw).__name__}")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in CONFIG_FILE_META_KEYS:
            continue
        if key in ("model", "train"):
            if not isinstance(value, dict):
                raise ValueError(f"--config {p}: key {key!r} must be a mapping")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    try:
        apply_overrides(RunConfig(), flat)  # unknown keys / bad values, before any training
    except ValueError as e:
        raise ValueError(f"--config {p}: {e}") from None
    return flat


#: Top-level keys of a config file that are information, not settings.
CONFIG_FILE_META_KEYS = ("tuned",)


def merged_config(base: RunConfig, config_file: str | Path | None = None,
                  overrides: Iterable[str] | dict[str, Any] = ()) -> RunConfig:
    """``base`` (defaults), then the settings of ``config_file``, then ``overrides`` (``--set``)."""
    cfg = apply_overrides(base, load_config_file(config_file)) if config_file else base
    return apply_overrides(cfg, overrides)
