"""Deterministic synthetic CTR data with planted pairwise interactions and known click probabilities.

The click logit of a row is

    logit = b + Σ_i w_i[x_i] + Σ_k β_k · n_k
            + Σ_{(i,j) ∈ memorize}  T_ij[x_i, x_j]          (arbitrary full-rank table)
            + Σ_{(i,j) ∈ factorize} ⟨U_ij[x_i], V_ij[x_j]⟩   (rank-r inner product)

and every other pair has no interaction (*naive*). Categorical values are Zipf-distributed.

Why the defaults make the planted structure matter:

* *memorize* pairs sit on low-cardinality fields (every value pair is frequent, so a cross-product
  embedding learns its cell) and their table is i.i.d. Gaussian — full rank, so a low-dimensional
  factorization of shared per-field embeddings cannot express it;
* *factorize* pairs sit on high-cardinality fields (most value pairs are rare, so a memorized cell
  is seen too few times) and are exactly low rank, so a Hadamard/inner product of embeddings
  generalizes where memorizing cannot;
* the remaining pairs carry nothing, so modelling them only adds noise and parameters.

Everything random is drawn from ``numpy.random.SeedSequence(seed)`` children: the planted
parameters do not depend on the row counts, and the same config gives byte-identical files.

Outputs of :func:`generate` in ``out_dir``: ``train.csv``, ``valid.csv``, ``test.csv`` (header
``label,p_true,c0..c{M-1},n0..n{K-1}``; ``p_true`` is the row's true click probability) and
``truth.json`` (field cardinalities, each pair's planted kind, the Bayes-optimal AUC / log loss of
every split computed from ``p_true``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_output_dir

log = logging.getLogger(__name__)

KINDS = ("memorize", "factorize", "naive")


@dataclass
class SynthConfig:
    """Settings of the generator. Field ``i`` is named ``c{i}``, continuous field ``k`` ``n{k}``."""

    seed: int = 2026
    n_train: int = 200_000
    n_valid: int = 20_000
    n_test: int = 20_000
    cardinalities: tuple[int, ...] = (6, 8, 10, 12, 14, 16, 30, 40)
    n_continuous: int = 2
    memorize_pairs: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (0, 5))
    factorize_pairs: tuple[tuple[int, int], ...] = ((6, 7),)
    zipf_exponent: float = 0.9
    first_order_std: float = 0.2
    memorize_std: float = 1.2
    factorize_rank: int = 3
    factorize_std: float = 0.75
    continuous_coef: float = 0.6
    target_ctr: float = 0.22

    def validate(self) -> None:
        m = len(self.cardinalities)
        if m < 2:
            raise ValueError("synth: need at least two categorical fields (cardinalities)")
        if any(c < 2 for c in self.cardinalities):
            raise ValueError(f"synth: every cardinality must be >= 2, got {self.cardinalities}")
        for name in ("n_train", "n_valid", "n_test"):
            if getattr(self, name) <= 0:
                raise ValueError(f"synth: {name} must be positive, got {getattr(self, name)}")
        seen: set[tuple[int, int]] = set()
        for kind, pairs in (("memorize", self.memorize_pairs), ("factorize", self.factorize_pairs)):
            for p in pairs:
                a, b = sorted(p)
                if a == b or not (0 <= a < m and 0 <= b < m):
                    raise ValueError(f"synth: {kind} pair {p} is not a pair of two fields in 0..{m - 1}")
                if (a, b) in seen:
                    raise ValueError(f"synth: pair {p} is planted twice")
                seen.add((a, b))
        if not 0.0 < self.target_ctr < 1.0:
            raise ValueError("synth: target_ctr must be in (0, 1)")
        if self.zipf_exponent <= 0:
            raise ValueError("synth: zipf_exponent must be > 0")

    @property
    def field_names(self) -> list[str]:
        return [f"c{i}" for i in range(len(self.cardinalities))]

    def planted_kinds(self) -> dict[str, str]:
        """``"c{a}|c{b}"`` → planted kind, for every pair of categorical fields (a < b)."""
        kinds = {}
        mem = {tuple(sorted(p)) for p in self.memorize_pairs}
        fac = {tuple(sorted(p)) for p in self.factorize_pairs}
        for a, b in combinations(range(len(self.cardinalities)), 2):
            kind = "memorize" if (a, b) in mem else "factorize" if (a, b) in fac else "naive"
            kinds[f"c{a}|c{b}"] = kind
        return kinds


@dataclass
class _Planted:
    """The generator's parameters (drawn once per seed, independent of row counts)."""

    value_probs: list[np.ndarray]
    first_order: list[np.ndarray]
    cont_coef: np.ndarray
    mem_tables: dict[tuple[int, int], np.ndarray]
    fac_vectors: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
    bias: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _zipf_probs(card: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, card + 1, dtype=np.float64) ** s
    return p / p.sum()


def _plant(cfg: SynthConfig) -> _Planted:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    probs = [_zipf_probs(c, cfg.zipf_exponent) for c in cfg.cardinalities]
    first = [rng.normal(0.0, cfg.first_order_std, size=c) for c in cfg.cardinalities]
    cont = rng.choice([-1.0, 1.0], size=cfg.n_continuous) * cfg.continuous_coef
    mem = {}
    for a, b in sorted(tuple(sorted(p)) for p in cfg.memorize_pairs):
        mem[(a, b)] = rng.normal(0.0, cfg.memorize_std, size=(cfg.cardinalities[a], cfg.cardinalities[b]))
    fac = {}
    scale = (cfg.factorize_std**2 / cfg.factorize_rank) ** 0.25  # ⟨u, v⟩ has std factorize_std
    for a, b in sorted(tuple(sorted(p)) for p in cfg.factorize_pairs):
        u = rng.normal(0.0, scale, size=(cfg.cardinalities[a], cfg.factorize_rank))
        v = rng.normal(0.0, scale, size=(cfg.cardinalities[b], cfg.factorize_rank))
        fac[(a, b)] = (u, v)
    return _Planted(probs, first, cont, mem, fac)


def _sample(cfg: SynthConfig, planted: _Planted, n: int, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n rows: ids n × M (0-based value index), continuous n × K, logit without bias n."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, stream]))
    m = len(cfg.cardinalities)
    ids = np.empty((n, m), dtype=np.int64)
    for i, p in enumerate(planted.value_probs):
        ids[:, i] = rng.choice(len(p), size=n, p=p)
    cont = rng.random((n, cfg.n_continuous))
    logit = np.zeros(n)
    for i, w in enumerate(planted.first_order):
        logit += w[ids[:, i]]
    logit += cont @ planted.cont_coef
    for (a, b), t in planted.mem_tables.items():
        logit += t[ids[:, a], ids[:, b]]
    for (a, b), (u, v) in planted.fac_vectors.items():
        logit += np.einsum("nr,nr->n", u[ids[:, a]], v[ids[:, b]])
    return ids, cont, logit


def _calibrate_bias(logit: np.ndarray, target: float) -> float:
    """Bias b such that mean(sigmoid(logit + b)) == target (bisection; monotone in b)."""
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def bayes_metrics(p_true: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """AUC and log loss of the true probabilities: the best any model can reach on these rows."""
    from sklearn.metrics import log_loss, roc_auc_score

    return {
        "auc": float(roc_auc_score(label, p_true)),
        "logloss": float(log_loss(label, np.clip(p_true, 1e-12, 1 - 1e-12), labels=[0, 1])),
        "rows": int(len(label)),
        "pos_ratio": float(label.mean()),
    }


def _frame(cfg: SynthConfig, ids: np.ndarray, cont: np.ndarray, p: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    cols: dict[str, Any] = {"label": label.astype(np.int8), "p_true": p}
    for i, name in enumerate(cfg.field_names):
        cols[name] = np.char.add(f"{name}_", ids[:, i].astype(str))
    for k in range(cfg.n_continuous):
        # raw continuous values on an arbitrary scale: preprocessing min-max scales them back
        cols[f"n{k}"] = np.round(cont[:, k] * 100.0, 4)
    return pd.DataFrame(cols)


def generate(cfg: SynthConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``train.csv``, ``valid.csv``, ``test.csv`` and ``truth.json`` into ``out_dir``.

    Written to a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failure leaves nothing half-written. Returns the content of ``truth.json``.
    """
    cfg.validate()
    t0 = time.time()
    out = Path(out_dir)
    planted = _plant(cfg)
    # Calibrate the bias on a fixed-size sample from its own stream (independent of row counts).
    _, _, calib_logit = _sample(cfg, planted, 50_000, stream=99)
    planted.bias = _calibrate_bias(calib_logit, cfg.target_ctr)

    truth: dict[str, Any] = {
        "config": json.loads(json.dumps(asdict(cfg))),
        "fields": [{"name": n, "cardinality": c} for n, c in zip(cfg.field_names, cfg.cardinalities)],
        "continuous": [f"n{k}" for k in range(cfg.n_continuous)],
        "pairs": cfg.planted_kinds(),
        "bias": planted.bias,
        "bayes": {},
    }
    with atomic_output_dir(out) as tmp:
        for stream, (split, n) in enumerate((("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test))):
            ids, cont, logit = _sample(cfg, planted, n, stream=stream)
            # rounded once, so the file and the Bayes figures see the very same probabilities
            p = np.round(1.0 / (1.0 + np.exp(-(logit + planted.bias))), 10)
            label_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3, stream]))
            label = (label_rng.random(n) < p).astype(np.int8)
            _frame(cfg, ids, cont, p, label).to_csv(tmp / f"{split}.csv", index=False)
            truth["bayes"][split] = bayes_metrics(p, label)
            log.info("synth: %s %d rows, pos ratio %.4f, Bayes AUC %.4f", split, n, label.mean(),
                     truth["bayes"][split]["auc"])
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True))
    log.info("synth: wrote %s in %.1f s", out, time.time() - t0)
    return truth


def load_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``truth.json`` (a file or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no truth.json here (write one with `optinter synth`)")
    return json.loads(p.read_text())
