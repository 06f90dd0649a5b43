"""Mutual information between feature interactions and the label (paper eq. 21), and its figures.

For a categorical column X (a field, or a pair's cross-product feature ``A|B``) and the label y,

    MI(X; y) = H(y) − H(y | X) = Σ_{x,y} P(x, y) · ln( P(x, y) / (P(x) · P(y)) )

in **nats** (natural log, as ``sklearn.metrics.mutual_info_score``), estimated from the counts of
the encoded **train** split (ids after OOV thresholding: every rare value shares the OOV id).

Counting is done with Dask over ``<data>/train/part-*.parquet``: one task per (file, group of
row groups, group of columns) reads its columns with pyarrow and returns, per column, the joint
counts of the int64 key ``id · 2 + label`` (``np.bincount`` when the vocabulary is small,
``np.unique`` otherwise); the small count tables are then summed by a tree reduction, so the
data are never collected in one pandas frame. A ``distributed.Client`` is used when one is passed
or already running; otherwise Dask's threaded scheduler.

:func:`run_analyze` is the ``analyze`` stage: ``mi.csv`` (one row per pair), ``mi_fields.csv``
(one row per field), the figures (paper Fig. 5, 6a, 6b and MI vs memorize probability) and
``report.html``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from preprocess.atomic import atomic_output_dir, json_path, read_json
from preprocess.feature_map import FeatureMap

from .report import REPORT_FILE, write_report
from .tracking import Tracker, as_tracker

log = logging.getLogger(__name__)

METHODS = ("memorize", "factorize", "naive")
METHOD_COLORS = {"memorize": "#d62728", "factorize": "#1f77b4", "naive": "#d9d9d9"}
MI_CSV = "mi.csv"
MI_FIELDS_CSV = "mi_fields.csv"
#: vocabularies up to this size are counted with a dense bincount; larger ones with np.unique.
DENSE_VOCAB_LIMIT = 1 << 16

Counts = tuple[np.ndarray, np.ndarray]  # (sorted unique int64 keys id*2+label, int64 counts)


# ---- counting ------------------------------------------------------------------------------
def _merge_counts(parts: Sequence[Mapping[str, Counts]]) -> dict[str, Counts]:
    """Sum sparse count tables column by column."""
    out: dict[str, Counts] = {}
    cols: list[str] = []
    for p in parts:
        cols.extend(c for c in p if c not in cols)
    for c in cols:
        got = [p[c] for p in parts if c in p]
        if len(got) == 1:
            out[c] = got[0]
            continue
        keys = np.concatenate([k for k, _ in got])
        cnts = np.concatenate([n for _, n in got])
        uniq, inv = np.unique(keys, return_inverse=True)
        out[c] = (uniq, np.bincount(inv, weights=cnts, minlength=len(uniq)).astype(np.int64))
    return out


def _count_chunk(path: str, row_groups: list[int], columns: list[str], label: str,
                 vocab: Mapping[str, int]) -> dict[str, Counts]:
    """Joint (value id, label) counts of ``columns`` in some row groups of one parquet file."""
    table = pq.ParquetFile(path).read_row_groups(row_groups, columns=[*columns, label])
    y_raw = table.column(label).to_numpy()
    y = y_raw.astype(np.int64)
    if len(y) and (not np.all(np.isin(y_raw, (0, 1)))):
        bad = y_raw[~np.isin(y_raw, (0, 1))][:3]
        raise ValueError(f"{path}: label column {label!r} must be 0/1, found values like {bad.tolist()}")
    out: dict[str, Counts] = {}
    for c in columns:
        x = table.column(c).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        v = int(vocab[c])
        if len(x) and (x.min() < 0 or x.max() >= v):
            raise ValueError(f"{path}: column {c!r} has ids outside 0..{v - 1} (vocab_size in feature_map.json)")
        key = x * 2 + y
        if v <= DENSE_VOCAB_LIMIT:
            bc = np.bincount(key, minlength=2 * v)
            nz = np.flatnonzero(bc)
            out[c] = (nz.astype(np.int64), bc[nz].astype(np.int64))
        else:
            k, n = np.unique(key, return_counts=True)
            out[c] = (k, n.astype(np.int64))
    return out


def _plan_chunks(files: Sequence[Path], rows_per_task: int) -> list[tuple[str, list[int]]]:
    """Split every file's row groups into groups of about ``rows_per_task`` rows."""
    chunks: list[tuple[str, list[int]]] = []
    for f in files:
        md = pq.ParquetFile(f).metadata
        cur: list[int] = []
        rows = 0
        for i in range(md.num_row_groups):
            cur.append(i)
            rows += md.row_group(i).num_rows
            if rows >= rows_per_task:
                chunks.append((str(f), cur))
                cur, rows = [], 0
        if cur or md.num_row_groups == 0:
            chunks.append((str(f), cur))
    return chunks


def _tree_reduce(items: list[Any], fan_in: int = 8) -> Any:
    import dask

    merge = dask.delayed(_merge_counts, pure=True)
    while len(items) > 1:
        items = [merge(items[i : i + fan_in]) for i in range(0, len(items), fan_in)]
    return items[0]


def _compute(objs: list[Any], client: Any | None) -> list[Any]:
    import dask

    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        log.info("MI: computing on the distributed client %s", getattr(client, "dashboard_link", client))
        futures = client.compute(objs)
        return client.gather(futures)
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            self._total = max(1, len(dsk))
            self._next = 0.25

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            done = len(state["finished"]) / self._total
            if done >= self._next:
                log.info("MI: %.0f%% of %d tasks done", 100 * done, self._total)
                self._next += 0.25

    with _Progress():
        return list(dask.compute(*objs, scheduler="threads"))


def joint_counts(data_dir: str | os.PathLike[str], columns: Sequence[str] | None = None, *,
                 split: str = "train", client: Any | None = None, rows_per_task: int = 1_000_000,
                 columns_per_task: int = 64) -> dict[str, Counts]:
    """Joint (id, label) counts of categorical ``columns`` (default: every field and pair) of a split.

    Returns ``{column: (keys, counts)}`` with ``keys = id * 2 + label`` sorted ascending.
    """
    data_dir = Path(data_dir)
    fm = FeatureMap.load(data_dir)
    vocab = {f.column: int(f.vocab_size) for f in fm.categorical if not f.multivalent}
    vocab.update({p.column: int(p.vocab_size) for p in fm.pairs})
    if columns is None:
        columns = list(vocab)
    unknown = [c for c in columns if c not in vocab]
    if unknown:
        raise ValueError(f"{data_dir / 'feature_map.json'}: no single-valued categorical column(s) {unknown}")
    split_dir = fm.split_dir(data_dir, split)
    files = sorted(split_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no parquet files (run `optinter preprocess` first)")
    import dask

    chunks = _plan_chunks(files, rows_per_task)
    count = dask.delayed(_count_chunk, pure=True)
    col_groups = [list(columns[i : i + columns_per_task]) for i in range(0, len(columns), columns_per_task)]
    reduced = []
    for cols in col_groups:
        sub = {c: vocab[c] for c in cols}
        parts = [count(path, rgs, cols, fm.label, sub) for path, rgs in chunks]
        reduced.append(_tree_reduce(parts))
    t0 = time.time()
    log.info("MI: counting %d columns over %d files (%d chunks × %d column groups)",
             len(columns), len(files), len(chunks), len(col_groups))
    results = _compute(reduced, client)
    out: dict[str, Counts] = {}
    for r in results:
        out.update(r)
    log.info("MI: counted in %.2f s", time.time() - t0)
    return out


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


# ---- architecture ------------------------------------------------------------------------------
@dataclass
class ArchInfo:
    """Each pair's selected method and (when known) its method probabilities (memorize, factorize, naive)."""

    methods: dict[str, str]
    probs: dict[str, tuple[float, float, float]]

    def counts(self) -> dict[str, int]:
        return {m: sum(1 for v in self.methods.values() if v == m) for m in METHODS}


def _norm_method(v: Any, where: str) -> str:
    if isinstance(v, (int, np.integer)):
        if not 0 <= int(v) < len(METHODS):
            raise ValueError(f"{where}: method index {v} not in 0..2 ({METHODS})")
        return METHODS[int(v)]
    s = str(v).lower()
    for m in METHODS:
        if s == m or s == m[0] or s.startswith(m[:4]):
            return m
    raise ValueError(f"{where}: unknown method {v!r} (expected one of {METHODS})")


def load_architecture(path: str | os.PathLike[str], pair_names: Sequence[str]) -> ArchInfo:
    """Read ``architecture.json`` into :class:`ArchInfo` for the pairs ``pair_names``.

    Accepted layouts: ``{"pairs": {"A|B": "memorize" | {"method": ..., "probs": [..3]}}}``,
    ``{"pairs": [{"pair"|"name": "A|B", "method": ..., "probs"|"alpha": [..]}]}``, or
    ``{"methods": [...], "probs": [[..3], ...]}`` in feature-map pair order (probabilities in
    the order memorize, factorize, naive).
    """
    d = read_json(json_path(path, "architecture.json"), missing="architecture file not found")
    methods: dict[str, str] = {}
    probs: dict[str, tuple[float, float, float]] = {}

    def _probs(v: Any, where: str) -> tuple[float, float, float] | None:
        if v is None:
            return None
        if isinstance(v, Mapping):
            v = [v.get(m, 0.0) for m in METHODS]
        if len(v) != 3:
            raise ValueError(f"{where}: probabilities need 3 values (memorize, factorize, naive), got {v}")
        return tuple(float(x) for x in v)  # type: ignore[return-value]

    entries = d.get("pairs")
    if isinstance(entries, Mapping):
        for name, v in entries.items():
            if isinstance(v, Mapping):
                methods[name] = _norm_method(v.get("method"), f"{path}: pair {name}")
                pr = _probs(v.get("probs", v.get("alpha", v.get("probabilities"))), f"{path}: pair {name}")
                if pr:
                    probs[name] = pr
            else:
                methods[name] = _norm_method(v, f"{path}: pair {name}")
    elif isinstance(entries, list):
        for i, v in enumerate(entries):
            name = v.get("pair", v.get("name"))
            methods[name] = _norm_method(v.get("method"), f"{path}: pairs[{i}]")
            pr = _probs(v.get("probs", v.get("alpha", v.get("probabilities"))), f"{path}: pairs[{i}]")
            if pr:
                probs[name] = pr
    elif "methods" in d:
        names = d.get("pair_names", list(pair_names))
        if len(d["methods"]) != len(names):
            raise ValueError(f"{path}: {len(d['methods'])} methods for {len(names)} pairs")
        for i, (name, m) in enumerate(zip(names, d["methods"])):
            methods[name] = _norm_method(m, f"{path}: methods[{i}]")
        plist = d.get("probs", d.get("alpha", d.get("probabilities")))
        if plist is not None:
            for i, (name, pr) in enumerate(zip(names, plist)):
                probs[name] = _probs(pr, f"{path}: probs[{i}]")  # type: ignore[assignment]
    else:
        raise ValueError(f"{path}: no 'pairs' or 'methods' entry; not an architecture file")
    missing = [p for p in pair_names if p not in methods]
    if missing:
        raise ValueError(f"{path}: no method for pair(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                         " (architecture and data do not match)")
    return ArchInfo(methods=methods, probs=probs)


def load_arch_info(path: str | os.PathLike[str], pair_names: Sequence[str]) -> ArchInfo:
    """Read an ``architecture.json`` via :class:`optinter.architecture.Architecture`.

    Falls back to :func:`load_architecture` (more layouts) when the file is not in that format.
    """
    from .architecture import Architecture

    p = Path(path)
    if p.is_dir():
        p = p / "architecture.json"
    try:
        arch = Architecture.load(p)
    except ValueError as e:
        log.debug("Architecture.load(%s) failed (%s); reading the JSON directly", p, e)
        return load_architecture(p, pair_names)
    methods = dict(zip(arch.pairs, arch.choices))
    probs = {n: tuple(float(x) for x in pr) for n, pr in zip(arch.pairs, arch.probs or [])}
    missing = [n for n in pair_names if n not in methods]
    if missing:
        raise ValueError(f"{p}: no method for pair(s) {missing[:5]} (architecture and data do not match)")
    return ArchInfo(methods=methods, probs=probs)  # type: ignore[arg-type]


def load_truth_pairs(path: str | os.PathLike[str]) -> dict[str, str]:
    """Planted kind of every pair from a synthetic ``truth.json`` (file or folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: truth file not found") from None
    if "pairs" not in d:
        raise ValueError(f"{p}: no 'pairs' entry; not a synthetic truth.json")
    return {k: _norm_method(v, f"{p}: pair {k}") for k, v in d["pairs"].items()}


# ---- statistics over pairs -------------------------------------------------------------------------
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


# ---- figures -----------------------------------------------------------------------------------
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


# ---- the stage ---------------------------------------------------------------------------------
def run_analyze(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                arch_path: str | os.PathLike[str] | None = None, tracker: Tracker | None = None,
                truth_path: str | os.PathLike[str] | None = None,
                metrics_paths: Sequence[str | os.PathLike[str]] | None = None,
                client: Any | None = None, title: str | None = None) -> dict[str, Any]:
    """The ``analyze`` stage: MI table, figures and HTML report, written atomically into ``out_dir``.

    Writes ``mi.csv`` (one row per pair: fields, MI in nats, normalized MI, and when
    ``arch_path`` is given the selected ``method`` and ``p_memorize/p_factorize/p_naive``; with
    ``truth_path`` the ``planted`` kind), ``mi_fields.csv``, ``mi_heatmap.png`` (Fig. 6a/6b),
    ``mi_mm_heatmap.png`` (the same with bias-corrected MI),
    ``mi_fields.png``, with an architecture ``mi_by_method.png`` (Fig. 5) and
    ``mi_vs_memorize.png``, with a truth ``mi_by_planted.png``, and ``report.html``.
    Returns a summary dict (paths, H(y), Spearman ρ, mean MI per method).
    """
    t0 = time.time()
    tr = as_tracker(tracker)
    data_dir = Path(data_dir)
    out_dir = Path(out_dir)
    fm = FeatureMap.load(data_dir)
    pairs, fields, h_label = mutual_information(data_dir, client=client)
    log.info("MI: H(y) = %.4f nats; %d pairs, %d fields; top pair %s", h_label, len(pairs), len(fields),
             pairs.sort_values("mi").iloc[-1]["pair"] if len(pairs) else "-")
    result: dict[str, Any] = {"h_label": h_label, "n_pairs": len(pairs), "n_fields": len(fields),
                              "mean_mi_pairs": float(pairs["mi"].mean()) if len(pairs) else float("nan")}
    arch: ArchInfo | None = None
    if arch_path is not None:
        arch = load_arch_info(arch_path, list(pairs["pair"]))
        pairs["method"] = [arch.methods[p] for p in pairs["pair"]]
        if arch.probs:
            for k, m in enumerate(METHODS):
                pairs[f"p_{m}"] = [arch.probs.get(p, (np.nan,) * 3)[k] for p in pairs["pair"]]
    truth: dict[str, str] | None = None
    if truth_path is not None:
        truth = load_truth_pairs(truth_path)
        pairs["planted"] = [truth.get(p, "naive") for p in pairs["pair"]]

    metrics: dict[str, float] = {"mi.h_label": h_label, "mi.mean_pair": result["mean_mi_pairs"]}
    if arch is not None:
        rank = {"naive": 0, "factorize": 1, "memorize": 2}
        result["arch_counts"] = arch.counts()
        result["spearman_mi_method"] = spearman(pairs["mi"], [rank[m] for m in pairs["method"]])
        metrics["mi.spearman_method"] = result["spearman_mi_method"]
        if "p_memorize" in pairs:
            result["spearman_mi_p_memorize"] = spearman(pairs["mi"], pairs["p_memorize"])
            result["spearman_mi_mm_p_memorize"] = spearman(pairs["mi_mm"], pairs["p_memorize"])
            metrics["mi.spearman_p_memorize"] = result["spearman_mi_p_memorize"]
            metrics["mi.spearman_mm_p_memorize"] = result["spearman_mi_mm_p_memorize"]
        by = mean_mi_by_method(pairs)
        result["mean_mi_by_method"] = {m: float(v) for m, v in by["mean_mi"].items()}
        metrics.update({f"mi.mean_{m}": v for m, v in result["mean_mi_by_method"].items()})
    if truth is not None:
        by = mean_mi_by_method(pairs, "planted")
        result["mean_mi_by_planted"] = {m: float(v) for m, v in by["mean_mi"].items()}
        metrics.update({f"mi.mean_planted_{m}": v for m, v in result["mean_mi_by_planted"].items()})
        if arch is not None:
            result["planted_recovered"] = float(np.mean(pairs["planted"] == pairs["method"]))
            metrics["mi.planted_recovered"] = result["planted_recovered"]

    figures: list[tuple[str, str]] = []
    with atomic_output_dir(out_dir, merge=True) as tmp:
        pairs.to_csv(tmp / MI_CSV, index=False, float_format="%.8g")
        fields.to_csv(tmp / MI_FIELDS_CSV, index=False, float_format="%.8g")
        if len(pairs):
            plot_mi_heatmap(fm, pairs, tmp / "mi_heatmap.png", methods=arch.methods if arch else None, truth=truth,
                            title=f"{fm.dataset}: MI (nats) of each field pair"
                                  + (" vs selected method" if arch else ""))
            figures.append(("Fig. 6 — (a) MI of each pair with the label (nats)"
                            + ("; (b) method selected by the search" if arch else "")
                            + ("; planted pairs outlined (M = memorize, F = factorize)" if truth else ""),
                            "mi_heatmap.png"))
            plot_mi_heatmap(fm, pairs, tmp / "mi_mm_heatmap.png", methods=arch.methods if arch else None, truth=truth,
                            title=f"{fm.dataset}: Miller–Madow bias-corrected MI (nats) of each field pair",
                            value="mi_mm")
            figures.append(("Same with the Miller–Madow bias-corrected MI (removes the growth of plug-in MI "
                            "with the number of values of a cross)", "mi_mm_heatmap.png"))
        else:
            log.warning("analyze: %s has no pairs; no heat map", data_dir / "feature_map.json")
        if arch is not None:
            plot_mi_by_method(pairs, tmp / "mi_by_method.png")
            figures.append(("Fig. 5 — mean MI of the pairs per selected method", "mi_by_method.png"))
            if "p_memorize" in pairs:
                plot_mi_vs_memorize(pairs, tmp / "mi_vs_memorize.png", result["spearman_mi_p_memorize"])
                figures.append(("MI against the searched memorize probability", "mi_vs_memorize.png"))
        if truth is not None:
            plot_mi_by_method(pairs, tmp / "mi_by_planted.png", column="planted",
                              title="Mean MI of the pairs per planted kind")
            figures.append(("Mean MI per planted kind (synthetic ground truth)", "mi_by_planted.png"))
        plot_field_mi(fields, tmp / "mi_fields.png")
        figures.append(("MI of each single field with the label", "mi_fields.png"))
        notes = [f"MI in nats (natural log), from the encoded train split; H(y) = {h_label:.4f} nats."]
        for key, label in (("spearman_mi_p_memorize", "Spearman ρ between pair MI and P(memorize)"),
                           ("spearman_mi_mm_p_memorize", "Spearman ρ between bias-corrected pair MI (Miller–Madow) "
                                                         "and P(memorize)"),
                           ("spearman_mi_method", "Spearman ρ between pair MI and method rank (naive<factorize<memorize)"),
                           ("planted_recovered", "share of pairs whose selected method equals the planted kind")):
            if key in result and not math.isnan(result[key]):
                notes.append(f"{label}: {result[key]:.3f}")
        top = pairs.sort_values("mi", ascending=False).head(15)
        cols = [c for c in ("pair", "mi", "mi_norm", "mi_mm", "gain", "n_values", "method", "p_memorize", "planted")
                if c in top]
        tables: list[tuple[str, list[dict[str, Any]]]] = [("Top pairs by MI", top[cols].to_dict("records"))]
        if arch is not None:
            by = mean_mi_by_method(pairs).reset_index(names="method")
            tables.append(("Mean MI per selected method (Fig. 5)", by.to_dict("records")))
        write_report(tmp / REPORT_FILE, title or f"OptInter analysis — {fm.dataset}", data_dir=data_dir,
                     arch_counts=arch.counts() if arch else None, metrics_paths=list(metrics_paths or []),
                     tables=tables, figures=[(c, tmp / f) for c, f in figures], notes=notes)
    files = [MI_CSV, MI_FIELDS_CSV, REPORT_FILE] + [f for _, f in figures]
    result.update({"out_dir": str(out_dir), "mi_csv": str(out_dir / MI_CSV), "report": str(out_dir / REPORT_FILE),
                   "figures": [str(out_dir / f) for _, f in figures], "seconds": time.time() - t0})
    tr.log_metrics({k: v for k, v in metrics.items() if v is not None and not math.isnan(v)})
    for f in files:
        tr.log_artifact(out_dir / f, "analysis")
    log.info("analyze: wrote %d files to %s in %.1f s", len(files), out_dir, result["seconds"])
    return result
