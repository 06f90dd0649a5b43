"""The analysis figures: MI heat maps (paper Fig. 6a/6b), mean MI per method (Fig. 5), MI against
the memorize probability, and each field's MI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from preprocess.feature_map import FeatureMap

from ..architecture import CHOICES as METHODS
from .mi import mean_mi_by_method

METHOD_COLORS = {"memorize": "#d62728", "factorize": "#1f77b4", "naive": "#d9d9d9"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def pair_field_order(fm: FeatureMap) -> list[str]:
    """Fields that occur in some pair, in feature-map order (rows/columns of the heat maps)."""
    used = {f for p in fm.pairs for f in p.fields}
    return [f.name for f in fm.fields if f.name in used]


def _pair_matrix(fields: list[str], pairs: pd.DataFrame, values: Mapping[str, float]) -> np.ndarray:
    idx = {f: i for i, f in enumerate(fields)}
    m = np.full((len(fields), len(fields)), np.nan)
    for row in pairs.itertuples():
        i, j = idx[row.field_a], idx[row.field_b]
        m[max(i, j), min(i, j)] = values[row.pair]
    return m


def _mark_truth(ax: Any, fields: list[str], pairs: pd.DataFrame, truth: Mapping[str, str] | None) -> None:
    if not truth:
        return
    from matplotlib.patches import Rectangle

    idx = {f: i for i, f in enumerate(fields)}
    for row in pairs.itertuples():
        kind = truth.get(row.pair)
        if kind not in ("memorize", "factorize"):
            continue
        i, j = idx[row.field_a], idx[row.field_b]
        r, c = max(i, j), min(i, j)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2.2,
                               ec="black" if kind == "memorize" else "#00a000", ls="-" if kind == "memorize" else "--"))
        ax.text(c, r, kind[0].upper(), ha="center", va="center", fontsize=8, fontweight="bold",
                color="black" if kind == "memorize" else "#006000")


def _setup_axes(ax: Any, fields: list[str]) -> None:
    n = len(fields)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = max(4, min(9, int(220 / max(n, 1))))
    ax.set_xticklabels(fields, rotation=90, fontsize=fs)
    ax.set_yticklabels(fields, fontsize=fs)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)


def plot_mi_heatmap(fm: FeatureMap, pairs: pd.DataFrame, out_png: str | os.PathLike[str], *,
                    methods: Mapping[str, str] | None = None, truth: Mapping[str, str] | None = None,
                    title: str = "", value: str = "mi") -> Path:
    """Fig. 6: (a) MI heat map over field pairs; (b) the selected method map, same field order.

    Lower triangle: cell (row i, column j), i > j, is the pair of fields i and j. Planted pairs of
    ``truth`` are outlined (memorize: solid black ``M``; factorize: dashed green ``F``).
    """
    plt = _plt()
    from matplotlib.colors import ListedColormap

    fields = pair_field_order(fm)
    n = len(fields)
    side = max(4.5, min(14.0, 0.32 * n + 2.5))
    ncols = 2 if methods else 1
    fig, axes = plt.subplots(1, ncols, figsize=(side * ncols + 1.2 * ncols, side), squeeze=False)
    ax = axes[0, 0]
    mi = _pair_matrix(fields, pairs, dict(zip(pairs["pair"], pairs[value])))
    im = ax.imshow(np.ma.masked_invalid(mi), cmap="viridis", interpolation="nearest")
    what = "MI" if value == "mi" else "bias-corrected MI" if value == "mi_mm" else value
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"{what} with label (nats)")
    _setup_axes(ax, fields)
    ax.set_title(f"(a) {what} of each pair")
    _mark_truth(ax, fields, pairs, truth)
    if methods:
        ax2 = axes[0, 1]
        code = {m: i for i, m in enumerate(METHODS)}
        mm = _pair_matrix(fields, pairs, {k: float(code[v]) for k, v in methods.items()})
        cmap = ListedColormap([METHOD_COLORS[m] for m in METHODS])
        ax2.imshow(np.ma.masked_invalid(mm), cmap=cmap, vmin=-0.5, vmax=2.5, interpolation="nearest")
        _setup_axes(ax2, fields)
        ax2.set_title("(b) selected method")
        _mark_truth(ax2, fields, pairs, truth)
        from matplotlib.patches import Patch

        ax2.legend(handles=[Patch(color=METHOD_COLORS[m], label=m) for m in METHODS],
                   loc="upper right", fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_mi_by_method(pairs: pd.DataFrame, out_png: str | os.PathLike[str], *, column: str = "method",
                      title: str = "Mean MI of the pairs per selected method") -> Path:
    """Fig. 5: mean MI (± std, every pair as a dot) of the pairs modelled by each method."""
    plt = _plt()
    stats = mean_mi_by_method(pairs, column)
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    xs = np.arange(len(stats))
    ax.bar(xs, stats["mean_mi"], yerr=[np.minimum(stats["std_mi"], stats["mean_mi"]), stats["std_mi"]], capsize=4,
           color=[METHOD_COLORS[m] for m in stats.index], edgecolor="black", alpha=0.85)
    rng = np.random.default_rng(0)
    for x, m in zip(xs, stats.index):
        v = pairs.loc[pairs[column] == m, "mi"].to_numpy()
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(v)), v, s=8, color="black", alpha=0.5, zorder=3)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{m}\n(n={int(c)})" for m, c in zip(stats.index, stats["pairs"])])
    ax.set_ylabel("MI with label (nats)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_mi_vs_memorize(pairs: pd.DataFrame, out_png: str | os.PathLike[str], rho: float) -> Path:
    """Scatter of each pair's MI against its memorize probability, coloured by selected method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for m in METHODS:
        sel = pairs["method"] == m
        if sel.any():
            ax.scatter(pairs.loc[sel, "mi"], pairs.loc[sel, "p_memorize"], s=14, label=m,
                       color=METHOD_COLORS[m], edgecolor="black", linewidth=0.3)
    ax.set_xscale("symlog", linthresh=max(float(pairs["mi"][pairs["mi"] > 0].min()) if (pairs["mi"] > 0).any() else 1e-6, 1e-9))
    ax.set_xlabel("MI with label (nats)")
    ax.set_ylabel("P(memorize)")
    ax.set_title(f"Spearman ρ(MI, P(memorize)) = {rho:.3f}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_field_mi(fields: pd.DataFrame, out_png: str | os.PathLike[str]) -> Path:
    """Bar chart of each single field's MI with the label."""
    plt = _plt()
    n = len(fields)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * n + 2), 3.5))
    ax.bar(range(n), fields["mi"], color="#4c72b0")
    ax.set_xticks(range(n))
    ax.set_xticklabels(fields["field"], rotation=90, fontsize=max(5, min(9, int(240 / max(n, 1)))))
    ax.set_ylabel("MI with label (nats)")
    ax.set_title("Mutual information of each field", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
