"""Training defaults as a function of the data, never of the dataset's name.

``resolve_defaults(stats, model)`` turns what ``feature_map.json`` records — train rows N, the
positive ratio p, the numbers of fields and pairs, the vocabulary sizes — into a
:class:`~optinter.config.RunConfig`, and says why each setting has its value
(:attr:`Resolved.reasons`, logged to MLflow as ``defaults.*`` tags and written beside the
metrics). ``docs/defaults.md`` has the table; the reasoning is here.

Anchor: the settings tuned on the validation split of the shipped Criteo sample (N = 110k,
p = 0.26, 39 fields, 325 pairs; see ``optinter/config.py``) are the values these rules give at
that size. Every rule is monotone in the statistic it reads and clamped to the range the paper's
Table IV (full data, N ≈ 40M) and the smallest samples we have (N ≈ 4k) bracket:

* **batch size** ``≈ N / 220`` rounded to a nice number in [128, 2000]: enough optimizer steps per
  epoch on small data (220 at N = 110k), Table IV's 2000 on large data;
* **learning rates fall when the validation AUC stops improving** (``lr_schedule="plateau"``): an
  epoch without improvement goes back to the best weights and optimizer state and halves the
  rates; a second one in a row stops training (patience 2, at most 20 epochs). A fixed per-epoch
  decay tuned on the sample (0.5) left the synthetic data under-trained (test AUC 0.829 after 20
  epochs against 0.905 with the plateau rule), because how many steps a model needs depends on
  the data, not on the epoch count;
* **embedding width** s1 grows with log N (10 at the sample, 20 at 40M rows), and is never wider
  than what the largest vocabulary can fill; the memorized width s2 = s1 / 5 (2 at the sample:
  a cross-product cell sees ~N / vocab rows, so it stays narrow until the data is large);
* **MLP** width 64 · 2^(log10 N − 4) (128 at the sample, 512 from 10M rows), 2 layers below 1M
  rows, 3 up to 10M, 5 above (Table IV); dropout 0.3 below 1M rows, 0.1 up to 10M, 0 above;
* **regularization against the label's entropy**: the L2 on looked-up embedding rows and the
  L2 of Poly2's cross weights are set for the sample's base rate and scaled by
  H(p) / H(0.26) — at a 1% click rate the per-row loss (and its gradient) is ~10× smaller,
  so the same penalty would be ~10× stronger relative to it;
* **OptInter starts as logistic regression**: a first-order term beside the MLP
  (``model.first_order``, not in the paper) and the MLP's output unit initialised to zero
  (``model.zero_init_output``), so the network's part grows only where training finds it useful
  (on 4k–8k-row data a randomly initialised output put OptInter up to 0.02 AUC below LR), and
  the first-order weights start from a fitted ``lr`` (``first_order_init = "lr"``,
  :mod:`optinter.warmstart`): the re-train ends no worse than that LR on valid;
* **search** (Algorithm 1) in steps, not epochs: ~600 steps (``search_epochs = ceil(600 /
  steps_per_epoch)``, 1–4), Θ at a constant rate ``search_lr = 3e-3`` (Θ must fit within the
  short search for α's gradient to mean anything; decaying Θ's rates while α still moves let α
  lock in early memorize choices), τ from 3 to 0.3 over the steps, and ``lr_a = 60 /
  search_steps``: Adam moves a logit by at most ~lr_a a step, so α can travel ~60 logits
  whatever N (Table IV's lr_a = 3e-5 for one epoch moves it by ~1e-3 at 110k rows: the argmax is
  then initialisation noise). The search reports how decided it ended
  (:meth:`optinter.architecture.Architecture.decision`);
* **pruning on validation** after the search (``search_prune = "valid"``, :mod:`optinter.prune`):
  the search's α is trained on the training loss, which never charges for memorizing noise;
  each searched (memorized or factorized) pair keeps its choice only if making it naive raises
  the validation log loss by more than ``prune_z = 2`` standard errors of the per-row difference;
  the re-trained ``optinter`` then learns its (validated) memorized tables at ``lr_c = lr_o``
  (synthetic data, seeds 11 / 42: test AUC +0.0024 / +0.0012, valid +0.0005 / +0.0015; no change
  on the small real files), the other models keep ``lr_c = lr_o / 5``;
* **output bias** (not a config value): every model starts from the train split's log-odds
  (:meth:`optinter.models.base.CTRModel.init_base_rate`).

``paper_config`` in :mod:`optinter.config` keeps Table IV exactly (``--paper``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from preprocess.feature_map import FeatureMap

from .config import RunConfig, _apply

#: The shipped Criteo sample the rules are anchored at (train rows, positive ratio).
ANCHOR_ROWS = 110_000
ANCHOR_POS_RATIO = 0.2568
#: Optimizer steps an epoch aims at (the batch size rule) and steps of the search.
STEPS_PER_EPOCH = 220
SEARCH_STEPS = 600
#: How far (in logits) α may move during the search: lr_a = ALPHA_TRAVEL / search steps.
ALPHA_TRAVEL = 60.0
#: Θ's (constant) learning rate during the search, and the Gumbel temperature schedule.
SEARCH_LR = 3e-3
TAU_START, TAU_END = 3.0, 0.3
#: A searched pair is kept when making it naive raises the valid loss by > PRUNE_Z standard errors.
PRUNE_Z = 2.0
SHALLOW = ("lr", "poly2", "fm", "fwfm", "fmfm")
OPTINTER_FAMILY = ("optinter", "optinter_m", "optinter_f")


@dataclass(frozen=True)
class DataStats:
    """What the defaults read from a feature map."""

    train_rows: int
    pos_ratio: float
    num_fields: int
    num_pairs: int
    vocab_total: int
    vocab_max: int

    @classmethod
    def from_feature_map(cls, fmap: FeatureMap) -> "DataStats":
        train = fmap.splits.get("train")
        if train is None or train.rows <= 0:
            raise ValueError("feature map: the defaults need a non-empty train split")
        vocabs = [int(f.vocab_size or 0) for f in fmap.fields if f.kind == "categorical"]
        return cls(
            train_rows=int(train.rows),
            pos_ratio=float(train.pos_ratio),
            num_fields=int(fmap.num_fields),
            num_pairs=int(fmap.num_pairs),
            vocab_total=int(sum(vocabs) + sum(p.vocab_size for p in fmap.pairs)),
            vocab_max=int(max(vocabs, default=2)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resolved:
    """A resolved configuration and, per setting, the rule that gave it."""

    config: RunConfig
    reasons: dict[str, str] = field(default_factory=dict)
    stats: DataStats | None = None


def binary_entropy(p: float) -> float:
    """H(p) in nats (the log loss of predicting the constant base rate)."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _nice(x: float, lo: int, hi: int) -> int:
    """``x`` rounded to 1, 2 or 5 × a power of ten (or 128 / 256), clamped to [lo, hi]."""
    x = min(max(x, lo), hi)
    e = 10 ** math.floor(math.log10(x))
    cands = [c * e for c in (1, 2, 2.5, 5, 10)]
    best = min(cands, key=lambda c: abs(math.log(c / x)))
    return int(min(max(round(best), lo), hi))


def batch_size_for(rows: int) -> int:
    return _nice(rows / STEPS_PER_EPOCH, 128, 2000)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / batch_size))


def resolve_defaults(stats: DataStats, model: str = "optinter") -> Resolved:
    """The default :class:`RunConfig` of ``model`` for data with ``stats`` (see the module docstring)."""
    n, p = stats.train_rows, stats.pos_ratio
    log10n = math.log10(max(n, 10))
    reasons: dict[str, str] = {}
    o: dict[str, Any] = {}

    def put(key: str, value: Any, why: str) -> None:
        o[key] = value
        reasons[key] = why

    bs = batch_size_for(n)
    put("train.batch_size", bs, f"~N/{STEPS_PER_EPOCH} in [128, 2000] (N = {n:,})")
    spe = steps_per_epoch(n, bs)
    put("train.lr_schedule", "plateau", "rates fall when the validation AUC stops improving, whatever the data's size")
    put("train.lr_decay", 0.5, "an epoch without improvement: back to the best weights, rates halved")
    put("train.epochs", 20, "upper bound; early stopping on valid AUC (patience 2) ends training")
    put("train.patience", 2, "stop after 2 epochs in a row without improvement (one halving in between)")

    s1 = int(min(max(round(10 + 10 * (log10n - math.log10(ANCHOR_ROWS)) / (7.6 - math.log10(ANCHOR_ROWS))), 4), 20))
    s1 = min(s1, max(4, 2 * math.ceil(math.log2(max(stats.vocab_max, 2)))))
    s1 += s1 % 2
    put("model.embed_dim", s1, f"grows with log N: 10 at 110k rows, 20 at 40M (largest vocabulary {stats.vocab_max:,})")
    s2 = max(1, round(s1 / 5))
    put("model.cross_embed_dim", s2, "s1 / 5: a cross-product cell sees few rows until the data is large")
    width = int(min(max(64 * 2 ** math.floor(log10n - 4), 64), 512))
    depth = 2 if n < 1_000_000 else 3 if n < 10_000_000 else 5
    put("model.mlp_dims", (width,) * depth, f"{width} wide (64·2^(log10 N − 4)), {depth} layers for N = {n:,}")
    dropout = 0.3 if n < 1_000_000 else 0.1 if n < 10_000_000 else 0.0
    put("model.dropout", dropout, "0.3 below 1M rows, 0.1 below 10M, 0 above")

    # Regularization relative to the per-row loss of the base rate.
    h_ratio = binary_entropy(p) / binary_entropy(ANCHOR_POS_RATIO)
    put("train.lr_o", 1e-3, "Adam step of the embeddings and the network; the plateau rule halves it when it overshoots")
    put("train.lr_c", 2e-4, "memorized cross-product tables over-fit first: lr_c = lr_o / 5 (Table IV: lr_c < lr_o)")

    if model in SHALLOW:
        put("train.lr_o", 3e-3, "shallow models have few parameters and converge slowly at 5e-4")
        if model == "poly2":
            put("train.emb_l2_c", round(1e-2 * h_ratio, 8),
                f"cross weights act as copies of the bias: L2 1e-2 × H(p)/H(0.26) = ×{h_ratio:.3f}")
    if model in OPTINTER_FAMILY:
        put("model.first_order", True, "a first-order (LR) term beside the MLP: the linear part carries "
                                       "most of the signal on small data (not in the paper)")
        put("train.lr_first", 3e-3, "first-order weights learn at the LR model's rate")
        put("train.first_order_init", "lr", "the first-order term starts from a fitted LR (the re-train keeps "
                                           "that start unless an epoch beats it on valid)")
        put("model.zero_init_output", True, "the MLP's output starts at zero: the model starts as LR and the "
                                            "network's part grows only where it helps")
        put("train.emb_l2_o", round(3e-3 * h_ratio, 8), f"L2 on looked-up embeddings 3e-3 × H(p)/H(0.26) = ×{h_ratio:.3f}")
    if model in ("optinter", "autofis"):
        se = int(min(max(math.ceil(SEARCH_STEPS / spe), 1), 4))
        put("train.search_epochs", se, f"~{SEARCH_STEPS} search steps ({spe} an epoch)")
        steps = se * spe
        put("train.lr_a", round(ALPHA_TRAVEL / steps, 6), f"α can move by ~{ALPHA_TRAVEL:g} logits in {steps} Adam steps")
    if model == "optinter":
        put("train.search_lr", SEARCH_LR, "Θ must fit within the short search for α's gradient to mean something")
        put("model.tau_start", TAU_START, "Gumbel temperature schedule of the search (per step)")
        put("model.tau_end", TAU_END, "Gumbel temperature schedule of the search (per step)")
        put("train.lr_c", 1e-3, "the re-trained architecture memorizes only pairs that passed the validation test "
                                "(search_prune), so their tables learn at lr_o, not lr_o / 5")
        put("train.search_prune", "valid", "the search's training loss does not charge for memorizing noise: a "
                                          "searched pair stays only if removing it measurably raises the valid loss")
        put("train.prune_z", PRUNE_Z, f"one-sided test: removing the pair costs more than {PRUNE_Z:g} standard errors")

    cfg = RunConfig()
    _apply(cfg, o)
    cfg.validate()
    return Resolved(config=cfg, reasons=reasons, stats=stats)


def data_config(fmap: FeatureMap, model: str = "optinter") -> Resolved:
    """:func:`resolve_defaults` for the data described by ``fmap``."""
    return resolve_defaults(DataStats.from_feature_map(fmap), model)


def table(rows: tuple[int, ...] = (5_000, 110_000, 1_000_000, 45_000_000), pos_ratio: float = ANCHOR_POS_RATIO,
          model: str = "optinter") -> str:
    """A Markdown table of the resolved settings at several train sizes (``python -m optinter.defaults``)."""
    cfgs = [resolve_defaults(DataStats(n, pos_ratio, 39, 325, 10 * n, 20_000), model) for n in rows]
    keys = list(cfgs[-1].reasons)
    head = "| setting | " + " | ".join(f"N = {n:,}" for n in rows) + " | rule |"
    out = [head, "|" + "---|" * (len(rows) + 2)]
    for k in keys:
        vals = []
        for c in cfgs:
            v = c.config.flat()[k]
            vals.append("×".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v))
        out.append(f"| `{k}` | " + " | ".join(vals) + f" | {cfgs[-1].reasons[k]} |")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(table(model=sys.argv[1] if len(sys.argv) > 1 else "optinter"))
