"""Small statistics used by the experiment tables: paired t-test, mean ± std formatting."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-tailed paired t-test of ``a`` against ``b`` (same seeds, same order): ``(t, p)`` of
    ``scipy.stats.ttest_rel``. NaN (without scipy's warnings) when fewer than two pairs or when
    every difference is 0; ``(±inf, 0.0)`` when the differences are a nonzero constant."""
    from scipy.stats import ttest_rel

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired t-test needs samples of equal length, got {x.shape} and {y.shape}")
    if x.size < 2 or not np.any(x - y):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal samples: scipy's precision note
        res = ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value; NaN for none)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    """``"0.8101 ± 0.0003"`` (just the mean when std is NaN or 0 from one value)."""
    if mean != mean:
        return "–"
    if std != std:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_params(n: float) -> str:
    """Parameter count as in the paper's tables: ``0.5M``, ``13M``, ``225M``; ``12.3K`` below 1e5."""
    if n != n:
        return "–"
    if n >= 1e7:
        return f"{n / 1e6:.0f}M"
    if n >= 1e5:
        return f"{n / 1e6:.2g}M" if n < 1e6 else f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return f"{n:.0f}"


def fmt_p(p: float) -> str:
    """p-value for a table: ``"3.2e-04"``, ``"0.21"``, ``"–"`` when undefined."""
    if p != p:
        return "–"
    return f"{p:.1e}" if p < 0.01 else f"{p:.2f}"
