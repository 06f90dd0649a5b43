"""Batch scoring of files: raw logs (or encoded parquet) → one parquet file of click probabilities.

:func:`score_files` (``optinter predict``) and :func:`run_score` (the ``score`` flow stage) cut the
inputs into partitions — line-aligned byte blocks of the text files (:func:`preprocess.io.plan_blocks`,
gzip decompressed first), row groups of parquet files — and score each partition on its own
(:func:`score_part`: parse → :class:`preprocess.encoder.RawEncoder` → model), on a Dask cluster
(``DASK_SCHEDULER_ADDRESS`` / ``scheduler``, else a LocalCluster) when there is more than one, else in
this process. A partition's scores go to a scratch part file, so memory stays one partition per
worker; the parts are then concatenated in input order into ``out``, which is written to a
temporary file and renamed at the end (nothing half-written).

The output has one row per scored input row: ``row`` (int64, the 0-based position of the row among
the data rows of the inputs, in input order — header lines not counted, dropped rows leave gaps),
``probability`` (float32) and the requested pass-through columns (``id_columns``, as strings).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocess.atomic import atomic_output_dir, scratch_beside
from preprocess.errors import BAD_REASONS, PreprocessError
from preprocess.io import decompress, expand_inputs, is_gzip, plan_blocks, read_range
from preprocess.jobs import MAX_BAD_EXAMPLES, raise_first_bad, run_tasks

from .data import encoded_columns, schema_problem
from .predict import Predictor, aligned, check_on_bad_rows, resolve_model
from .tracking import Tracker, as_tracker

log = logging.getLogger(__name__)

SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "summary.json"
HISTOGRAM_BINS = 20
#: Bytes per partition of a text file: small enough that a few workers stay evenly busy.
DEFAULT_BLOCKSIZE = 8 * 1024 * 1024
#: Without a Dask scheduler configured, inputs up to this size (~1.7M Criteo rows) are scored in this
#: process: a LocalCluster's workers take seconds to start (torch imports, model loads), which on
#: such inputs costs more than the second worker saves (see README, "Speed and memory").
LOCAL_MAX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Unit:
    """One partition of the inputs: bytes ``[start, end)`` of a text file, or row group ``start`` of
    a parquet file (``kind``: ``text`` | ``encoded`` (the stage's parquet) | ``table`` (raw columns))."""

    index: int
    file_index: int
    path: str
    shown: str
    kind: str
    start: int
    end: int
    columns: tuple[str, ...] = ()


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def input_files(patterns: Sequence[str], what: str = "--raw") -> list[Path]:
    """Paths / globs → files (a folder means its ``*.parquet`` files); missing → error naming it."""
    out: list[Path] = []
    for p in patterns:
        if Path(p).is_dir():
            files = sorted(Path(p).glob("*.parquet"))
            if not files:
                raise PreprocessError(f"folder has no parquet files ({what})", file=str(p), reason="missing_file")
            out += [f for f in files if f not in out]
        else:
            out += [f for f in expand_inputs([p], what) if f not in out]
    return out


def plan_units(predictor: Predictor, files: Sequence[Path], scratch: Path, blocksize: int = DEFAULT_BLOCKSIZE,
               id_columns: Sequence[str] = ()) -> tuple[list[Unit], dict[int, int]]:
    """Partitions of ``files`` in input order, and the header lines of each file (for messages)."""
    units: list[Unit] = []
    header_lines: dict[int, int] = {}
    need = encoded_columns(predictor.feature_map, predictor.model.required_pairs(), label=False)
    for i, f in enumerate(files):
        shown = str(f)
        if f.stat().st_size == 0:
            raise PreprocessError("empty file", file=shown, reason="empty_file")
        if _is_parquet(f):
            pf = pq.ParquetFile(f)
            missing = [c for c in id_columns if c not in pf.schema_arrow.names]
            kind = "encoded" if schema_problem(pf.schema_arrow, need) is None else "table"
            if kind == "table":
                predictor.require_encoder().check_columns(pf.schema_arrow.names, shown, id_columns)
            elif missing:
                raise PreprocessError(f"no column {missing[0]!r} (requested id column)", file=shown, reason="schema")
            header_lines[i] = 0
            units += [Unit(len(units) + g, i, str(f), shown, kind, g, pf.metadata.row_group(g).num_rows)
                      for g in range(pf.metadata.num_row_groups)]
            continue
        enc = predictor.require_encoder()
        plain = str(f)
        if is_gzip(f):
            scratch.mkdir(parents=True, exist_ok=True)
            plain = decompress(f, scratch / f"{i:04d}-{f.name}.txt")
        columns, first = enc.file_columns(plain, shown)
        enc.check_columns(columns, shown, id_columns)
        header_lines[i] = 1 if first else 0
        size = os.path.getsize(plain)
        for a, b in plan_blocks(plain, size, first, blocksize):
            units.append(Unit(len(units), i, plain, shown, "text", a, b, tuple(columns)))
    return units, header_lines


def score_part(unit: Unit, predictor: Predictor, on_bad_rows: str = "error",
               id_columns: Sequence[str] = ()) -> dict[str, Any]:
    """Score one partition: ``{"lines": int64 positions of the scored rows in the partition,
    "prob": float32, "ids": {column: strings}, "n_lines", "bad": first bad rows, "bad_counts"}``.

    With ``on_bad_rows="error"`` a partition with bad rows is not scored (``prob`` is None): the
    caller raises for the first bad row of the inputs.
    """
    ids: dict[str, pa.Array] = {}
    if unit.kind == "encoded":
        pf = pq.ParquetFile(unit.path)
        t = pf.read_row_group(unit.start)
        prob = predictor.probabilities(t)
        ids = {c: t[c].cast(pa.string()) for c in id_columns}
        return {"lines": np.arange(t.num_rows, dtype=np.int64), "prob": prob, "ids": ids, "n_lines": t.num_rows,
                "bad": [], "bad_counts": {}}
    enc = predictor.require_encoder()
    if unit.kind == "text":
        parsed = enc.parse_text(read_range(unit.path, unit.start, unit.end), list(unit.columns), id_columns)
    else:
        parsed = enc.parse_frame(pq.ParquetFile(unit.path).read_row_group(unit.start), id_columns, unit.shown)
    bad = parsed["bad"]
    res: dict[str, Any] = {"lines": parsed["lines"], "prob": None, "ids": {}, "n_lines": parsed["n_lines"],
                           "bad": bad[:MAX_BAD_EXAMPLES], "bad_counts": dict(Counter(r for _, r, _ in bad))}
    if bad and on_bad_rows == "error":
        return res
    res["prob"] = predictor.score_parsed(parsed, "skip")
    res["ids"] = {c: parsed["table"][c] for c in id_columns}
    return res


def _raise_bad(results: Sequence[dict[str, Any]], units: Sequence[Unit], header_lines: dict[int, int]) -> None:
    """The first bad row of the inputs, with its file and line (row for parquet)."""
    if any(r["bad"] for r in results):
        raise_first_bad(list(results), list(units), header_lines)  # type: ignore[arg-type]


def predict_files(predictor: Predictor, patterns: Sequence[str], on_bad_rows: str = "error",
                  blocksize: int = DEFAULT_BLOCKSIZE) -> np.ndarray:
    """Probabilities (float32) of every data row of the files, in input order (NaN: skipped bad rows).

    In this process, one partition at a time; see :meth:`Predictor.predict`.
    """
    check_on_bad_rows(on_bad_rows)
    with tempfile.TemporaryDirectory(prefix="optinter-predict-") as scratch:
        units, header_lines = plan_units(predictor, input_files(patterns, "data"), Path(scratch), blocksize)
        results = [score_part(u, predictor, on_bad_rows) for u in units]
    if on_bad_rows == "error":
        _raise_bad(results, units, header_lines)
    parts = [aligned(r["n_lines"], r["lines"], r["prob"]) for r in results]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# ---- writing scores, on a cluster ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _cached_predictor(path: str, device: str, batch_size: int | None) -> Predictor:
    return Predictor.load(path, device=device, batch_size=batch_size)


def score_task(unit: Unit, spec: dict[str, Any]) -> dict[str, Any]:
    """Dask task: score one partition, write ``<parts>/uNNNNN.parquet`` (``line``, ``probability``,
    id columns); return its counts and score histogram."""
    if spec.get("threads") and os.getpid() != spec["driver_pid"]:  # a worker process: its own torch threads
        import torch

        torch.set_num_threads(int(spec["threads"]))
    pred = _cached_predictor(spec["model"], spec["device"], spec["batch_size"])
    r = score_part(unit, pred, spec["on_bad_rows"], spec["id_columns"])
    out = {k: r[k] for k in ("n_lines", "bad", "bad_counts")}
    if r["prob"] is None:
        return {**out, "rows": 0, "hist": [0] * HISTOGRAM_BINS, "sum": 0.0}
    t = pa.table({"line": pa.array(r["lines"], pa.int64()), "probability": pa.array(r["prob"], pa.float32()),
                  **{c: r["ids"][c] for c in spec["id_columns"]}})
    pq.write_table(t, Path(spec["parts"]) / f"u{unit.index:05d}.parquet")
    hist = np.histogram(r["prob"], bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]
    return {**out, "rows": int(t.num_rows), "hist": hist.tolist(), "sum": float(np.sum(r["prob"], dtype=np.float64))}


def _merge_parts(units: Sequence[Unit], results: Sequence[dict[str, Any]], parts: Path, out: Path,
                 id_columns: Sequence[str]) -> None:
    """Concatenate the part files in input order into ``out``, ``line`` → global ``row``."""
    schema = pa.schema([("row", pa.int64()), ("probability", pa.float32())] + [(c, pa.string()) for c in id_columns])
    base = 0
    with pq.ParquetWriter(out, schema) as w:
        for u, r in zip(units, results):
            f = parts / f"u{u.index:05d}.parquet"
            if r["rows"]:
                t = pq.read_table(f)
                rows = pa.array(t["line"].to_numpy() + base, pa.int64())
                w.write_table(pa.table([rows, t["probability"], *[t[c].cast(pa.string()) for c in id_columns]],
                                       schema=schema))
                f.unlink()
            base += r["n_lines"]


def score_files(model: str | Path, raw: Sequence[str], out: str | Path, on_bad_rows: str = "error",
                id_columns: Sequence[str] = (), blocksize: int = DEFAULT_BLOCKSIZE, scheduler: str | None = None,
                n_workers: int = 2, threads_per_worker: int = 1, processes: bool = True, local: bool | None = None,
                device: str = "cpu", batch_size: int | None = None,
                tracking_uri: str | None = None) -> dict[str, Any]:
    """Score ``raw`` (paths / globs) with ``model`` (folder, run id or model URI) into the parquet ``out``.

    ``local``: score in this process (True) or on Dask (False); default (None): on Dask when a
    scheduler is configured (``scheduler`` / ``DASK_SCHEDULER_ADDRESS``) or the inputs exceed
    :data:`LOCAL_MAX_BYTES`, and there is more than one partition; else in this process.
    ``threads_per_worker``: Dask threads per worker and torch threads per worker process (and in
    this process when local): parallelism comes from partitions scored side by side; one torch thread
    each is much faster than several on a busy machine (the model's small ops are memory-bound).
    Returns a summary: rows read / scored / dropped per reason, seconds, rows/s, the score
    histogram (``HISTOGRAM_BINS`` bins over [0, 1]) and mean.
    """
    t0 = time.perf_counter()
    check_on_bad_rows(on_bad_rows)
    id_columns = list(id_columns)
    if len(set(id_columns)) != len(id_columns) or any(c in ("row", "probability") for c in id_columns):
        raise ValueError(f"parameter 'id_columns': {id_columns} must be distinct and not 'row' / 'probability'")
    files = input_files(list(raw))
    out = Path(out).resolve()
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name (e.g. {out}/scores.parquet)")
    with scratch_beside(out) as tmp:
        bundle = resolve_model(model, tracking_uri, dst=tmp / "model")
        pred = Predictor.load(bundle, device=device, batch_size=batch_size)
        units, header_lines = plan_units(pred, files, tmp / "raw", blocksize, id_columns)
        (tmp / "parts").mkdir()
        spec = {"model": str(bundle), "device": device, "batch_size": batch_size, "on_bad_rows": on_bad_rows,
                "id_columns": id_columns, "parts": str(tmp / "parts"), "threads": threads_per_worker,
                "driver_pid": os.getpid()}
        log.info("scoring %d file(s) in %d partition(s) with %s (%s)", len(files), len(units), pred.name, model)
        t1 = time.perf_counter()
        if local is None:
            remote = bool(scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"))
            local = len(units) <= 1 or (not remote and sum(f.stat().st_size for f in files) <= LOCAL_MAX_BYTES)
        if local:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(threads_per_worker)
            try:
                results = run_tasks(None, score_task, units, "score", count=lambda r: r["rows"], spec=spec)
            finally:
                torch.set_num_threads(threads)
                _cached_predictor.cache_clear()
        else:
            from preprocess.cluster import dask_client

            with dask_client(scheduler, n_workers, threads_per_worker, processes) as client:
                results = run_tasks(client, score_task, units, "score", count=lambda r: r["rows"], spec=spec)
        score_s = time.perf_counter() - t1
        if on_bad_rows == "error":
            _raise_bad(results, units, header_lines)
        _merge_parts(units, results, tmp / "parts", tmp / "scores.parquet", id_columns)
        os.replace(tmp / "scores.parquet", out)
    rows = sum(r["rows"] for r in results)
    dropped = {k: sum(r["bad_counts"].get(k, 0) for r in results) for k in BAD_REASONS}
    total = time.perf_counter() - t0
    hist = np.sum([r["hist"] for r in results], axis=0).astype(int).tolist() if results else [0] * HISTOGRAM_BINS
    summary = {"model": str(model), "model_name": pred.name, "inputs": [str(f) for f in files], "out": str(out),
               "partitions": len(units), "rows_read": sum(r["n_lines"] for r in results), "rows_scored": rows,
               "rows_dropped": dropped, "seconds": round(total, 3), "score_seconds": round(score_s, 3),
               "rows_per_s": rows / total if total > 0 else 0.0,
               "score_mean": sum(r["sum"] for r in results) / rows if rows else float("nan"),
               "histogram": {"bins": np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1).round(4).tolist(), "counts": hist}}
    log.info("scored %d rows (%d dropped: %s) in %.1fs (%.0f rows/s) -> %s", rows, sum(dropped.values()),
             {k: v for k, v in dropped.items() if v}, total, summary["rows_per_s"], out)
    return summary


# ---- the score stage -------------------------------------------------------------------------------------------
def write_histogram_png(hist: dict[str, Any], path: Path, title: str) -> Path:
    """A bar chart of the score histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(hist["bins"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", edgecolor="white")
    ax.set_xlabel("click probability")
    ax.set_ylabel("rows")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_score(model: str | Path, raw: Sequence[str], out_dir: str | Path, tracker: Tracker | None = None,
              **kw: Any) -> dict[str, Any]:
    """The ``score`` stage: :func:`score_files` into ``out_dir/scores.parquet`` + ``summary.json`` +
    ``histogram.png``; logs rows scored, rows/s, the mean score and the histogram to ``tracker``."""
    tr = as_tracker(tracker)
    tr.log_params({"model": str(model), "raw": ";".join(map(str, raw)),
                   **{k: v for k, v in kw.items() if k in ("on_bad_rows", "id_columns", "blocksize")}})
    with atomic_output_dir(out_dir) as tmp:
        summary = score_files(model, raw, tmp / SCORES_FILE, **kw)
        summary["out"] = str(Path(out_dir) / SCORES_FILE)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        write_histogram_png(summary["histogram"], tmp / "histogram.png",
                            f"{summary['model_name']}: {summary['rows_scored']:,} rows")
    tr.set_tags({"model": summary["model_name"]})
    tr.log_metrics({"rows_scored": summary["rows_scored"], "rows_read": summary["rows_read"],
                    "rows_dropped": sum(summary["rows_dropped"].values()), "rows_per_s": summary["rows_per_s"],
                    "score_mean": summary["score_mean"], "score_seconds": summary["score_seconds"]})
    for k, c in enumerate(summary["histogram"]["counts"]):
        tr.log_metrics({"score_histogram": float(c)}, step=k)
    for f in (SUMMARY_FILE, "histogram.png"):
        tr.log_artifact(Path(out_dir) / f)
    return summary
