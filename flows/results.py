"""The ``evaluate`` stage: one results table over every trained model's ``metrics.json``.

Plain Python (no Prefect / MLflow). Writes ``results.json`` (``{"rows": [...], "metrics_paths":
[...]}``), ``results.csv`` and ``results.md``, atomically into ``out_dir``; rows are sorted by test
AUC, best first.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

#: Columns of the printed / written results table.
TABLE_COLUMNS = ("model", "valid_auc", "test_auc", "test_logloss", "params", "n_memorize", "n_factorize",
                 "n_naive", "epochs", "seconds")


def _fmt(v: Any, column: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if column.endswith("seconds") or column.endswith("_per_s"):
            return f"{v:.1f}"
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown table of ``rows`` (missing values as ``-``)."""
    cols = [c for c in columns if any(c in r for r in rows)]
    cells = [[_fmt(r.get(c), c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def build_results(metrics_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Collect ``<dir>/metrics.json`` of each trained model into the results table in ``out_dir``."""
    from optinter.report import RESULT_COLUMNS, results_rows
    from preprocess.atomic import atomic_output_dir

    paths = [Path(d) / "metrics.json" if Path(d).is_dir() else Path(d) for d in metrics_dirs]
    rows = results_rows(paths)
    rows.sort(key=lambda r: -float(r.get("test_auc", float("-inf"))))
    with atomic_output_dir(out_dir, merge=True) as tmp:
        (tmp / "results.json").write_text(json.dumps({"rows": rows, "metrics_paths": [str(p) for p in paths]},
                                                     indent=1, sort_keys=True))
        cols = [c for c in RESULT_COLUMNS if any(c in r for r in rows)]
        with open(tmp / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        (tmp / "results.md").write_text(format_table(rows) + "\n")
    log.info("evaluate: %d models; best test AUC %s (%s)", len(rows),
             _fmt(rows[0].get("test_auc")) if rows else "-", rows[0].get("model") if rows else "-")
    best = rows[0] if rows else {}
    return {"n_models": len(rows), "best_model": best.get("model"), "best_test_auc": best.get("test_auc"),
            "metrics_paths": [str(p) for p in paths]}


def render_summary(summary: Mapping[str, Any]) -> str:
    """The text a pipeline run ends with (``optinter run`` prints it, the flow logs it last):
    results table, stage folders, the MLflow runs page."""
    lines = []
    if summary.get("results"):
        lines += ["", "Results (test split; models sorted by test AUC):", format_table(summary["results"])]
    lines += ["", "Stages:"]
    for name, s in summary["stages"].items():
        lines.append(f"  {name:<18} {'reused  ' if s['cached'] else 'computed'}  {s['uri']}")
    lines += ["", f"MLflow parent run: {summary['parent_run_id']} ({summary['tracking_uri']})"]
    if summary["ui_command"].startswith("mlflow ui"):
        lines.append(f"Open the MLflow UI: {summary['ui_command']}, then {summary['runs_url']}")
    else:
        lines.append(f"MLflow runs: {summary['runs_url']}")
    lines.append(f"This run: {summary['run_url']}")
    return "\n".join(lines)
