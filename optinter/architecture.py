"""A searched architecture: for every pair of fields, memorize / factorize / naive (eq. 15, 19).

``architecture.json``::

    {"version": 1, "model": "optinter", "source": "search",
     "pairs": {"c0|c1": "memorize", ...},               # FeatureMap pair order
     "probs": {"c0|c1": [p_m, p_f, p_n], ...},          # softmax(α), optional
     "counts": [n_memorize, n_factorize, n_naive],      # as in Table VI
     "decision": {"decided": true, "clear_share": 0.8, ...},  # how far α moved (with probs)
     "pair_decision": {"c0|c1": {"max_prob", "margin", "entropy"}, ...},
     "feature_map_hash": "...", "meta": {...}}

``model`` names the registered model whose re-train variant consumes it (``optinter`` or
``autofis``). :meth:`Architecture.validate` checks it against a :class:`FeatureMap` with a
clear error naming the offending pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from preprocess.atomic import json_path, read_json, write_json_atomic
from preprocess.feature_map import FeatureMap, fingerprint

CHOICES = ("memorize", "factorize", "naive")
ARCH_FILE = "architecture.json"
ARCH_VERSION = 1
#: A pair's choice is *clear* when its largest probability leads the runner-up by this much.
CLEAR_MARGIN = 0.2
#: A search is *decided* when at least this share of its pairs has a clear choice.
DECIDED_SHARE = 0.5


@dataclass
class Architecture:
    """Per-pair choice (``CHOICES``) in feature-map pair order, with optional α probabilities."""

    pairs: list[str]
    choices: list[str]
    probs: list[list[float]] | None = None  # P × 3, columns = CHOICES
    model: str = "optinter"
    source: str = "search"  # "search" | "bilevel" | "random" | "fixed"
    feature_map_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.pairs) != len(self.choices):
            raise ValueError(f"architecture: {len(self.pairs)} pairs but {len(self.choices)} choices")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError("architecture: duplicate pair names")
        for p, c in zip(self.pairs, self.choices):
            if c not in CHOICES:
                raise ValueError(f"architecture: pair {p!r} has choice {c!r}; expected one of {CHOICES}")
        if self.probs is not None:
            if len(self.probs) != len(self.pairs) or any(len(r) != len(CHOICES) for r in self.probs):
                raise ValueError(f"architecture: probs must be {len(self.pairs)} × {len(CHOICES)}")

    # ---- views ---------------------------------------------------------------------------------
    def counts(self) -> list[int]:
        """``[n_memorize, n_factorize, n_naive]`` (Table VI)."""
        return [self.choices.count(c) for c in CHOICES]

    def count_dict(self) -> dict[str, int]:
        m, f, n = self.counts()
        return {"n_memorize": m, "n_factorize": f, "n_naive": n}

    def decision(self) -> dict[str, Any]:
        """How far the search moved the probabilities (needs ``probs``; an architecture without
        them — fixed, random — counts as decided).

        ``max_prob_*``: the pairs' largest probability (1/3 = uniform, 1 = certain);
        ``entropy_mean``: mean entropy / log 3 (1 = uniform, 0 = certain); ``clear_share``: the
        share of pairs whose largest probability leads the runner-up by ≥ :data:`CLEAR_MARGIN`;
        ``decided``: ``clear_share ≥`` :data:`DECIDED_SHARE`. Per pair: :meth:`pair_decisions`."""
        if self.probs is None or not self.pairs:
            return {"decided": True, "clear_share": 1.0, "max_prob_mean": 1.0, "max_prob_min": 1.0,
                    "entropy_mean": 0.0, "n_clear": len(self.pairs)}
        p = np.clip(np.asarray(self.probs, dtype=np.float64), 1e-12, 1.0)
        top = np.sort(p, axis=1)[:, ::-1]
        margin = top[:, 0] - top[:, 1]
        ent = -(p * np.log(p)).sum(axis=1) / np.log(len(CHOICES))
        clear = margin >= CLEAR_MARGIN
        share = float(clear.mean())
        return {"decided": share >= DECIDED_SHARE, "clear_share": share, "n_clear": int(clear.sum()),
                "max_prob_mean": float(top[:, 0].mean()), "max_prob_min": float(top[:, 0].min()),
                "entropy_mean": float(ent.mean())}

    def pair_decisions(self) -> dict[str, dict[str, float]]:
        """``{pair: {"max_prob", "entropy", "margin"}}`` (entropy / log 3); empty without ``probs``."""
        if self.probs is None:
            return {}
        out = {}
        for name, row in zip(self.pairs, self.probs):
            q = np.clip(np.asarray(row, dtype=np.float64), 1e-12, 1.0)
            top = np.sort(q)[::-1]
            out[name] = {"max_prob": float(top[0]), "margin": float(top[0] - top[1]),
                         "entropy": float(-(q * np.log(q)).sum() / np.log(len(CHOICES)))}
        return out

    def choice(self, pair: str) -> str:
        return self.choices[self.pairs.index(pair)]

    def indices(self, kind: str) -> list[int]:
        """Positions (in pair order) of the pairs with choice ``kind``."""
        if kind not in CHOICES:
            raise ValueError(f"unknown choice {kind!r}; expected one of {CHOICES}")
        return [i for i, c in enumerate(self.choices) if c == kind]

    def hash(self) -> str:
        """Stable sha256 of the pair → choice mapping (probabilities and meta excluded)."""
        return fingerprint([self.model, list(zip(self.pairs, self.choices))])

    # ---- checks ---------------------------------------------------------------------------------
    def validate(self, fmap: FeatureMap, where: str = "architecture") -> None:
        """Raise ValueError unless the pairs are exactly the feature map's pairs, in its order."""
        want = [p.name for p in fmap.pairs]
        if self.pairs == want:
            return
        missing = [p for p in want if p not in self.pairs]
        extra = [p for p in self.pairs if p not in want]
        if missing or extra:
            raise ValueError(
                f"{where} does not match the feature map of dataset {fmap.dataset!r}: "
                f"{len(self.pairs)} pairs vs {len(want)}; missing {missing[:5]}, unknown {extra[:5]}"
            )
        raise ValueError(f"{where}: pairs are not in the feature map's order (first is {self.pairs[0]!r}, expected {want[0]!r})")

    def reorder(self, fmap: FeatureMap) -> "Architecture":
        """The same choices in ``fmap``'s pair order (same pair set required)."""
        want = [p.name for p in fmap.pairs]
        if sorted(want) != sorted(self.pairs):
            self.validate(fmap)
        pos = {p: i for i, p in enumerate(self.pairs)}
        return Architecture(
            pairs=want,
            choices=[self.choices[pos[p]] for p in want],
            probs=None if self.probs is None else [self.probs[pos[p]] for p in want],
            model=self.model,
            source=self.source,
            feature_map_hash=self.feature_map_hash,
            meta=dict(self.meta),
        )

    # ---- (de)serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": ARCH_VERSION,
            "model": self.model,
            "source": self.source,
            "pairs": dict(zip(self.pairs, self.choices)),
            "counts": self.counts(),
            "feature_map_hash": self.feature_map_hash,
            "hash": self.hash(),
            "meta": self.meta,
        }
        if self.probs is not None:
            d["probs"] = {p: [float(x) for x in r] for p, r in zip(self.pairs, self.probs)}
            d["decision"] = self.decision()
            d["pair_decision"] = self.pair_decisions()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "architecture") -> "Architecture":
        if d.get("version") != ARCH_VERSION:
            raise ValueError(f"{where}: version {d.get('version')!r} is not supported (expected {ARCH_VERSION})")
        if not isinstance(d.get("pairs"), dict):
            raise ValueError(f"{where}: 'pairs' must map pair name → choice")
        pairs = list(d["pairs"])
        probs_d = d.get("probs")
        probs = None
        if probs_d is not None:
            missing = [p for p in pairs if p not in probs_d]
            if missing:
                raise ValueError(f"{where}: no probs for pairs {missing[:5]}")
            probs = [list(map(float, probs_d[p])) for p in pairs]
        try:
            return cls(
                pairs=pairs,
                choices=list(d["pairs"].values()),
                probs=probs,
                model=d.get("model", "optinter"),
                source=d.get("source", "search"),
                feature_map_hash=d.get("feature_map_hash", ""),
                meta=d.get("meta", {}),
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (``path`` may be a folder: ``architecture.json`` inside)."""
        return write_json_atomic(path, self.to_dict(), default_name=ARCH_FILE)

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        path = json_path(path, ARCH_FILE)
        d = read_json(path, missing="no architecture file (run `optinter search` first)")
        return cls.from_dict(d, where=str(path))

    # ---- constructors ---------------------------------------------------------------------------
    @classmethod
    def uniform(cls, fmap: FeatureMap, choice: str, model: str = "optinter") -> "Architecture":
        """Every pair gets ``choice`` (``memorize`` = OptInter-M, ``factorize`` = OptInter-F)."""
        return cls(
            pairs=[p.name for p in fmap.pairs],
            choices=[choice] * fmap.num_pairs,
            model=model,
            source="fixed",
            feature_map_hash=fmap.content_hash,
        )

    @classmethod
    def from_probs(
        cls, fmap: FeatureMap, probs: np.ndarray | Sequence[Sequence[float]], model: str = "optinter", source: str = "search"
    ) -> "Architecture":
        """Argmax choice per pair (eq. 19) from P × 3 probabilities (columns = ``CHOICES``)."""
        arr = np.asarray(probs, dtype=np.float64)
        if arr.shape != (fmap.num_pairs, len(CHOICES)):
            raise ValueError(f"probs must be {fmap.num_pairs} × {len(CHOICES)}, got {arr.shape}")
        return cls(
            pairs=[p.name for p in fmap.pairs],
            choices=[CHOICES[k] for k in arr.argmax(axis=1)],
            probs=arr.tolist(),
            model=model,
            source=source,
            feature_map_hash=fmap.content_hash,
        )


def random_architecture(fmap: FeatureMap, seed: int, model: str = "optinter") -> Architecture:
    """Each pair gets a uniformly random choice (Table VIII "Random"), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(CHOICES), size=fmap.num_pairs)
    return Architecture(
        pairs=[p.name for p in fmap.pairs],
        choices=[CHOICES[k] for k in picks],
        model=model,
        source="random",
        feature_map_hash=fmap.content_hash,
        meta={"seed": seed},
    )
