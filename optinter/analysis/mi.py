"""Mutual information between feature interactions and the label (paper eq. 21).

For a categorical column X (a field, or a pair's cross-product feature ``A|B``) and the label y,

    MI(X; y) = H(y) − H(y | X) = Σ_{x,y} P(x, y) · ln( P(x, y) / (P(x) · P(y)) )

in **nats** (natural log, as ``sklearn.metrics.mutual_info_score``), estimated from the counts of
the encoded **train** split (ids after OOV thresholding: every rare value shares the OOV id;
:mod:`optinter.analysis.counts`). Also the statistics over pairs the stage reports (Spearman ρ,
mean MI per method).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from preprocess.feature_map import FeatureMap

from ..architecture import CHOICES as METHODS
from .counts import joint_counts


def mi_from_counts(keys: np.ndarray, counts: np.ndarray) -> tuple[float, float, int]:
    """(MI(X; y), H(y), #distinct x) in nats from joint counts with ``keys = x * 2 + y``."""
    keys = np.asarray(keys, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n <= 0:
        return 0.0, 0.0, 0
    x = keys >> 1
    y = keys & 1
    _, xi = np.unique(x, return_inverse=True)
    n_x = np.bincount(xi, weights=counts)
    n_y = np.array([counts[y == 0].sum(), counts[y == 1].sum()])
    nz = counts > 0
    mi = float(np.sum(counts[nz] / n * np.log(counts[nz] * n / (n_x[xi[nz]] * n_y[y[nz]]))))
    p_y = n_y[n_y > 0] / n
    h_y = float(-np.sum(p_y * np.log(p_y)))
    return max(mi, 0.0), h_y, int(len(n_x))


def mutual_information(data_dir: str | os.PathLike[str], *, split: str = "train", client: Any | None = None,
                       rows_per_task: int = 1_000_000) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """MI with the label of every pair and every single categorical field (nats).

    Returns ``(pairs, fields, h_label)``: ``pairs`` has one row per pair (feature-map order) with
    ``pair, field_a, field_b, mi, mi_norm (= MI / H(y)), mi_mm, gain (= MI − max(MI_a, MI_b)),
    n_values, vocab_size``; ``fields`` one row per field with ``field, mi, mi_norm, mi_mm,
    n_values, vocab_size``; ``h_label`` is H(y).

    ``mi_mm`` is the Miller–Madow bias-corrected estimate ``MI − (K_x − 1)(K_y − 1) / (2N)``
    (K = observed values, N = rows): the plug-in MI of eq. 21 grows with the number of values by
    itself, which favours high-cardinality crosses; ``mi_mm`` removes that first-order bias.
    """
    fm = FeatureMap.load(data_dir)
    counts = joint_counts(data_dir, split=split, client=client, rows_per_task=rows_per_task)
    h_label = 0.0
    n_rows = fm.splits[split].rows if split in fm.splits else 0
    field_rows = []
    field_mi: dict[str, float] = {}
    for f in fm.categorical:
        if f.column not in counts:
            continue
        mi, h_label, nv = mi_from_counts(*counts[f.column])
        field_mi[f.name] = mi
        field_rows.append({"field": f.name, "mi": mi, "n_values": nv, "vocab_size": f.vocab_size})
    pair_rows = []
    for p in fm.pairs:
        mi, h_label, nv = mi_from_counts(*counts[p.column])
        a, b = p.fields
        best_single = max(field_mi.get(a, 0.0), field_mi.get(b, 0.0))
        pair_rows.append({"pair": p.name, "field_a": a, "field_b": b, "mi": mi, "gain": mi - best_single,
                          "n_values": nv, "vocab_size": p.vocab_size})
    pairs = pd.DataFrame(pair_rows, columns=["pair", "field_a", "field_b", "mi", "gain", "n_values", "vocab_size"])
    fields = pd.DataFrame(field_rows, columns=["field", "mi", "n_values", "vocab_size"])
    if counts:
        n_rows = int(next(iter(counts.values()))[1].sum())
    k_y = 2 if h_label > 0 else 1
    for df in (pairs, fields):
        df.insert(df.columns.get_loc("mi") + 1, "mi_norm", df["mi"] / h_label if h_label > 0 else 0.0)
        bias = (df["n_values"] - 1).clip(lower=0) * (k_y - 1) / (2 * n_rows) if n_rows else 0.0
        df.insert(df.columns.get_loc("mi_norm") + 1, "mi_mm", df["mi"] - bias)
    return pairs, fields, h_label


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when undefined, e.g. a constant input)."""
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def mean_mi_by_method(pairs: pd.DataFrame, column: str = "method") -> pd.DataFrame:
    """Mean / std / count of MI per method (paper Fig. 5), methods in the order of METHODS."""
    g = pairs.groupby(column)["mi"]
    df = pd.DataFrame({"mean_mi": g.mean(), "std_mi": g.std(ddof=0), "pairs": g.size()})
    return df.reindex([m for m in METHODS if m in df.index])
