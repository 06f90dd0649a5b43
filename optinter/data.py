"""Streaming mini-batches from the encoded parquet splits with bounded memory.

Reads ``<data_dir>/<split>/*.parquet`` (the layout of ``feature_map.json``) in chunks of at most
``chunk_rows`` rows per record batch, only the columns the model needs (categorical ids,
multivalent id lists, continuous values, the label, and the pair columns the model asks for).
Columns are converted to numpy/torch column-wise (no per-row Python); a multivalent field's
``list<int32>`` column is turned into a padded n × L block from the Arrow list offsets and values
(L = the largest ``max_len`` of the feature map's multivalent fields, PAD = 0).

Training order is deterministic per (seed, epoch): the list of row groups is permuted, chunks
are collected into a shuffle buffer of about ``shuffle_buffer`` rows, and the buffer is permuted
before it is cut into batches; rows left over (fewer than a batch) are carried into the next
buffer. Memory is bounded by the buffer (plus one chunk), whatever the size of the split.
Evaluation order is the stored row order.

Speed (``ParquetBatches``): chunks are written column by column straight into one row-major staging
buffer per pass (no column-major copy, no transpose), the buffer's permutation is applied as an index
(each batch gathers its rows once, straight into its int64 tensors), the ids are checked against the
vocabularies from the row groups' min/max statistics (no pass over the ids; files without statistics
are checked value by value) and the next record batch is decoded in a second thread. Only the columns
the model reads are decoded (a re-trained OptInter: its memorized pairs). ``benchmarks/train.py
--loader-only`` prints rows/s per epoch.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from preprocess.feature_map import FeatureMap

from .models.base import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Unit:
    """One row group of one parquet file."""

    path: Path
    row_group: int
    rows: int


def split_files(data_dir: str | Path, fmap: FeatureMap, split: str) -> list[Path]:
    """The parquet files of ``split`` in sorted order (clear error when there are none)."""
    if split not in fmap.splits:
        raise ValueError(f"feature map has no split {split!r} (splits: {sorted(fmap.splits)})")
    folder = fmap.split_dir(data_dir, split)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no parquet files for split {split!r}")
    return files


def encoded_columns(fmap: FeatureMap, pair_names: Sequence[str] = (), label: bool = True) -> dict[str, str]:
    """Column → kind (``int``, ``float``, ``list<int>``) of the encoded columns a model reads."""
    need: dict[str, str] = {fmap.label: "float"} if label else {}
    for f in fmap.categorical:
        need[f.column] = "int"
    for f in fmap.multivalent:
        need[f.column] = "list<int>"
    for f in fmap.continuous:
        need[f.column] = "float"
    pcol = {p.name: p.column for p in fmap.pairs}
    for name in pair_names:
        if name not in pcol:
            raise ValueError(f"pair {name!r} is not in the feature map")
        need[pcol[name]] = "int"
    return need


def schema_problem(schema: pa.Schema, need: dict[str, str]) -> str | None:
    """What a parquet schema lacks of ``need`` (:func:`encoded_columns`): a message naming the
    column, or None when every column is there with a usable type."""
    for col, kind in need.items():
        idx = schema.get_field_index(col)
        if idx < 0:
            return f"missing column {col!r} needed by the model"
        t = schema.field(idx).type
        if kind == "list<int>":
            ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)
        elif kind == "int":
            ok = pa.types.is_integer(t)
        else:
            ok = pa.types.is_floating(t) or pa.types.is_integer(t)
        if not ok:
            return f"column {col!r} has type {t}, expected {kind}"
    return None


def check_split_schema(
    data_dir: str | Path, fmap: FeatureMap, split: str, pair_names: Sequence[str] = ()
) -> int:
    """Check that every file of ``split`` has the needed columns with usable types; return its rows.

    Raises ValueError naming the file and column on a missing column or a wrong type.
    Multivalent fields need a list column of integers.
    """
    need = encoded_columns(fmap, pair_names)
    rows = 0
    for path in split_files(data_dir, fmap, split):
        meta = pq.ParquetFile(path)
        problem = schema_problem(meta.schema_arrow, need)
        if problem:
            raise ValueError(f"{path}: {problem}")
        rows += meta.metadata.num_rows
    expected = fmap.splits[split].rows
    if expected and rows != expected:
        raise ValueError(f"{fmap.split_dir(data_dir, split)}: {rows} rows, but feature_map.json says {expected}")
    return rows


class EncodedColumns:
    """The encoded columns a model reads and their conversion to row-major arrays and batches.

    ``pair_names``: the pair columns, in the column order of ``batch.pairs``
    (``model.required_pairs()``; empty → ``batch.pairs`` is B × 0).
    ``check_ids``: raise on ids ≥ vocab size (a cheap vectorized max per chunk).
    """

    def __init__(self, fmap: FeatureMap, pair_names: Sequence[str] = (), check_ids: bool = True) -> None:
        self.fmap = fmap
        self.check_ids = check_ids
        pairs = {p.name: p for p in fmap.pairs}
        missing = [n for n in pair_names if n not in pairs]
        if missing:
            raise ValueError(f"pairs {missing[:5]} are not in the feature map")
        self.cat_cols = [f.column for f in fmap.categorical]
        self.cat_vocab = np.array([f.vocab_size for f in fmap.categorical], dtype=np.int64)
        self.multi_cols = [f.column for f in fmap.multivalent]
        self.multi_vocab = [int(f.vocab_size) for f in fmap.multivalent]
        self.multi_max_len = [int(f.max_len) for f in fmap.multivalent]
        self.multi_len = max(self.multi_max_len, default=0)  # L of batch.multi
        self.cont_cols = [f.column for f in fmap.continuous]
        self.pair_cols = [pairs[n].column for n in pair_names]
        self.pair_vocab = np.array([pairs[n].vocab_size for n in pair_names], dtype=np.int64)
        self.columns = self.cat_cols + self.multi_cols + self.cont_cols + self.pair_cols + [fmap.label]

    @staticmethod
    def _stack(rb: pa.RecordBatch, cols: list[str], dtype: type, path: Path) -> np.ndarray:
        """K × n array (column-major: each column written contiguously, no per-row work)."""
        out = np.empty((len(cols), rb.num_rows), dtype=dtype)
        for k, c in enumerate(cols):
            col = rb.column(c)
            if col.null_count:
                raise ValueError(f"{path}: column {c!r} has {col.null_count} missing values")
            out[k] = col.to_numpy(zero_copy_only=False)
        return out

    def _pad_lists(self, rb: pa.RecordBatch, path: Path) -> np.ndarray:
        """n × Fm × L int32: each row's id list left-aligned, PAD (0) after it (no per-row work)."""
        n = rb.num_rows
        out = np.zeros((n, len(self.multi_cols), self.multi_len), dtype=np.int32)
        pos = np.arange(self.multi_len)
        for k, c in enumerate(self.multi_cols):
            col = rb.column(c)
            if col.null_count:
                raise ValueError(f"{path}: column {c!r} has {col.null_count} missing lists")
            offsets = col.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
            lengths = np.diff(offsets)
            if n and lengths.max() > self.multi_max_len[k]:
                raise ValueError(f"{path}: column {c!r} has a list of {lengths.max()} ids, longer than its max_len "
                                 f"{self.multi_max_len[k]}; data does not match feature_map.json")
            child = col.values.slice(offsets[0], offsets[-1] - offsets[0]) if n else col.values.slice(0, 0)
            if child.null_count:
                raise ValueError(f"{path}: column {c!r} has {child.null_count} missing ids inside its lists")
            vals = child.to_numpy(zero_copy_only=False)
            if self.check_ids and vals.size and (vals.max() >= self.multi_vocab[k] or vals.min() < 0):
                raise ValueError(
                    f"{path}: column {c!r} has ids outside [0, {self.multi_vocab[k]}) (max {vals.max()}); "
                    f"data does not match feature_map.json"
                )
            view = out[:, k, :]
            view[pos[None, :] < lengths[:, None]] = vals  # row-major order of the kept slots = list order
        return out

    def _convert(self, rb: pa.RecordBatch, path: Path) -> dict[str, np.ndarray]:
        cat = self._stack(rb, self.cat_cols, np.int32, path)
        pairs = self._stack(rb, self.pair_cols, np.int32, path)
        if self.check_ids and rb.num_rows:
            for arr, vocab, names in ((cat, self.cat_vocab, self.cat_cols), (pairs, self.pair_vocab, self.pair_cols)):
                if arr.shape[0]:
                    bad = (arr.max(axis=1) >= vocab) | (arr.min(axis=1) < 0)
                    if bad.any():
                        k = int(np.flatnonzero(bad)[0])
                        raise ValueError(
                            f"{path}: column {names[k]!r} has ids outside [0, {vocab[k]}) "
                            f"(max {arr[k].max()}); data does not match feature_map.json"
                        )
        # one blocked transpose per chunk → row-major n × K buffers (row gathers and slices are fast)
        return {
            "cat": np.ascontiguousarray(cat.T),
            "multi": self._pad_lists(rb, path),
            "cont": np.ascontiguousarray(self._stack(rb, self.cont_cols, np.float32, path).T),
            "pairs": np.ascontiguousarray(pairs.T),
            "label": (np.array(rb.column(self.fmap.label).to_numpy(zero_copy_only=False), dtype=np.float32)
                      if self.fmap.label in rb.schema.names else np.zeros(rb.num_rows, dtype=np.float32)),
        }

    @staticmethod
    def _to_batch(arrs: dict[str, np.ndarray], sl: slice) -> Batch:
        """Rows ``sl`` of the row-major buffers → B × K tensors (int64 ids; multi B × Fm × L)."""
        return Batch(
            torch.from_numpy(arrs["cat"][sl].astype(np.int64)),
            torch.from_numpy(arrs["cont"][sl].copy()),
            torch.from_numpy(arrs["pairs"][sl].astype(np.int64)),
            torch.from_numpy(arrs["label"][sl].copy()),
            torch.from_numpy(arrs["multi"][sl].astype(np.int64)),
        )

    def convert(self, rb: pa.RecordBatch | pa.Table, where: str | Path = "input") -> dict[str, np.ndarray]:
        """Row-major arrays of an encoded record batch or table (``cat`` n × Fc int32, ``multi``
        n × Fm × L int32, ``cont`` n × Fn float32, ``pairs`` n × P' int32, ``label`` n float32 —
        zeros when the table has no label); ids are checked against the vocabularies."""
        if isinstance(rb, pa.Table):
            rb = rb.combine_chunks().to_batches()[0] if rb.num_rows else \
                pa.RecordBatch.from_pylist([], schema=rb.schema)
        return self._convert(rb, Path(str(where)))

    def batches(self, arrs: dict[str, np.ndarray], batch_size: int) -> Iterator[Batch]:
        """:class:`Batch` es of ``batch_size`` rows (the last one shorter) over converted arrays."""
        n = int(arrs["label"].shape[0])
        for s in range(0, n, batch_size):
            yield self._to_batch(arrs, slice(s, min(s + batch_size, n)))


class ParquetBatches(EncodedColumns):
    """Iterable of :class:`Batch` (CPU tensors) over one split (or the encoded parquet ``files``).

    ``pair_names``: the pair columns to read, in the column order of ``batch.pairs``
    (``model.required_pairs()``; empty → ``batch.pairs`` is B × 0).
    ``shuffle``: deterministic per (``seed``, epoch), epoch set with :meth:`set_epoch`.
    ``check_ids``: raise on ids ≥ vocab size (a cheap vectorized max per chunk).
    ``prefetch``: number of batches prepared ahead in a background thread (0 = none).
    ``files``: read these parquet files instead of the split's (files without the label column
    give ``batch.label`` = 0).
    """

    def __init__(
        self,
        data_dir: str | Path,
        fmap: FeatureMap,
        split: str,
        batch_size: int,
        pair_names: Sequence[str] = (),
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 200_000,
        chunk_rows: int = 65_536,
        drop_last: bool = False,
        check_ids: bool = True,
        prefetch: int = 2,
        files: Sequence[str | Path] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        super().__init__(fmap, pair_names, check_ids)
        self.data_dir = Path(data_dir)
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.chunk_rows = chunk_rows
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.epoch = 0
        self.units: list[_Unit] = []
        paths = [Path(f) for f in files] if files is not None else split_files(data_dir, fmap, split)
        for path in paths:
            pf = pq.ParquetFile(path)
            md = pf.metadata
            if fmap.label not in pf.schema_arrow.names and self.columns[-1] == fmap.label:
                self.columns = self.columns[:-1]  # unlabelled files: batch.label is 0
            self.units.extend(_Unit(path, g, md.row_group(g).num_rows) for g in range(md.num_row_groups))
        self.num_rows = sum(u.rows for u in self.units)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_rows // self.batch_size
        return -(-self.num_rows // self.batch_size)

    # ---- reading -----------------------------------------------------------------------------------
    def _unit_unchecked(self, pf: pq.ParquetFile, u: _Unit) -> set[str]:
        """Id columns of a unit whose range its row group's min/max statistics do not vouch for.

        Raises on a column whose statistics already show an id outside ``[0, vocab)``; the columns
        returned (no statistics) are checked chunk by chunk instead. Statistics make the check free:
        no pass over the ids.
        """
        if not self.check_ids:
            return set()
        rg = pf.metadata.row_group(u.row_group)
        where = {rg.column(i).path_in_schema: i for i in range(rg.num_columns)}
        todo: set[str] = set()
        for cols, vocab in ((self.cat_cols, self.cat_vocab), (self.pair_cols, self.pair_vocab)):
            for c, v in zip(cols, vocab.tolist()):
                st = rg.column(where[c]).statistics if c in where else None
                if st is None or not st.has_min_max or st.min is None or st.max is None:
                    todo.add(c)
                elif st.min < 0 or st.max >= v:
                    raise ValueError(f"{u.path}: column {c!r} has ids outside [0, {v}) (max {st.max}); data does not "
                                     f"match feature_map.json")
        return todo

    def _column(self, rb: pa.RecordBatch, c: str, path: Path, unchecked: set[str], vocab: int = 0) -> np.ndarray:
        """One column of a record batch as numpy (zero-copy for a plain int32 / float32 column)."""
        col = rb.column(c)
        if col.null_count:
            raise ValueError(f"{path}: column {c!r} has {col.null_count} missing values")
        arr = col.to_numpy(zero_copy_only=False)
        if c in unchecked and len(arr) and (arr.max() >= vocab or arr.min() < 0):
            raise ValueError(f"{path}: column {c!r} has ids outside [0, {vocab}) (max {arr.max()}); data does not "
                             f"match feature_map.json")
        return arr

    def _record_batches(self, units: Sequence[_Unit]) -> Iterator[tuple[_Unit, set[str], pa.RecordBatch]]:
        """``(unit, id columns to check per chunk, record batch)`` of at most ``chunk_rows`` rows, unit by unit."""
        cur_path: Path | None = None
        pf: pq.ParquetFile | None = None
        for u in units:
            if u.path != cur_path:
                pf = pq.ParquetFile(u.path)
                cur_path = u.path
            assert pf is not None
            unchecked = self._unit_unchecked(pf, u)
            for rb in pf.iter_batches(batch_size=self.chunk_rows, row_groups=[u.row_group], columns=self.columns):
                yield u, unchecked, rb

    def _stream(self, units: Sequence[_Unit], rng: np.random.Generator | None) -> Iterator[Batch]:
        """Batches of the rows of ``units`` in order, through one row-major staging buffer.

        Each record batch (at most ``chunk_rows`` rows of one row group) is written column by column
        into the next free rows of the buffer (strided writes: no column-major copy, no transpose).
        ``rng`` None (ordered): a batch is a run of consecutive rows. Otherwise, once the buffer holds
        ``shuffle_buffer`` rows (and at the end), it is permuted with ``rng`` — as an index, the rows do
        not move — and batch ``j`` gathers rows ``perm[j·B:(j+1)·B]`` (one row gather straight into the
        batch's tensors); the rows left over (fewer than a batch) move, in permuted order, to the front of
        the buffer. The buffer is allocated once per pass (pages are touched only as rows arrive), so
        memory is about ``(shuffle_buffer + chunk_rows) × row bytes`` whatever the size of the split.
        """
        B = self.batch_size
        limit = self.shuffle_buffer if rng is not None else B
        cap = max(1, min(limit + self.chunk_rows, max(self.num_rows, 1)))
        n_cat, n_pair, n_cont, n_multi = len(self.cat_cols), len(self.pair_cols), len(self.cont_cols), len(self.multi_cols)
        cat = np.empty((cap, n_cat), np.int32)
        pairs = np.empty((cap, n_pair), np.int32)
        cont = np.empty((cap, n_cont), np.float32)
        label = np.zeros(cap, np.float32)
        multi = np.empty((cap, n_multi, self.multi_len), np.int32) if n_multi else None
        has_label = self.fmap.label in self.columns
        bufs = [x for x in (cat, pairs, cont, label, multi) if x is not None]
        rows = 0

        def emit(sel: slice | np.ndarray) -> Batch:
            if isinstance(sel, slice):
                take = (lambda x, dt=None: x[sel].astype(dt) if dt is not None else x[sel].copy())
            else:
                take = (lambda x, dt=None: np.take(x, sel, axis=0).astype(dt, copy=False) if dt is not None
                        else np.take(x, sel, axis=0))
            n = (sel.stop - sel.start) if isinstance(sel, slice) else len(sel)
            return Batch(
                torch.from_numpy(take(cat, np.int64)),
                torch.from_numpy(take(cont)),
                torch.from_numpy(take(pairs, np.int64)),
                torch.from_numpy(take(label)),
                torch.from_numpy(take(multi, np.int64)) if multi is not None else torch.zeros(n, 0, 0, dtype=torch.long),
            )

        def carry(sel: slice | np.ndarray) -> int:
            """Move the rows ``sel`` (fewer than a batch) to the front of the buffer; return their count."""
            for x in bufs:
                x[: (len(sel) if not isinstance(sel, slice) else sel.stop - sel.start)] = x[sel]
            return len(sel) if not isinstance(sel, slice) else sel.stop - sel.start

        def flush(final: bool) -> Iterator[Batch]:
            nonlocal rows
            n_full = (rows // B) * B
            if rng is None:
                for s0 in range(0, n_full, B):
                    yield emit(slice(s0, s0 + B))
                rest: slice | np.ndarray = slice(n_full, rows)
                if final:
                    if rows > n_full and not self.drop_last:
                        yield emit(rest)
                    rows = 0
                else:
                    rows = carry(rest) if rows > n_full else 0
                return
            perm = rng.permutation(rows)
            for s0 in range(0, n_full, B):
                yield emit(perm[s0:s0 + B])
            if final:
                if rows > n_full and not self.drop_last:
                    yield emit(perm[n_full:rows])
                rows = 0
            else:
                rows = carry(perm[n_full:rows]) if rows > n_full else 0

        chunks = self._record_batches(units)
        if self.prefetch > 0:  # decode the next record batch (pyarrow, GIL released) while this one is staged
            chunks = _prefetch(chunks, 1)
        for u, unchecked, rb in chunks:
            m = rb.num_rows
            r1 = rows + m
            for k, c in enumerate(self.cat_cols):
                cat[rows:r1, k] = self._column(rb, c, u.path, unchecked, int(self.cat_vocab[k]))
            for k, c in enumerate(self.pair_cols):
                pairs[rows:r1, k] = self._column(rb, c, u.path, unchecked, int(self.pair_vocab[k]))
            for k, c in enumerate(self.cont_cols):
                cont[rows:r1, k] = self._column(rb, c, u.path, unchecked)
            if has_label:
                label[rows:r1] = self._column(rb, self.fmap.label, u.path, unchecked)
            if multi is not None:
                multi[rows:r1] = self._pad_lists(rb, u.path)
            rows = r1
            if rows >= limit:
                yield from flush(final=False)
        if rows:
            yield from flush(final=True)

    def _iter(self) -> Iterator[Batch]:
        if not self.shuffle:
            return self._stream(self.units, None)
        rng = np.random.default_rng([self.seed, self.epoch])
        return self._stream([self.units[i] for i in rng.permutation(len(self.units))], rng)

    def __iter__(self) -> Iterator[Batch]:
        if self.prefetch <= 0:
            return self._iter()
        return _prefetch(self._iter(), self.prefetch)


_DONE = object()


def _prefetch(it: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``it`` in a background thread, ``depth`` items ahead (pyarrow/numpy release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True, name="parquet-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)
