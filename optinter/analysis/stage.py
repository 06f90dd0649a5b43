"""The ``analyze`` stage: ``mi.csv`` (one row per pair), ``mi_fields.csv`` (one row per field),
the figures (paper Fig. 5, 6a, 6b and MI vs memorize probability) and ``report.html``.

The searched architecture is read by the one reader, :meth:`optinter.architecture.Architecture.load`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from preprocess.atomic import atomic_output_dir, json_path, read_json
from preprocess.feature_map import FeatureMap

from ..architecture import CHOICES as METHODS
from ..architecture import Architecture
from ..report import REPORT_FILE, write_report
from ..tracking import Tracker, as_tracker
from .figures import plot_field_mi, plot_mi_by_method, plot_mi_heatmap, plot_mi_vs_memorize
from .mi import mean_mi_by_method, mutual_information, spearman

log = logging.getLogger(__name__)

MI_CSV = "mi.csv"
MI_FIELDS_CSV = "mi_fields.csv"


@dataclass
class ArchInfo:
    """Each pair's selected method and (when known) its method probabilities (memorize, factorize, naive)."""

    methods: dict[str, str]
    probs: dict[str, tuple[float, ...]]

    def counts(self) -> dict[str, int]:
        return {m: sum(1 for v in self.methods.values() if v == m) for m in METHODS}


def load_arch_info(path: str | os.PathLike[str], pair_names: Sequence[str]) -> ArchInfo:
    """The methods (and probabilities) of ``pair_names`` from an ``architecture.json`` (file or
    folder), read by :meth:`Architecture.load`; a pair it does not name is a clear error."""
    p = json_path(path, "architecture.json")
    arch = Architecture.load(p)
    methods = dict(zip(arch.pairs, arch.choices))
    probs = {n: tuple(float(x) for x in pr) for n, pr in zip(arch.pairs, arch.probs or [])}
    missing = [n for n in pair_names if n not in methods]
    if missing:
        raise ValueError(f"{p}: no method for pair(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                         " (architecture and data do not match)")
    return ArchInfo(methods=methods, probs=probs)


def load_truth_pairs(path: str | os.PathLike[str]) -> dict[str, str]:
    """Planted kind of every pair from a synthetic ``truth.json`` (file or folder)."""
    p = json_path(path, "truth.json")
    d = read_json(p, missing="truth file not found")
    if "pairs" not in d:
        raise ValueError(f"{p}: no 'pairs' entry; not a synthetic truth.json")
    bad = {k: v for k, v in d["pairs"].items() if v not in METHODS}
    if bad:
        raise ValueError(f"{p}: unknown planted kind(s) {bad} (expected one of {METHODS})")
    return dict(d["pairs"])


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
