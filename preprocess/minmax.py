"""Min-max scaling of continuous fields, and the common Criteo log² bucketizer.

:class:`MinMaxScaler` learns ``min_`` / ``max_`` per field from **train** (missing values ignored);
``transform`` maps into [0, 1], clipping values outside the train range; a missing value becomes
``missing_value`` (0.0) and is counted in ``missing_``.  A field that is constant on train maps
to 0.0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa


def bucketize(x: np.ndarray) -> np.ndarray:
    """Criteo integer rule per value (shape N float, NaN = missing) → int64 bucket, missing → None mask.

    ``floor(ln(x)^2)`` for ``x > 2``, else ``int(x)`` (so negatives keep their own value).
    Returns the int64 buckets; callers treat NaN positions as the missing token.
    """
    x = np.asarray(x, dtype=np.float64)
    safe = np.where(np.isnan(x), 0.0, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        big = np.floor(np.log(np.maximum(safe, 1.0)) ** 2)
    return np.where(safe > 2, big, np.trunc(safe)).astype(np.int64)


def bucket_tokens(x: np.ndarray) -> pa.Array:
    """Bucket tokens as strings (``"5"``, ``"-1"``; missing → ``""``), shape N."""
    x = np.asarray(x, dtype=np.float64)
    b = pa.array(bucketize(x)).cast(pa.string())
    miss = np.isnan(x)
    if miss.any():
        import pyarrow.compute as pc

        b = pc.if_else(pa.array(miss), pa.scalar(""), b)
    return b


class MinMaxScaler:
    """Per-field min-max scaler fitted on train (scikit-learn style: fit → self, state ends in ``_``)."""

    def __init__(self, missing_value: float = 0.0) -> None:
        self.missing_value = missing_value

    # -- fitting ------------------------------------------------------------------------------------
    @staticmethod
    def partial_stats(columns: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        """Per-field ``{min, max, missing, count}`` of one partition (NaN = missing)."""
        out: dict[str, dict[str, Any]] = {}
        for name, x in columns.items():
            x = np.asarray(x, dtype=np.float64)
            ok = ~np.isnan(x)
            n_ok = int(ok.sum())
            out[name] = {"min": float(x[ok].min()) if n_ok else None, "max": float(x[ok].max()) if n_ok else None,
                         "missing": int(len(x) - n_ok), "count": int(len(x))}
        return out

    def fit_stats(self, parts: Iterable[Mapping[str, Mapping[str, Any]]]) -> "MinMaxScaler":
        """Combine per-partition stats from :meth:`partial_stats`."""
        self.min_: dict[str, float] = {}
        self.max_: dict[str, float] = {}
        self.missing_: dict[str, int] = {}
        for part in parts:
            for name, s in part.items():
                self.missing_[name] = self.missing_.get(name, 0) + s["missing"]
                if s["min"] is not None:
                    self.min_[name] = min(self.min_.get(name, math.inf), s["min"])
                    self.max_[name] = max(self.max_.get(name, -math.inf), s["max"])
                else:
                    self.min_.setdefault(name, math.inf)
                    self.max_.setdefault(name, -math.inf)
        for name in list(self.min_):
            if self.min_[name] == math.inf:  # never seen on train
                self.min_[name], self.max_[name] = 0.0, 0.0
        return self

    def fit(self, frame: Mapping[str, Any], fields: list[str] | None = None) -> "MinMaxScaler":
        """Fit on a table (pandas DataFrame or dict of arrays) of the train split."""
        fields = list(fields if fields is not None else frame.keys())
        cols = {f: np.asarray(frame[f], dtype=np.float64) for f in fields}
        return self.fit_stats([self.partial_stats(cols)])

    # -- transform -----------------------------------------------------------------------------------
    def transform_column(self, name: str, x: np.ndarray) -> np.ndarray:
        """Scale one column into [0, 1] (float32, shape N)."""
        x = np.asarray(x, dtype=np.float64)
        lo, hi = self.min_[name], self.max_[name]
        span = hi - lo
        if span > 0:
            y = np.clip((x - lo) / span, 0.0, 1.0)
        else:
            y = np.zeros_like(x)
        y[np.isnan(x)] = self.missing_value
        return y.astype(np.float32)

    def transform(self, frame: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {f: self.transform_column(f, frame[f]) for f in self.min_}

    # -- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"missing_value": self.missing_value, "min_": self.min_, "max_": self.max_, "missing_": self.missing_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MinMaxScaler":
        s = cls(missing_value=d["missing_value"])
        s.min_, s.max_, s.missing_ = dict(d["min_"]), dict(d["max_"]), dict(d["missing_"])
        return s

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "MinMaxScaler":
        return cls.from_dict(json.loads(Path(path).read_text()))
