"""Raw input files: discovery, gzip, partitioning into line-aligned byte blocks, parsing.

A raw text file (plain, or gzip — detected by its magic bytes and decompressed to a scratch
file first) is cut into blocks of about ``blocksize`` bytes that start and end on line
boundaries.  :func:`parse_block` parses one block with pyarrow's CSV reader (no quoting: fields
may not contain the separator or a newline, as in CTR logs), checks every row (column count,
0/1 label, numeric continuous values) and reports bad rows with their line index in the block.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from preprocess.errors import BAD_COLUMN_COUNT, BAD_LABEL, BAD_NUMBER, PreprocessError

log = logging.getLogger(__name__)

DICT_STR = pa.dictionary(pa.int32(), pa.string())
#: A number cell, after trimming blanks: a decimal (``12``, ``-1.5``, ``.5``, ``3e-2``) or a non-finite literal
#: (``nan``, ``inf``, ``infinity``, any case, optional sign), which is read as missing like an empty cell.  Exactly
#: the strings Arrow's string → float64 cast accepts, less its ``nan(...)`` payload form, so that the fast path
#: (the cast) and the regex path of :func:`parse_numbers` agree on every cell whatever else is in its partition.
_NUM_RE = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf|infinity))$"


def expand_inputs(patterns: list[str] | tuple[str, ...] | str, what: str = "--raw") -> list[Path]:
    """Expand paths / globs (sorted per pattern, order of patterns kept); missing → PreprocessError."""
    if isinstance(patterns, (str, Path)):
        patterns = [str(patterns)]
    out: list[Path] = []
    for p in patterns:
        p = str(p)
        hits = sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else ([p] if Path(p).exists() else [])
        if not hits:
            raise PreprocessError(f"input file does not exist ({what})", file=p, reason="missing_file")
        for h in hits:
            hp = Path(h)
            if hp.is_dir():
                raise PreprocessError(f"is a folder, not a file ({what})", file=h, reason="missing_file")
            if hp not in out:
                out.append(hp)
    return out


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def decompress(src: str | Path, dest: str | Path) -> str:
    """gunzip ``src`` into ``dest`` (streaming; memory stays flat)."""
    try:
        with gzip.open(src, "rb") as fi, open(dest, "wb") as fo:
            shutil.copyfileobj(fi, fo, length=1 << 22)
    except (OSError, EOFError) as e:
        raise PreprocessError(f"cannot decompress gzip file ({e})", file=str(src), reason="bad_file") from e
    return str(dest)


def read_header(path: str | Path, sep: str, shown: str | None = None) -> tuple[list[str], int]:
    """Column names of the first line and the byte length of that line (with its newline)."""
    with open(path, "rb") as fh:
        line = fh.readline()
    if not line.strip():
        raise PreprocessError("empty file (no header line)", file=shown or str(path), reason="empty_file")
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    return [c.strip() for c in text.split(sep)], len(line)


@dataclass
class Block:
    """A line-aligned byte range ``[start, end)`` of one (decompressed) input file."""

    index: int          # global block number (file order, then offset)
    file_index: int     # position of the file in the input list
    path: str           # file actually read (decompressed copy for gzip)
    shown: str          # name used in messages (the user's file)
    start: int
    end: int
    split: int | None   # fixed split (pre-split inputs) or None (hash split)


def plan_blocks(path: str, size: int, first: int, blocksize: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``blocksize`` bytes from ``first`` to ``size``, cut after a newline."""
    bounds = [first]
    with open(path, "rb") as fh:
        pos = first + blocksize
        while pos < size:
            fh.seek(pos)
            extra = 0
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    pos = size
                    break
                k = chunk.find(b"\n")
                if k >= 0:
                    pos = pos + extra + k + 1
                    break
                extra += len(chunk)
            if pos < size:
                bounds.append(pos)
            pos += blocksize
    bounds.append(size)
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]


def line_starts(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths (without newline) of every physical line of a block."""
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(buf)]])
    if starts[-1] >= len(buf):  # trailing newline: no last line
        starts, ends = starts[:-1], ends[:-1]
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def parse_numbers(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column read as numbers: ``(values, bad)``, both of shape N.

    ``values`` is float64 with NaN for a missing cell (empty after trimming blanks, or null), for the
    literals ``nan`` / ``inf`` / ``infinity`` (any case, signed or not) and for decimals that overflow
    to ±inf; ``bad`` marks the cells that are not numbers (:data:`_NUM_RE`; their value is NaN too).
    A cell's result depends on that cell only, never on the rest of its partition: a column without
    empty cells is cast in one go (fast path) and only its non-finite results are checked against the
    pattern; other columns are matched against the pattern first.
    """
    col = pc.utf8_trim_whitespace(col.cast(pa.string()).fill_null(""))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    miss = pc.equal(col, "").to_numpy(zero_copy_only=False)
    badnum = np.zeros(len(col), dtype=bool)
    arr: np.ndarray | None = None
    if not miss.any():
        try:
            arr = pc.cast(col, pa.float64(), safe=True).to_numpy(zero_copy_only=False).astype(np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = None
        if arr is not None:
            odd = np.flatnonzero(~np.isfinite(arr))
            if len(odd):  # nan / inf literals, overflow, or a form the pattern refuses (``nan(1)``)
                ok = pc.match_substring_regex(col.take(pa.array(odd)), _NUM_RE).to_numpy(zero_copy_only=False)
                badnum[odd[~ok]] = True
    if arr is None:
        valid = pc.match_substring_regex(col, _NUM_RE).to_numpy(zero_copy_only=False)
        badnum = ~valid & ~miss
        clean = pc.if_else(pa.array(valid), col, pa.scalar(None, pa.string()))
        arr = np.asarray(pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if badnum.any() or not np.isfinite(arr).all():
        arr = np.where(np.isfinite(arr) & ~badnum, arr, np.nan)
    return arr, badnum


def parse_block(data: bytes, columns: list[str], sep: str, label: str | None, categorical: list[str],
                continuous: list[str]) -> dict[str, Any]:
    """Parse one block.

    Returns ``{"table": pa.Table of good rows, "offsets": int64 byte offset of each good row's line
    in the block, "lines": int64 index of each good row's line in the block, "n_lines": physical
    lines, "bad": [(line_index_in_block, reason, detail), ...]}`` (one entry per bad line: the first of
    its reasons in the order column count, label, number).
    In the table the label is int8, continuous columns float64 (NaN = missing) and every other
    column a dictionary-encoded string (missing = ``""``). ``label=None`` (scoring) reads no label:
    a label column, if the file has one, is then ignored like any column not asked for.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, lengths = line_starts(buf)
    n_lines = len(starts)
    # a line is empty if it has no bytes, or only "\r"
    last = np.where(lengths > 0, buf[np.minimum(starts + np.maximum(lengths - 1, 0), max(len(buf) - 1, 0))], 0) \
        if n_lines else np.zeros(0, np.uint8)
    empty = (lengths == 0) | ((lengths == 1) & (last == 13))
    nonempty = np.flatnonzero(~empty)
    bad: list[tuple[int, str, str]] = [(int(i), BAD_COLUMN_COUNT, f"empty line (expected {len(columns)} columns)")
                                       for i in np.flatnonzero(empty)]
    invalid: list[tuple[int, int]] = []

    def handler(row: Any) -> str:
        invalid.append((row.number, row.actual_columns))
        return "skip"

    types = {c: DICT_STR for c in columns}
    lead = [label] if label is not None else []
    for c in lead:
        types[c] = pa.string()
    for c in continuous:
        types[c] = pa.string()
    if len(nonempty):
        table = pcsv.read_csv(
            pa.py_buffer(data),
            read_options=pcsv.ReadOptions(column_names=columns, use_threads=False, block_size=max(len(data) + 1, 1 << 20)),
            parse_options=pcsv.ParseOptions(delimiter=sep, quote_char=False, ignore_empty_lines=True,
                                            newlines_in_values=False, invalid_row_handler=handler),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                quoted_strings_can_be_null=False,
                                                include_columns=lead + [c for c in columns if c in categorical or c in continuous]),
        )
    else:
        table = pa.table({c: pa.array([], types[c]) for c in columns})
    good_lines = nonempty
    if invalid:
        rownums = np.array([n for n, _ in invalid], dtype=np.int64) - 1  # 1-based among non-empty lines
        phys = nonempty[rownums]
        for (n, got), ln in zip(invalid, phys):
            bad.append((int(ln), BAD_COLUMN_COUNT, f"expected {len(columns)} columns, got {got}"))
        keep = np.ones(len(nonempty), dtype=bool)
        keep[rownums] = False
        good_lines = nonempty[keep]
    if table.num_rows != len(good_lines):  # should never happen
        raise PreprocessError(f"internal: parsed {table.num_rows} rows for {len(good_lines)} lines", reason="internal")

    ok = np.ones(table.num_rows, dtype=bool)
    out: dict[str, Any] = {}
    if label is not None:
        # label: exactly "0" or "1" (surrounding blanks / "\r" tolerated)
        lab = pc.utf8_trim_whitespace(table[label])
        is0 = pc.equal(lab, "0").to_numpy(zero_copy_only=False)
        is1 = pc.equal(lab, "1").to_numpy(zero_copy_only=False)
        badlab = ~(is0 | is1)
        if badlab.any():
            vals = table[label].to_pylist()
            for r in np.flatnonzero(badlab):
                bad.append((int(good_lines[r]), BAD_LABEL, f"label {label!r} must be 0 or 1, got {vals[r]!r}"))
            ok &= ~badlab
        out[label] = pa.array(is1.astype(np.int8))
    for c in continuous:
        arr, badnum = parse_numbers(table[c])
        if badnum.any():
            vals = table[c].to_pylist()
            for r in np.flatnonzero(badnum):
                bad.append((int(good_lines[r]), BAD_NUMBER, f"column {c!r}: not a number: {vals[r]!r}"))
            ok &= ~badnum
        out[c] = pa.array(arr)
    for c in columns:
        if c != label and c not in continuous and c in categorical:
            col = table[c]
            out[c] = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    typed = pa.table(out)
    if not ok.all():
        typed = typed.filter(pa.array(ok))
        good_lines = good_lines[ok]
    bad.sort()
    if len(bad) > 1:  # one entry per rejected row (its first reason), however many of its cells are bad
        bad = [b for i, b in enumerate(bad) if i == 0 or b[0] != bad[i - 1][0]]
    return {"table": typed, "offsets": starts[good_lines], "lines": good_lines.astype(np.int64), "n_lines": n_lines,
            "bad": bad}


def read_range(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


def file_signature(path: str | Path) -> dict[str, Any]:
    st = os.stat(path)
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
