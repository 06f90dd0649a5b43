"""Joint (value id, label) counts of the encoded columns of a split, with Dask (the input of eq. 21).

Counting runs over ``<data>/<split>/part-*.parquet``: one task per (file, group of row groups,
group of columns) reads its columns with pyarrow and returns, per column, the joint counts of the
int64 key ``id · 2 + label`` (``np.bincount`` when the vocabulary is small, ``np.unique``
otherwise); the small count tables are then summed by a tree reduction, so the data are never
collected in one pandas frame. A ``distributed.Client`` is used when one is passed or already
running; otherwise Dask's threaded scheduler.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

from preprocess.feature_map import FeatureMap

log = logging.getLogger(__name__)

#: vocabularies up to this size are counted with a dense bincount; larger ones with np.unique.
DENSE_VOCAB_LIMIT = 1 << 16

Counts = tuple[np.ndarray, np.ndarray]  # (sorted unique int64 keys id*2+label, int64 counts)


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
