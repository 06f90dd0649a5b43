"""Cross-product vocabulary for pairs of categorical fields, built from encoded integer ids.

For a pair ``(a, b)`` the cross value of a row is the int64 key ``id_a * vocab_b + id_b`` of the
two *encoded* field ids (never concatenated strings).  Keys seen on train at least ``threshold``
times are kept and get ids ``2 ..`` sorted by train count descending, then key ascending (key order
is ``(id_a, id_b)`` order); every other key maps to ``OOV_ID = 1``.

Counting is per partition (:func:`count_pair`: a dense ``bincount`` when ``vocab_a * vocab_b`` is
small, a hash count otherwise; int32 counts) and the ``key → count`` tables are reduced per pair
(:func:`reduce_pair`).  For out-of-core reduction a pair's key space can be cut into ``R`` equal key
ranges (:func:`bucket_width`, :func:`split_buckets`): each range is reduced on its own and the kept
keys of the ranges are merged (:func:`merge_buckets`), so the memory of one reduce task is bounded by
the size of one range, not by the number of rows.

Ids are looked up (:meth:`CrossVocab.transform_pair`) through a dense ``key → id`` table when the key
space is small next to the rows to encode (:data:`DENSE_LOOKUP_FACTOR`), else through an Arrow hash lookup
built per call while the pair's K kept keys are few next to the rows (:data:`SEARCH_FACTOR`), else by
binary search in the keys sorted once (a cached copy, 12 bytes a kept key): encoding a partition then
costs O(rows · log K), not O(K), so it does not grow with rows × vocabulary at full size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from preprocess.feature_map import FIRST_ID, OOV_ID, pair_column

assert OOV_ID == FIRST_ID - 1

DENSE_LIMIT = 1 << 21
#: :meth:`CrossVocab.transform_pair` looks keys up in a dense table when the key space is at most this
#: many times the rows (or 65,536): filling a table is cheaper than hashing that many rows.
DENSE_LOOKUP_FACTOR = 16
#: Past this many kept keys per row to encode, :meth:`CrossVocab.transform_pair` binary-searches a sorted copy
#: of the keys instead of hashing all of them per call (measured crossover ~2–4 keys a row).
SEARCH_FACTOR = 2


def pair_keys(a_ids: np.ndarray, b_ids: np.ndarray, vocab_b: int) -> np.ndarray:
    """int64 cross key per row (shape N)."""
    return np.asarray(a_ids, dtype=np.int64) * np.int64(vocab_b) + np.asarray(b_ids, dtype=np.int64)


def count_keys(keys: np.ndarray, key_space: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (int64) and their counts (int32) of one partition; keys need not be sorted.

    The keys come back sorted on the dense path, in first-seen order on the hash path.
    """
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    if key_space <= DENSE_LIMIT and key_space <= 4 * len(keys):
        c = np.bincount(keys, minlength=key_space)
        nz = np.flatnonzero(c)
        return nz.astype(np.int64), c[nz].astype(np.int32)
    vc = pd.Series(keys, copy=False).value_counts(sort=False)
    return vc.index.to_numpy(dtype=np.int64), vc.to_numpy(dtype=np.int32)


def count_pair(a_ids: np.ndarray, b_ids: np.ndarray, vocab_a: int, vocab_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct cross keys of one partition and their counts (int64 keys, int32 counts)."""
    space = vocab_a * vocab_b
    if space < 2**31:  # int32 keys: half the memory traffic of the hash count
        keys = np.asarray(a_ids, dtype=np.int32) * np.int32(vocab_b) + np.asarray(b_ids, dtype=np.int32)
        return count_keys(keys, space)
    return count_keys(pair_keys(a_ids, b_ids, vocab_b), space)


def bucket_width(key_space: int, n_buckets: int) -> int:
    """Width of each of ``n_buckets`` equal key ranges covering ``[0, key_space)``."""
    return max(1, -(-key_space // max(1, n_buckets)))


def split_buckets(keys: np.ndarray, counts: np.ndarray, width: int,
                  n_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group a partition table by key range ``key // width``: (keys, counts, sizes per bucket)."""
    if n_buckets <= 1:
        return keys, counts, np.array([len(keys)], dtype=np.int64)
    b = keys // width
    # a stable sort of 16-bit bucket numbers is a radix sort: linear time
    order = np.argsort(b.astype(np.int16 if n_buckets < 2**15 else np.int32), kind="stable")
    return keys[order], counts[order], np.bincount(b, minlength=n_buckets).astype(np.int64)


def reduce_pair(parts: Iterable[tuple[np.ndarray, np.ndarray]], threshold: int,
                key_range: tuple[int, int] | None = None) -> dict[str, Any]:
    """Sum partition tables; kept keys (count >= threshold) in id order, their counts, #distinct.

    ``key_range=(lo, hi)``: every key lies in ``[lo, hi)``; when that range is small the sum is a
    dense ``bincount`` instead of a hash group-by (same result).
    """
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return {"keys": np.zeros(0, np.int64), "counts": np.zeros(0, np.int64), "distinct": 0}
    keys = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
    counts = np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False)
    if len(parts) > 1 and key_range is not None and key_range[1] - key_range[0] <= min(DENSE_LIMIT, 4 * len(keys)):
        lo = key_range[0]
        # float64 weights are exact for counts < 2**53
        c = np.bincount(keys - lo, weights=counts, minlength=key_range[1] - lo)
        nz = np.flatnonzero(c)
        keys, counts = nz.astype(np.int64) + lo, c[nz].astype(np.int64)
    elif len(parts) > 1:
        s = pd.Series(counts, copy=False).groupby(keys, sort=False).sum()
        keys, counts = s.index.to_numpy(dtype=np.int64), s.to_numpy(dtype=np.int64)
    distinct = len(keys)
    keep = counts >= threshold
    keys, counts = keys[keep], counts[keep]
    order = np.lexsort((keys, -counts))
    return {"keys": keys[order], "counts": counts[order], "distinct": distinct}


def merge_buckets(reduced: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the :func:`reduce_pair` results of disjoint key ranges of one pair (same result as one reduce)."""
    reduced = list(reduced)
    if len(reduced) == 1:
        return dict(reduced[0])
    keys = np.concatenate([np.asarray(r["keys"], dtype=np.int64) for r in reduced])
    counts = np.concatenate([np.asarray(r["counts"], dtype=np.int64) for r in reduced])
    order = np.lexsort((keys, -counts))
    return {"keys": keys[order], "counts": counts[order], "distinct": sum(int(r["distinct"]) for r in reduced)}


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
            self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # pair -> (sorted keys, their ids)

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
        keys = self.keys_[name]
        vocab_b = self.vocab_b_[name]
        n = len(a_ids)
        space = (int(np.max(a_ids)) + 1) * vocab_b if n else 0
        if n and space <= max(DENSE_LOOKUP_FACTOR * n, 1 << 16):
            # dense table over the key space actually used: key -> id, unknown -> OOV_ID
            table = np.full(space, OOV_ID, dtype=np.int32)
            ok = keys < space
            table[keys[ok]] = np.flatnonzero(ok).astype(np.int32) + FIRST_ID
            if space < 2**31:
                return table[np.asarray(a_ids, dtype=np.int32) * np.int32(vocab_b) + np.asarray(b_ids, dtype=np.int32)]
            return table[pair_keys(a_ids, b_ids, vocab_b)]
        q = pair_keys(a_ids, b_ids, vocab_b)
        if len(keys) <= SEARCH_FACTOR * n:
            # an Arrow hash lookup built per call: O(K + n), the cheaper one while K is small next to n
            pos = pc.index_in(pa.array(q), value_set=pa.array(keys, type=pa.int64()))  # zero-copy value set
            # index_in gives null for unknown keys: -1 + FIRST_ID == OOV_ID
            out = pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
            out += FIRST_ID
            return out
        # binary search in the kept keys sorted once per pair (cached): O(n log K) a call; a hash table of all
        # K kept keys per call would make encoding cost O(partitions × K), i.e. grow with rows × vocabulary
        idx = self._index.get(name)
        if idx is None:
            order = np.argsort(keys, kind="stable")
            idx = self._index[name] = (keys[order], (order + FIRST_ID).astype(np.int32))
        sorted_keys, ids = idx
        pos = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
        return np.where(sorted_keys[pos] == q, ids[pos], np.int32(OOV_ID)).astype(np.int32, copy=False)

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
    def load(cls, path: str | Path, pairs: Sequence[str] | None = None) -> "CrossVocab":
        """Read what :meth:`save` wrote; ``pairs``: only these pairs (the others are not read)."""
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        names = list(meta["pairs"]) if pairs is None else list(pairs)
        index = {n: i for i, n in enumerate(meta["pairs"])}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"{path.with_suffix('.json')}: no pairs {unknown[:5]} in this cross vocabulary")
        cv = cls(threshold=meta["threshold"], thresholds=meta["thresholds"])
        cv._init_state()
        with np.load(path.with_suffix(".npz")) as z:
            for n in names:
                cv.keys_[n], cv.counts_[n] = z[f"k{index[n]}"], z[f"c{index[n]}"]
        for attr in ("distinct_", "vocab_b_", "thresholds_"):
            setattr(cv, attr, {n: meta[attr][n] for n in names})
        return cv
