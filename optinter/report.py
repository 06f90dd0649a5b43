"""Self-contained HTML report of one pipeline run.

:func:`render_report` builds one HTML page (no external files: every figure is inlined as a
base64 PNG) with a data summary (``feature_map.json`` / ``summary.json``), the architecture's
method counts, the results table (one row per ``metrics.json``), extra tables and the figures.
The ``analyze`` and ``compare`` stages write their folders with
:func:`preprocess.atomic.atomic_output_dir` (``merge=True``): into a temporary sibling folder
first, moved into place only when everything was written.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from preprocess.atomic import json_path, read_json, write_text_atomic
from preprocess.feature_map import FeatureMap

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

#: metrics.json keys shown in the results table, in this order (others are ignored).
RESULT_COLUMNS = (
    "model", "test_auc", "test_logloss", "valid_auc", "valid_logloss", "params",
    "n_memorize", "n_factorize", "n_naive", "epochs", "best_epoch", "seconds", "samples_per_s",
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #444}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
.note{color:#555;font-size:.9em}
"""


# ---- HTML building blocks --------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}"
    return str(v)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML ``<table>`` of ``rows`` (dicts); ``columns`` defaults to the union of keys in order."""
    if not rows:
        return '<p class="note">(none)</p>'
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img_tag(path: str | os.PathLike[str], alt: str = "") -> str:
    """``<img>`` with the PNG at ``path`` inlined as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def data_summary_rows(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Key/value rows describing the encoded data (feature_map.json, plus summary.json scalars)."""
    data_dir = Path(data_dir)
    fm = FeatureMap.load(data_dir)
    rows: list[dict[str, Any]] = [
        {"item": "dataset", "value": fm.dataset},
        {"item": "categorical fields", "value": len(fm.categorical)},
    ]
    if fm.multivalent:
        rows.append({"item": "multivalent fields (mean-pooled)",
                     "value": ", ".join(f"{f.name} (max_len {f.max_len})" for f in fm.multivalent)})
    rows += [
        {"item": "continuous fields", "value": len(fm.continuous)},
        {"item": "pairs (cross-product features)", "value": fm.num_pairs},
        {"item": "original feature values (Σ vocab)",
         "value": sum(f.vocab_size or 0 for f in fm.categorical + fm.multivalent)},
        {"item": "cross feature values (Σ vocab)", "value": sum(p.vocab_size for p in fm.pairs)},
    ]
    for name, info in fm.splits.items():
        rows.append({"item": f"{name} rows", "value": info.rows})
        rows.append({"item": f"{name} positive ratio", "value": round(info.pos_ratio, 4)})
    if fm.content_hash:
        rows.append({"item": "content hash", "value": fm.content_hash[:16]})
    summary = data_dir / "summary.json"
    if summary.exists():
        try:
            s = json.loads(summary.read_text())
        except json.JSONDecodeError as e:
            log.warning("%s: not valid JSON (%s); skipped in the report", summary, e)
            s = {}
        for k, v in sorted(s.items()):
            if isinstance(v, (int, float, str, bool)) and not isinstance(v, bool):
                rows.append({"item": f"summary: {k}", "value": v})
    return rows


def results_rows(metrics_paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """One row per ``metrics.json`` (the model name, else its folder name), columns of RESULT_COLUMNS."""
    rows = []
    for p in metrics_paths:
        p = json_path(p, "metrics.json")
        m = read_json(p, missing="metrics file not found (results table of the report)")
        row = {k: m[k] for k in RESULT_COLUMNS if k in m}
        row.setdefault("model", p.parent.name)
        rows.append(row)
    return rows


def render_report(
    title: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    arch_counts: Mapping[str, int] | None = None,
    metrics_paths: Sequence[str | os.PathLike[str]] = (),
    tables: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = (),
    figures: Sequence[tuple[str, str | os.PathLike[str]]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML string.

    ``tables``: (heading, rows) pairs; ``figures``: (caption, PNG path) pairs; ``notes``: short
    paragraphs shown under the title (plain text, escaped).
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    if data_dir is not None:
        parts.append("<h2>Data</h2>" + html_table(data_summary_rows(data_dir), ["item", "value"]))
    if arch_counts:
        total = sum(arch_counts.values())
        rows = [{"method": k, "pairs": v, "share": round(v / total, 3) if total else 0.0} for k, v in arch_counts.items()]
        parts.append("<h2>Architecture</h2>" + html_table(rows, ["method", "pairs", "share"]))
    if metrics_paths:
        rows = results_rows(metrics_paths)
        cols = [c for c in RESULT_COLUMNS if any(c in r for r in rows)]
        parts.append("<h2>Results</h2>" + html_table(rows, cols))
    for heading, rows in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>" + html_table(list(rows)))
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in figures:
            parts.append(f"<figure>{img_tag(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike[str], title: str, **kwargs: Any) -> Path:
    """Render (see :func:`render_report`) and write the report to ``path`` atomically."""
    path = Path(path)
    write_text_atomic(path, render_report(title, **kwargs))
    log.info("report written: %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path
