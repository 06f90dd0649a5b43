"""The one encoder of raw rows, shared by the preprocessing jobs and scoring.

A raw row becomes model input in three steps, each a function of whole Arrow / numpy columns
(no Python per row):

1. :func:`field_columns` — the parsed raw table (:func:`preprocess.io.parse_block`: continuous
   columns float64 with NaN = missing, every other column a string or dictionary array with ``""``
   = missing) → one column per field: continuous values as read, bucketized continuous columns as
   their ``floor(ln(x)²)`` tokens, derived fields (Avazu's hour of day / weekday) from their source;
2. :func:`encode_field_columns` — categorical ids through the OOV vocabulary (a rare or unseen
   value → ``OOV_ID``, never an error), ``list<int32>`` token ids of multivalent fields (at most
   ``max_len``), continuous fields min-max scaled with the train range (outside it: clipped to
   [0, 1]; missing → 0.0);
3. :func:`pair_columns` — the cross ids of the pairs asked for, and only those.

:mod:`preprocess.jobs` runs these per partition while the vocabularies are being fitted (step 1 in
ingest, 2 in encode-fields, 3 in encode-pairs); :class:`RawEncoder` runs them back to back with the
vocabularies saved by the stage (``feature_map.json`` + ``vocab/``), for scoring new raw rows:
text blocks of raw files (:meth:`RawEncoder.parse_text`, the preprocessing parser itself) or pandas
/ Arrow frames of raw columns (:meth:`RawEncoder.parse_frame`, which reads each column into the
same typed form). Columns are found by name: extra columns are ignored, order does not matter, and
a label column is not needed; a missing required column, or a column whose type cannot hold the
field (e.g. fractional numbers in a categorical column), is a :class:`PreprocessError` naming it.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from preprocess.cross_vocab import CrossVocab
from preprocess.errors import BAD_NUMBER, PreprocessError
from preprocess.feature_map import FEATURE_MAP_FILE, FeatureMap, pair_column
from preprocess.io import parse_block, parse_numbers, read_header
from preprocess.minmax import MinMaxScaler, bucket_tokens
from preprocess.multivalent import encode_tokens
from preprocess.oov import OOVThresholder
from preprocess.schema import DatasetSchema

log = logging.getLogger(__name__)

#: The vocabularies written by the preprocessing stage, relative to its output folder.
VOCAB_DIR = "vocab"
FIELDS_FILE = "fields.json"
MINMAX_FILE = "minmax.json"
CROSS_STEM = "cross"  # cross.json + cross.npz

#: ``(name, kind, source, bucketized)`` of a field, as in :attr:`preprocess.schema.ResolvedSchema.fields`.
FieldDef = tuple[str, str, str, bool]


# ---- the three steps ------------------------------------------------------------------------------
def derive(fn: str, col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A derived field's tokens from its ``YYMMDDHH`` source column (``fn``: hour_of_day | weekday)."""
    s = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
    s = pc.utf8_trim_whitespace(s)
    if fn == "hour_of_day":
        r = pc.utf8_slice_codeunits(s, 6, 8)
    else:  # weekday of YYMMDD..
        d = pc.strptime(pc.utf8_slice_codeunits(s, 0, 6), format="%y%m%d", unit="s", error_is_null=True)
        r = pc.day_of_week(d).cast(pa.string())
    return r.fill_null("")


def field_columns(t: pa.Table, fields: Sequence[FieldDef], derived: Mapping[str, str]) -> dict[str, Any]:
    """Step 1: one column per field (N rows each) from the parsed raw table ``t``."""
    cols: dict[str, Any] = {}
    for name, kind, source, bucketized in fields:
        if kind == "continuous":
            cols[name] = t[source]
        elif bucketized:
            cols[name] = bucket_tokens(t[source].to_numpy()).dictionary_encode()
        elif name in derived:
            cols[name] = derive(derived[name], t[source]).dictionary_encode()
        else:
            cols[name] = t[source]
    return cols


def encode_field_columns(t: Mapping[str, Any], fields: Sequence[FieldDef], multivalent: Mapping[str, str],
                         max_len: Mapping[str, int], oov: OOVThresholder,
                         mm: MinMaxScaler) -> tuple[dict[str, pa.Array], dict[str, np.ndarray]]:
    """Step 2: encoded field columns (int32 ids, ``list<int32>`` ids, float32 scaled values; N rows)
    and the int32 ids of the univalent categorical fields (the inputs of :func:`pair_columns`)."""
    cols: dict[str, pa.Array] = {}
    ids: dict[str, np.ndarray] = {}
    for name, kind, _, _ in fields:
        if name in multivalent:
            cols[name] = encode_tokens(t[name], multivalent[name], functools.partial(oov.transform_column, name),
                                       max_len[name])
        elif kind == "categorical":
            ids[name] = oov.transform_column(name, t[name])
            cols[name] = pa.array(ids[name])
        else:
            cols[name] = pa.array(mm.transform_column(name, t[name].to_numpy()))
    return cols, ids


def pair_columns(ids: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                 cv: CrossVocab | None) -> dict[str, np.ndarray]:
    """Step 3: int32 cross ids (N) of each pair ``(a, b)``, named ``"a|b"``."""
    out: dict[str, np.ndarray] = {}
    for a, b in pairs:
        name = pair_column(a, b)
        assert cv is not None, "pairs need a cross vocabulary"
        out[name] = cv.transform_pair(name, ids[a], ids[b])
    return out


# ---- frames of raw columns → the parsed form -------------------------------------------------------
def _to_arrow(values: Any) -> pa.Array | pa.ChunkedArray | None:
    """``values`` (pandas Series, numpy array, Arrow array, list) as Arrow; None for mixed Python objects."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None


def _cell(values: Any, i: int) -> Any:
    """Cell ``i`` of a column (for messages)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values[i].as_py()
    return values.iloc[i] if hasattr(values, "iloc") else values[i]


def _wrong_type(name: str, expected: str, got: Any) -> PreprocessError:
    return PreprocessError(f"column {name!r}: expected {expected}, got {got}", reason="schema")


def _integral_strings(x: np.ndarray, name: str) -> pa.Array:
    """Floats holding integers (pandas' integers with missing values) → their decimal strings."""
    ok = ~np.isnan(x)
    frac = ok & ((~np.isfinite(x)) | (np.floor(np.where(ok, x, 0.0)) != np.where(ok, x, 0.0)))
    if frac.any():
        raise _wrong_type(name, "categorical values (strings or integers)", f"the number {float(x[frac][0])!r}")
    return pa.array(np.where(ok, x, 0).astype(np.int64), mask=~ok).cast(pa.string())


def _cell_string(v: Any, name: str, sep: str | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        raise _wrong_type(name, "categorical values (strings or integers)", f"the boolean {v!r}")
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _integral_strings(np.array([v], dtype=np.float64), name)[0].as_py()
    if sep is not None and isinstance(v, (list, tuple, np.ndarray)):
        return sep.join(_cell_string(x, name, None) for x in v)
    raise _wrong_type(name, "categorical values (strings or integers)", f"{type(v).__name__} {v!r}")


def string_column(values: Any, name: str, sep: str | None = None) -> pa.Array:
    """A categorical raw column as strings (N; missing → ``""``).

    Strings, integers (their decimal form, as in a text file), floats that hold integers (pandas'
    integers with missing values) and, for a multivalent column (``sep``), lists of tokens are
    accepted; anything else (fractional numbers, booleans, dates) is an error naming the column.
    """
    arr = _to_arrow(values)
    if arr is None:
        return pa.array([_cell_string(v, name, sep) for v in values], type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.cast(t.value_type), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        s = arr.cast(pa.string())
    elif pa.types.is_integer(t):
        s = arr.cast(pa.string())
    elif pa.types.is_floating(t):
        s = _integral_strings(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), name)
    elif sep is not None and (pa.types.is_list(t) or pa.types.is_large_list(t)):
        s = pc.binary_join(arr.cast(pa.list_(pa.string())), sep)
    elif pa.types.is_null(t):
        s = pa.nulls(len(arr), pa.string())
    else:
        raise _wrong_type(name, "categorical values (strings or integers)", t)
    return s.fill_null("")


def number_column(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A continuous raw column as float64 (N; NaN = missing or ±inf) and the mask of non-numbers.

    Numbers are taken as they are; strings are read like the text files (blanks trimmed, ``""``
    missing); booleans, dates and the like are an error naming the column.
    """
    arr = _to_arrow(values)
    if arr is None:
        arr = pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values],
                       type=pa.string())
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.cast(t.value_type), t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        x = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        return np.where(np.isinf(x), np.nan, x), np.zeros(len(x), dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return parse_numbers(arr)
    raise _wrong_type(name, "numbers (a continuous column)", t)


# ---- the saved state ---------------------------------------------------------------------------------
def _field_defs(fmap: FeatureMap) -> list[FieldDef]:
    return [(f.name, f.kind, f.source, f.bucketized) for f in fmap.fields]


def _source_kinds(fmap: FeatureMap) -> dict[str, str]:
    """Raw column → ``"categorical"`` | ``"multivalent"`` | ``"continuous"`` (bucketized ones are numbers)."""
    out: dict[str, str] = {}
    for f in fmap.fields:
        kind = "multivalent" if f.multivalent else "continuous" if (f.kind == "continuous" or f.bucketized) \
            else "categorical"
        out.setdefault(f.source, kind)
    return out


def export_encoder(data_dir: str | Path, dest: str | Path, pairs: Sequence[str]) -> Path:
    """Copy the encoder state of a preprocessed folder into ``dest`` (created), for the pairs ``pairs`` only.

    Writes ``feature_map.json`` and, when ``data_dir`` has them (a folder made by ``optinter
    preprocess``), ``vocab/fields.json``, ``vocab/minmax.json`` and the cross vocabulary of
    ``pairs`` (``vocab/cross.{json,npz}``, left out when no pair is needed).
    """
    src, dest = Path(data_dir), Path(dest)
    (dest / VOCAB_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / FEATURE_MAP_FILE, dest / FEATURE_MAP_FILE)
    vocab = src / VOCAB_DIR
    if not (vocab / FIELDS_FILE).exists():
        log.info("%s has no vocabularies (%s/): the encoder can score encoded parquet only", src, VOCAB_DIR)
        (dest / VOCAB_DIR).rmdir()
        return dest
    for name in (FIELDS_FILE, MINMAX_FILE):
        shutil.copyfile(vocab / name, dest / VOCAB_DIR / name)
    if pairs:
        CrossVocab.load(vocab / CROSS_STEM, pairs=pairs).save(dest / VOCAB_DIR / CROSS_STEM)
    return dest


def has_vocabularies(folder: str | Path) -> bool:
    return (Path(folder) / VOCAB_DIR / FIELDS_FILE).exists()


@dataclass
class RawEncoder:
    """Raw rows → encoded columns with the saved vocabularies of one preprocessing run.

    ``pairs`` are the pairs whose ids :meth:`encode` builds (e.g. a re-trained OptInter's memorized
    pairs); ``columns`` maps every raw column the fields read to its kind (``categorical``,
    ``multivalent`` or ``continuous``).
    """

    feature_map: FeatureMap
    schema: DatasetSchema
    oov: OOVThresholder
    minmax: MinMaxScaler
    cross: CrossVocab | None
    pairs: list[tuple[str, str]]
    fields: list[FieldDef]
    derived: dict[str, str]
    multivalent: dict[str, str]
    max_len: dict[str, int]
    columns: dict[str, str]

    @classmethod
    def load(cls, folder: str | Path, pairs: Sequence[str] | None = None) -> "RawEncoder":
        """The encoder of ``folder`` (``feature_map.json`` + ``vocab/``); ``pairs``: names (default all)."""
        folder = Path(folder)
        fmap = FeatureMap.load(folder)
        if not has_vocabularies(folder):
            raise ValueError(f"{folder}: no vocabularies ({VOCAB_DIR}/{FIELDS_FILE}); raw rows cannot be encoded "
                             f"here (the data was not made by `optinter preprocess`): score encoded parquet instead")
        by_name = {p.name: p for p in fmap.pairs}
        names = [p.name for p in fmap.pairs] if pairs is None else list(pairs)
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"{folder}: pairs {unknown[:5]} are not in the feature map")
        vocab = folder / VOCAB_DIR
        schema = DatasetSchema(**fmap.schema)
        multi = {}
        for f in fmap.multivalent:
            multi[f.name] = next(sep for pat, sep in schema.multivalent.items() if fnmatch.fnmatchcase(f.source, pat))
        return cls(
            feature_map=fmap, schema=schema, oov=OOVThresholder.load(vocab / FIELDS_FILE),
            minmax=MinMaxScaler.load(vocab / MINMAX_FILE),
            cross=CrossVocab.load(vocab / CROSS_STEM, pairs=names) if names else None,
            pairs=[tuple(by_name[n].fields) for n in names],  # type: ignore[misc]
            fields=_field_defs(fmap), derived={d.name: d.fn for d in schema.derived}, multivalent=multi,
            max_len={f.name: int(f.max_len) for f in fmap.multivalent}, columns=_source_kinds(fmap))

    # ---- columns --------------------------------------------------------------------------------------
    def _strings(self, extra: Sequence[str] = ()) -> list[str]:
        return [c for c, k in self.columns.items() if k != "continuous"] + [c for c in extra if c not in self.columns]

    def _numbers(self) -> list[str]:
        return [c for c, k in self.columns.items() if k == "continuous"]

    def check_columns(self, available: Sequence[str], where: str, extra: Sequence[str] = ()) -> None:
        """A clear error naming the first required (or ``extra``, e.g. id) column missing from ``available``."""
        have = set(available)
        for c in list(self.columns) + list(extra):
            if c not in have:
                what = "requested id column" if c in extra and c not in self.columns else \
                    f"required {self.columns[c]} column"
                raise PreprocessError(f"{where}: no column {c!r} ({what}; the model reads "
                                      f"{', '.join(self.columns)})", reason="schema")

    def file_columns(self, path: str | Path, shown: str | None = None) -> tuple[list[str], int]:
        """Column names of a raw text file and the byte length of its header (0 without one).

        A file without header takes the schema's columns, without the label when its first line
        has one field fewer (unlabelled logs, e.g. Criteo's test file).
        """
        shown = shown or str(path)
        s = self.schema
        if s.header:
            cols, nbytes = read_header(path, s.sep, shown=shown)
        else:
            cols, nbytes = list(s.columns or []), 0
            with open(path, "rb") as fh:
                first = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
            if first and first.count(s.sep) + 1 == len(cols) - 1 and s.label in cols:
                cols = [c for c in cols if c != s.label]
        self.check_columns(cols, shown)
        return cols, nbytes

    # ---- parsing ------------------------------------------------------------------------------------------
    def parse_text(self, data: bytes, columns: list[str], extra: Sequence[str] = ()) -> dict[str, Any]:
        """:func:`preprocess.io.parse_block` of a text block of raw rows (no label read); ``extra``:
        more columns kept as strings (e.g. ids to pass through)."""
        return parse_block(data, columns, self.schema.sep, None, self._strings(extra), self._numbers())

    def parse_frame(self, frame: Any, extra: Sequence[str] = (), where: str = "input") -> dict[str, Any]:
        """A pandas DataFrame / Arrow table of raw columns in the form of :meth:`parse_text`.

        Returns ``{"table", "lines" (positions of the good rows), "n_lines" (rows), "bad":
        [(row, reason, detail), ...]}``; a continuous cell that is not a number makes its row bad.
        """
        names = list(frame.column_names if isinstance(frame, (pa.Table, pa.RecordBatch)) else frame.columns)
        self.check_columns([str(c) for c in names], where, extra)
        n = frame.num_rows if isinstance(frame, (pa.Table, pa.RecordBatch)) else len(frame)
        cols: dict[str, Any] = {}
        bad: list[tuple[int, str, str]] = []
        ok = np.ones(n, dtype=bool)
        for c in self._numbers():
            x, nan = number_column(frame[c], c)
            if nan.any():
                for r in np.flatnonzero(nan):
                    bad.append((int(r), BAD_NUMBER, f"column {c!r}: not a number: {_cell(frame[c], int(r))!r}"))
                ok &= ~nan
            cols[c] = pa.array(x)
        for c in self._strings(extra):
            cols[c] = string_column(frame[c], c, self.multivalent.get(c) if self.columns.get(c) == "multivalent"
                                    else None)
        table = pa.table(cols)
        lines = np.arange(n, dtype=np.int64)
        if not ok.all():
            table, lines = table.filter(pa.array(ok)), lines[ok]
        bad.sort()
        return {"table": table, "lines": lines, "n_lines": n, "bad": bad}

    # ---- encoding -----------------------------------------------------------------------------------------
    def encode(self, table: pa.Table) -> pa.Table:
        """Encoded columns of parsed raw rows (as the parquet of the stage, without the label):
        one per field, then one per pair of :attr:`pairs`."""
        t = field_columns(table, self.fields, self.derived)
        cols, ids = encode_field_columns(t, self.fields, self.multivalent, self.max_len, self.oov, self.minmax)
        for name, arr in pair_columns(ids, self.pairs, self.cross).items():
            cols[name] = pa.array(arr)
        return pa.table(cols)

    def example(self, rows: int = 2) -> dict[str, list[Any]]:
        """``rows`` raw rows built from the vocabularies (frequent values; mid-range numbers), as
        columns: an input example for the MLflow model."""
        kept = {f.source: self.oov.vocab_.get(f.name, []) for f in self.feature_map.fields
                if f.kind == "categorical" and not f.bucketized and f.name not in self.derived}
        mid = {f.source: (float(f.min or 0.0) + float(f.max or 0.0)) / 2 for f in self.feature_map.continuous}
        out: dict[str, list[Any]] = {}
        for c, kind in self.columns.items():
            if kind == "continuous":
                out[c] = [round(mid.get(c, 1.0), 6)] * rows
            elif c in kept and kept[c]:
                vals = kept[c]
                out[c] = [vals[i % len(vals)] for i in range(rows)]
            elif c in kept:
                out[c] = [""] * rows
            else:  # a derived field's source: a YYMMDDHH timestamp
                out[c] = ["26010100"] * rows
        return out
