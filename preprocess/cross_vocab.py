"""Cross-product vocabulary for pairs of categorical fields, built from encoded integer ids.

For a pair ``(a, b)`` the cross value of a row is the int64 key ``id_a * vocab_b + id_b`` of the
two *encoded* field ids (never concatenated strings).  Keys seen on train at least ``threshold``
times are kept and get ids ``2 ..`` sorted by train count descending, then key ascending (key order
is ``(id_a, id_b)`` order); every other key maps to ``OOV_ID = 1``.

Counting is per partition (:func:`count_pair`: a dense ``bincount`` when ``vocab_a * vocab_b`` is
small, a hash count otherwise) and small ``key → count`` tables are reduced per pair
(:func:`reduce_pair`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from preprocess.feature_map import FIRST_ID, OOV_ID, pair_column

assert OOV_ID == FIRST_ID - 1

DENSE_LIMIT = 1 << 21


def pair_keys(a_ids: np.ndarray, b_ids: np.ndarray, vocab_b: int) -> np.ndarray:
    """int64 cross key per row (shape N)."""
    return np.asarray(a_ids, dtype=np.int64) * np.int64(vocab_b) + np.asarray(b_ids, dtype=np.int64)


def count_keys(keys: np.ndarray, key_space: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (int64) and their counts (int64) of one partition; keys need not be sorted."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if key_space <= DENSE_LIMIT and key_space <= 4 * len(keys):
        c = np.bincount(keys, minlength=key_space)
        nz = np.flatnonzero(c)
        return nz.astype(np.int64), c[nz].astype(np.int64)
    vc = pd.Series(keys, copy=False).value_counts(sort=False)
    return vc.index.to_numpy(dtype=np.int64), vc.to_numpy(dtype=np.int64)


def count_pair(a_ids: np.ndarray, b_ids: np.ndarray, vocab_a: int, vocab_b: int) -> tuple[np.ndarray, np.ndarray]:
    return count_keys(pair_keys(a_ids, b_ids, vocab_b), vocab_a * vocab_b)


def reduce_pair(parts: Iterable[tuple[np.ndarray, np.ndarray]], threshold: int) -> dict[str, Any]:
    """Sum partition tables; kept keys (count >= threshold) in id order, their counts, #distinct."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return {"keys": np.zeros(0, np.int64), "counts": np.zeros(0, np.int64), "distinct": 0}
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    if len(parts) > 1:
        s = pd.Series(counts, copy=False).groupby(keys, sort=False).sum()
        keys, counts = s.index.to_numpy(dtype=np.int64), s.to_numpy(dtype=np.int64)
    distinct = len(keys)
    keep = counts >= threshold
    keys, counts = keys[keep], counts[keep]
    order = np.lexsort((keys, -counts))
    return {"keys": keys[order], "counts": counts[order], "distinct": distinct}


class CrossVocab:
    """Vocabulary of every configured pair (scikit-learn style).

    ``keys_[pair]``: kept int64 keys in id order (key ``keys_[p][i]`` has id ``i + 2``);
    ``counts_[pair]``: their train counts; ``distinct_[pair]``: distinct train keys;
    ``vocab_b_[pair]``: the multiplier ``vocab_b``; ``thresholds_[pair]``.  Pairs are named
    ``"a|b"`` (:func:`preprocess.feature_map.pair_column`).
    """

    def __init__(self, threshold: int = 1, thresholds: Mapping[str, int] | None = None) -> None:
        self.threshold = threshold
        self.thresholds = dict(thresholds or {})

    def threshold_for(self, pair: str) -> int:
        return int(self.thresholds.get(pair, self.threshold))

    def _init_state(self) -> None:
        if not hasattr(self, "keys_"):
            self.keys_: dict[str, np.ndarray] = {}
            self.counts_: dict[str, np.ndarray] = {}
            self.distinct_: dict[str, int] = {}
            self.vocab_b_: dict[str, int] = {}
            self.thresholds_: dict[str, int] = {}
        if not hasattr(self, "_index"):
            self._index: dict[str, pd.Index] = {}

    def set_pair(self, name: str, vocab_b: int, reduced: Mapping[str, Any]) -> "CrossVocab":
        self._init_state()
        self.keys_[name] = np.asarray(reduced["keys"], dtype=np.int64)
        self.counts_[name] = np.asarray(reduced["counts"], dtype=np.int64)
        self.distinct_[name] = int(reduced["distinct"])
        self.vocab_b_[name] = int(vocab_b)
        self.thresholds_[name] = self.threshold_for(name)
        self._index.pop(name, None)
        return self

    def fit(self, ids: Mapping[str, np.ndarray], vocab_sizes: Mapping[str, int],
            pairs: Sequence[tuple[str, str]]) -> "CrossVocab":
        """Fit on encoded train ids (``ids[field]`` int arrays, shape N) for the given pairs."""
        for attr in ("keys_", "_index"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._init_state()
        for a, b in pairs:
            name = pair_column(a, b)
            part = count_pair(np.asarray(ids[a]), np.asarray(ids[b]), vocab_sizes[a], vocab_sizes[b])
            self.set_pair(name, vocab_sizes[b], reduce_pair([part], self.threshold_for(name)))
        return self

    def vocab_size(self, name: str) -> int:
        return len(self.keys_[name]) + FIRST_ID

    def transform_pair(self, name: str, a_ids: np.ndarray, b_ids: np.ndarray) -> np.ndarray:
        """Cross ids of one pair (int32, shape N)."""
        self._init_state()
        idx = self._index.get(name)
        if idx is None:
            idx = self._index[name] = pd.Index(self.keys_[name])
        pos = idx.get_indexer(pair_keys(a_ids, b_ids, self.vocab_b_[name]))
        # get_indexer gives -1 for unknown keys: -1 + FIRST_ID == OOV_ID
        pos += FIRST_ID
        return pos.astype(np.int32)

    # -- persistence: arrays in an .npz, the rest in JSON ------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``<path>.json`` (settings, sizes) and ``<path>.npz`` (kept keys and counts)."""
        path = Path(path)
        names = list(self.keys_)
        meta = {"threshold": self.threshold, "thresholds": self.thresholds, "pairs": names,
                "distinct_": self.distinct_, "vocab_b_": self.vocab_b_, "thresholds_": self.thresholds_}
        path.with_suffix(".json").write_text(json.dumps(meta, sort_keys=True))
        arrays = {}
        for i, n in enumerate(names):
            arrays[f"k{i}"] = self.keys_[n]
            arrays[f"c{i}"] = self.counts_[n]
        with open(path.with_suffix(".npz"), "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "CrossVocab":
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        cv = cls(threshold=meta["threshold"], thresholds=meta["thresholds"])
        cv._init_state()
        with np.load(path.with_suffix(".npz")) as z:
            for i, n in enumerate(meta["pairs"]):
                cv.keys_[n], cv.counts_[n] = z[f"k{i}"], z[f"c{i}"]
        cv.distinct_, cv.vocab_b_, cv.thresholds_ = meta["distinct_"], meta["vocab_b_"], meta["thresholds_"]
        return cv
