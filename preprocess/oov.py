"""OOV thresholding of categorical fields, fitted on train only.

Values are strings (a missing value is the empty string ``""``, its own value).  A value seen on
train at least ``threshold`` times is *kept*; kept values get ids ``2 ..`` sorted by train count
descending, then by value ascending (so ids do not depend on partitioning); every other value, and
any value unseen on train, maps to ``OOV_ID = 1``.  ``PAD_ID = 0`` is never produced.

Counting is done per partition (:func:`count_values`, a small ``value → count`` table) and the
tables are reduced per field (:func:`reduce_counts`), so the Dask job never moves rows around.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from preprocess.feature_map import FIRST_ID, OOV_ID


def _as_arrow(col: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return col
    return pa.array(np.asarray(col, dtype=object).astype(str), type=pa.string())


def count_values(col: Any) -> pa.Table:
    """``value``/``count`` table of one column of one partition (dictionary arrays counted by bincount)."""
    arr = _as_arrow(col)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    tables = []
    for ch in chunks:
        if len(ch) == 0:
            continue
        if pa.types.is_dictionary(ch.type):
            idx = ch.indices.to_numpy(zero_copy_only=False)
            c = np.bincount(idx, minlength=len(ch.dictionary))
            nz = np.flatnonzero(c)
            tables.append(pa.table({"value": ch.dictionary.take(pa.array(nz)).cast(pa.string()),
                                    "count": pa.array(c[nz].astype(np.int64))}))
        else:
            vc = pc.value_counts(ch.cast(pa.string()))
            tables.append(pa.table({"value": vc.field("values"), "count": vc.field("counts").cast(pa.int64())}))
    if not tables:
        return pa.table({"value": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
    t = pa.concat_tables(tables)
    if len(tables) > 1:
        t = t.group_by("value").aggregate([("count", "sum")]).rename_columns(["value", "count"])
    return t


def reduce_counts(parts: Iterable[pa.Table], threshold: int) -> dict[str, Any]:
    """Sum partition count tables and keep values with ``count >= threshold``.

    Returns ``{"values": [...], "counts": [...], "distinct": n, "total": n}`` with kept values in
    id order (count desc, value asc).
    """
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return {"values": [], "counts": [], "distinct": 0, "total": 0}
    t = pa.concat_tables(parts)
    if len(parts) > 1:
        t = t.group_by("value").aggregate([("count", "sum")]).rename_columns(["value", "count"])
    distinct, total = t.num_rows, int(pc.sum(t["count"]).as_py() or 0)
    t = t.filter(pc.greater_equal(t["count"], threshold))
    order = pc.sort_indices(t, sort_keys=[("count", "descending"), ("value", "ascending")])
    t = t.take(order)
    return {"values": t["value"].to_pylist(), "counts": t["count"].to_pylist(), "distinct": distinct, "total": total}


class OOVThresholder:
    """Per-field vocabulary with a count threshold (scikit-learn style).

    ``vocab_[field]``: kept values in id order (value ``vocab_[f][i]`` has id ``i + 2``);
    ``counts_[field]``: their train counts; ``distinct_[field]``: distinct train values;
    ``thresholds_[field]``: the threshold used.
    """

    def __init__(self, threshold: int = 1, thresholds: Mapping[str, int] | None = None) -> None:
        self.threshold = threshold
        self.thresholds = dict(thresholds or {})

    def threshold_for(self, name: str) -> int:
        return int(self.thresholds.get(name, self.threshold))

    def _init_state(self) -> None:
        if not hasattr(self, "vocab_"):
            self.vocab_: dict[str, list[str]] = {}
            self.counts_: dict[str, list[int]] = {}
            self.distinct_: dict[str, int] = {}
            self.thresholds_: dict[str, int] = {}
        self._lookup: dict[str, pa.Array] = {}

    def set_field(self, name: str, reduced: Mapping[str, Any]) -> "OOVThresholder":
        """Install one field's result of :func:`reduce_counts`."""
        self._init_state()
        self.vocab_[name] = list(reduced["values"])
        self.counts_[name] = [int(c) for c in reduced["counts"]]
        self.distinct_[name] = int(reduced["distinct"])
        self.thresholds_[name] = self.threshold_for(name)
        return self

    def fit(self, frame: Mapping[str, Any], fields: list[str] | None = None) -> "OOVThresholder":
        """Fit on a train table (pandas DataFrame, pyarrow Table or dict of string columns)."""
        if hasattr(self, "vocab_"):
            del self.vocab_
        self._init_state()
        names = fields if fields is not None else list(frame.keys() if not isinstance(frame, pa.Table)
                                                       else frame.column_names)
        for f in names:
            self.set_field(f, reduce_counts([count_values(frame[f])], self.threshold_for(f)))
        return self

    def vocab_size(self, name: str) -> int:
        return len(self.vocab_[name]) + FIRST_ID

    def transform_column(self, name: str, col: Any) -> np.ndarray:
        """Ids of one column (int32, shape N): kept → 2.., anything else → OOV_ID."""
        if not hasattr(self, "_lookup"):
            self._lookup = {}
        if name not in self._lookup:
            self._lookup[name] = pa.array(self.vocab_[name], type=pa.string())
        vs = self._lookup[name]
        arr = _as_arrow(col)
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        out = []
        for ch in chunks:
            if pa.types.is_dictionary(ch.type):
                dict_ids = self._ids(ch.dictionary.cast(pa.string()), vs)
                out.append(dict_ids[ch.indices.to_numpy(zero_copy_only=False)])
            else:
                out.append(self._ids(ch.cast(pa.string()), vs))
        if not out:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate(out).astype(np.int32, copy=False)

    @staticmethod
    def _ids(values: pa.Array, vs: pa.Array) -> np.ndarray:
        pos = pc.index_in(values, value_set=vs).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        return np.where(pos >= 0, pos + FIRST_ID, OOV_ID).astype(np.int32)

    def transform(self, frame: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {f: self.transform_column(f, frame[f]) for f in self.vocab_}

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "thresholds": self.thresholds, "vocab_": self.vocab_,
                "counts_": self.counts_, "distinct_": self.distinct_, "thresholds_": self.thresholds_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OOVThresholder":
        o = cls(threshold=d["threshold"], thresholds=d["thresholds"])
        o._init_state()
        o.vocab_, o.counts_ = dict(d["vocab_"]), dict(d["counts_"])
        o.distinct_, o.thresholds_ = dict(d["distinct_"]), dict(d["thresholds_"])
        return o

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "OOVThresholder":
        return cls.from_dict(json.loads(Path(path).read_text()))
