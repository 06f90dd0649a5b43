"""Multivalent (list-valued) categorical columns: tokenizing, counting and encoding, vectorized.

A cell such as ``"10063,10110,13866"`` (iPinYou's ``usertag``, token separator ``","``) is a *set*
of tokens: empty tokens are ignored and a token repeated within a cell counts once, at its first
position. An empty or missing cell has no tokens.

* :func:`count_tokens` — per partition: ``value``/``count`` table of tokens where each row counts a
  token at most once (the table :func:`preprocess.oov.reduce_counts` reduces, so token ids follow
  the usual rule: kept tokens ``2..`` by train count desc then value asc, ``OOV_ID`` otherwise),
  plus the histogram of distinct-token counts per row (for ``max_len`` and the summary);
* :func:`encode_tokens` — the ``list<int32>`` column of ids: distinct tokens in first-occurrence
  order, each mapped to its id (an OOV token gives ``OOV_ID``), truncated to ``max_len`` (the first
  tokens are kept); never contains ``PAD_ID``.

Both work on the column's dictionary (the distinct cell strings of a partition, as the raw reader
dictionary-encodes every categorical column): each distinct string is split once and rows only
index into the result, so no Python runs per row.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def split_tokens(strings: pa.Array, sep: str) -> tuple[np.ndarray, pa.Array]:
    """The distinct non-empty tokens of each string, in first-occurrence order.

    Returns ``(parents, tokens)``: ``tokens[k]`` belongs to ``strings[parents[k]]``; ``parents``
    is int64 and non-decreasing. Nulls are treated as empty strings.
    """
    strings = strings.cast(pa.string()).fill_null("")
    lists = pc.split_pattern(strings, pattern=sep)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    if not keep.all():
        flat = flat.filter(pa.array(keep))
        parents = parents[keep]
    if len(flat) == 0:
        return parents, flat
    codes = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    key = parents * (int(codes.max()) + 1) + codes
    _, first = np.unique(key, return_index=True)
    if len(first) < len(key):  # duplicates within a cell: keep each token's first occurrence
        first.sort()
        flat, parents = flat.take(pa.array(first)), parents[first]
    return parents, flat


def _dict_chunks(col: pa.Array | pa.ChunkedArray) -> list[tuple[pa.Array, np.ndarray]]:
    """``(dictionary, indices)`` of each chunk, the dictionary reduced to the entries the rows use.

    A partition's typed column shares the dictionary of its whole raw block (every split), so
    compacting it first keeps the work proportional to the partition's own rows.
    """
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = []
    for ch in chunks:
        if not pa.types.is_dictionary(ch.type):
            ch = pc.dictionary_encode(ch.cast(pa.string()).fill_null(""))
        d = ch.dictionary.cast(pa.string())
        if ch.null_count:  # a null cell is an empty cell
            d = pa.concat_arrays([d, pa.array([""])])
            idx = np.where(ch.is_null().to_numpy(zero_copy_only=False), len(d) - 1,
                           ch.indices.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)
        else:
            idx = ch.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if len(idx) < len(d):
            used = np.flatnonzero(np.bincount(idx, minlength=len(d)))
            remap = np.zeros(len(d), dtype=np.int64)
            remap[used] = np.arange(len(used))
            d, idx = d.take(pa.array(used)), remap[idx]
        out.append((d, idx))
    return out


def count_tokens(col: pa.Array | pa.ChunkedArray, sep: str) -> tuple[pa.Table, np.ndarray]:
    """Token counts of one partition's column, each row counting a token once.

    Returns ``(table, hist)``: ``table`` has columns ``value`` (string) and ``count`` (int64), one
    row per token present; ``hist[k]`` is the number of rows with ``k`` distinct tokens.
    """
    tables = []
    hist = np.zeros(1, dtype=np.int64)
    for d, idx in _dict_chunks(col):
        if len(idx) == 0:
            continue
        rows_per_entry = np.bincount(idx, minlength=len(d)).astype(np.int64)
        parents, tokens = split_tokens(d, sep)
        n_tok = np.bincount(parents, minlength=len(d))
        h = np.bincount(n_tok, weights=rows_per_entry).astype(np.int64)
        hist = np.pad(hist, (0, max(0, len(h) - len(hist))))
        hist[: len(h)] += h
        w = rows_per_entry[parents]
        used = w > 0
        if not used.any():
            continue
        t = pa.table({"value": tokens.filter(pa.array(used)), "count": pa.array(w[used])})
        tables.append(t.group_by("value").aggregate([("count", "sum")]).rename_columns(["value", "count"]))
    if not tables:
        return pa.table({"value": pa.array([], pa.string()), "count": pa.array([], pa.int64())}), hist
    t = pa.concat_tables(tables)
    if len(tables) > 1:
        t = t.group_by("value").aggregate([("count", "sum")]).rename_columns(["value", "count"])
    return t, hist


def encode_tokens(col: pa.Array | pa.ChunkedArray, sep: str, to_ids: Callable[[pa.Array], np.ndarray],
                  max_len: int) -> pa.ListArray:
    """``list<int32>`` ids of each row (length <= ``max_len``; empty cell → empty list).

    ``to_ids`` maps a string array of tokens to int32 ids (e.g.
    ``functools.partial(oov.transform_column, name)``).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = []
    for d, idx in _dict_chunks(col):
        parents, tokens = split_tokens(d, sep)
        n_tok = np.bincount(parents, minlength=len(d))
        starts = np.cumsum(n_tok) - n_tok
        rank = np.arange(len(parents), dtype=np.int64) - starts[parents]
        keep = rank < max_len
        ids = np.asarray(to_ids(tokens.filter(pa.array(keep)) if not keep.all() else tokens), dtype=np.int32)
        offsets = np.zeros(len(d) + 1, dtype=np.int32)
        np.cumsum(np.minimum(n_tok, max_len), out=offsets[1:])
        per_entry = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, type=pa.int32()))
        out.append(per_entry.take(pa.array(idx)))
    if not out:
        return pa.array([], type=pa.list_(pa.int32()))
    return pa.concat_arrays(out) if len(out) > 1 else out[0]


def resolve_max_len(configured: int | None, hist: np.ndarray, cap: int) -> int:
    """``configured``, or the most distinct tokens of a train row capped at ``cap`` (at least 1)."""
    if configured is not None:
        return int(configured)
    seen = int(np.flatnonzero(hist)[-1]) if np.any(hist) else 0
    return max(1, min(seen, cap))
