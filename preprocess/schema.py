"""Dataset schemas: how to read a raw CTR log and which column becomes which kind of field.

A :class:`DatasetSchema` names the file format (separator, header or explicit column names), the
label column, the categorical / continuous columns and the columns to drop (each list accepts
``fnmatch`` glob patterns such as ``c*``, resolved against the header), derived columns, the
default OOV and cross thresholds, how continuous columns become fields (``continuous_mode``) and
which fields take part in crosses (``cross_fields``; ``None`` = every categorical field).

Built-in schemas: :data:`CRITEO`, :data:`AVAZU`, :data:`IPINYOU`, :data:`SYNTHETIC`; a user's own
dataset is described by a small YAML file with the same keys (:func:`load_schema_yaml`).

``continuous_mode``:

* ``"minmax"`` — the column is one continuous field, min-max scaled to [0, 1] on train
  (the paper's Criteo treatment: the scaled value multiplies the field's embedding);
* ``"bucketize"`` — the column becomes a categorical field with the common Criteo rule
  ``floor(ln(x)^2)`` for ``x > 2`` and ``int(x)`` otherwise (negatives keep their own value,
  missing is its own token), then it is OOV-thresholded and can take part in crosses;
* ``"both"`` — a categorical bucket field named like the column plus a continuous min-max field
  named ``<column>_v``.

Multivalent (list-valued) categorical columns, e.g. iPinYou's ``usertag`` (``"10063,10110"`` in a
tab-separated file), are declared with ``multivalent: {column or glob: token separator}``; the
separator must differ from the file separator ``sep``; such a column is categorical (it need not be
listed under ``categorical``) and may not also be continuous, dropped or the label.
``max_len`` (one int for every multivalent field, or ``{column or glob: int}``) bounds the ids
stored per row; the default is the largest number of distinct tokens of a train row, capped at
:data:`MAX_LEN_CAP`; longer rows keep their first tokens. Multivalent fields never take part in
crosses: the default ``cross_fields`` leaves them out, and naming one there is an error.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preprocess.errors import PreprocessError

CONTINUOUS_MODES = ("minmax", "bucketize", "both")
DERIVED_FUNCS = ("hour_of_day", "weekday")
CONTINUOUS_SUFFIX = "_v"
#: Default ``max_len`` of a multivalent field is min(largest distinct-token count of a train row, this).
MAX_LEN_CAP = 64
_GLOB = "*?["


@dataclass
class DerivedColumn:
    """A categorical field computed from a raw column (``fn`` in :data:`DERIVED_FUNCS`).

    ``hour_of_day`` / ``weekday`` read a ``YYMMDDHH`` timestamp (Avazu's ``hour``).
    """

    name: str
    source: str
    fn: str


@dataclass
class DatasetSchema:
    """How to read one dataset's raw files and which column becomes which field."""

    name: str
    label: str
    sep: str = ","
    header: bool = True
    columns: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    derived: list[DerivedColumn] = field(default_factory=list)
    oov_threshold: int = 1
    cross_threshold: int = 1
    continuous_mode: str = "minmax"
    cross_fields: list[str] | None = None
    multivalent: dict[str, str] = field(default_factory=dict)
    max_len: int | dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.derived = [d if isinstance(d, DerivedColumn) else DerivedColumn(**d) for d in self.derived]
        if isinstance(self.multivalent, dict):
            self.multivalent = dict(self.multivalent)
        self.validate()

    def validate(self, where: str | None = None) -> None:
        where = where or f"schema {self.name!r}"

        def bad(key: str, msg: str) -> PreprocessError:
            return PreprocessError(f"{where}: key {key!r}: {msg}", reason="schema")

        if not self.label:
            raise bad("label", "a label column is required")
        if not isinstance(self.sep, str) or len(self.sep) != 1:
            raise bad("sep", f"must be one character, got {self.sep!r}")
        if not self.header and not self.columns:
            raise bad("columns", "a file without header needs the list of column names")
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise bad("columns", "column names must be unique")
        if self.continuous_mode not in CONTINUOUS_MODES:
            raise bad("continuous_mode", f"must be one of {CONTINUOUS_MODES}, got {self.continuous_mode!r}")
        for key in ("oov_threshold", "cross_threshold"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, f"must be an integer >= 1, got {v!r}")
        for d in self.derived:
            if d.fn not in DERIVED_FUNCS:
                raise bad("derived", f"{d.name!r}: fn must be one of {DERIVED_FUNCS}, got {d.fn!r}")
        if not isinstance(self.multivalent, dict):
            raise bad("multivalent",
                      f"must be a mapping of column (or glob) to token separator, got {self.multivalent!r}")
        for col, tok in self.multivalent.items():
            if not isinstance(col, str) or not col:
                raise bad("multivalent", f"column names must be non-empty strings, got {col!r}")
            if not isinstance(tok, str) or not tok or "\n" in tok or "\r" in tok:
                raise bad("multivalent", f"{col!r}: the token separator must be a non-empty string, got {tok!r}")
            if self.sep in tok:
                raise bad("multivalent", f"{col!r}: the token separator {tok!r} must differ from the file separator "
                                         f"(sep = {self.sep!r})")

        def bad_len(v: Any) -> bool:
            return not isinstance(v, int) or isinstance(v, bool) or v < 1

        if isinstance(self.max_len, dict):
            for col, v in self.max_len.items():
                if bad_len(v):
                    raise bad("max_len", f"{col!r}: must be an integer >= 1, got {v!r}")
        elif self.max_len is not None and bad_len(self.max_len):
            raise bad("max_len", f"must be an integer >= 1 or a mapping of column to integer, got {self.max_len!r}")
        if self.max_len is not None and not self.multivalent:
            raise bad("max_len", "is only for multivalent columns, and the schema declares none ('multivalent')")
        if self.columns is not None:
            self.resolve(self.columns, where=where)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.multivalent:  # schemas without multivalent columns keep their former form (and hash)
            del d["multivalent"], d["max_len"]
        return d

    # ---- resolution against the real header -------------------------------------------------------
    def resolve(self, header: list[str], where: str | None = None) -> "ResolvedSchema":
        """Match the schema's patterns against the file's column names.

        Every column must be the label, dropped, continuous, categorical or a derived field's
        source; a plain name (no glob characters) that matches no column is an error.
        """
        where = where or f"schema {self.name!r}"
        cols = list(header)

        def match(key: str, patterns: list[str]) -> list[str]:
            out: list[str] = []
            for p in patterns:
                hits = [c for c in cols if fnmatch.fnmatchcase(c, p)]
                if not hits and not any(ch in p for ch in _GLOB):
                    raise PreprocessError(f"{where}: key {key!r}: unknown column {p!r} (columns: {cols})",
                                          reason="schema")
                out += [c for c in hits if c not in out]
            return out

        if self.label not in cols:
            raise PreprocessError(f"{where}: key 'label': column {self.label!r} not in columns {cols}",
                                  reason="schema")
        drop = set(match("drop", self.drop))
        sources = set()
        for d in self.derived:
            if d.source not in cols:
                raise PreprocessError(f"{where}: key 'derived': {d.name!r} reads unknown column {d.source!r}",
                                      reason="schema")
            sources.add(d.source)
        taken = {self.label} | drop
        cont = [c for c in match("continuous", self.continuous) if c not in taken]
        taken |= set(cont)
        multi = self._resolve_multivalent(match, drop, set(cont), sources, where)
        multi = {c: multi[c] for c in cols if c in multi}
        cat = [c for c in match("categorical", self.categorical)
               if c not in taken and (c not in sources or c in self.categorical)]
        cat = [c for c in cols if c in cat or c in multi]
        taken |= set(cat)
        left = [c for c in cols if c not in taken and c not in sources]
        if left:
            raise PreprocessError(
                f"{where}: columns {left} are neither label, categorical, continuous, dropped nor a derived "
                f"source: list them under 'categorical', 'continuous' or 'drop'", reason="schema")
        mode = self.continuous_mode
        fields: list[tuple[str, str, str, bool]] = []  # (name, kind, source, bucketized)
        for c in cols:
            if c in cat:
                fields.append((c, "categorical", c, False))
            elif c in cont:
                if mode == "minmax":
                    fields.append((c, "continuous", c, False))
                else:
                    fields.append((c, "categorical", c, True))
        for d in self.derived:
            fields.append((d.name, "categorical", d.source, False))
        if mode == "both":
            fields += [(c + CONTINUOUS_SUFFIX, "continuous", c, False) for c in cols if c in cont]
        names = [f[0] for f in fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise PreprocessError(f"{where}: field names {sorted(dup)} are not unique", reason="schema")
        cat_fields = [f[0] for f in fields if f[1] == "categorical" and f[0] not in multi]
        if self.cross_fields is None:
            cross = list(cat_fields)
        else:
            cross = []
            for p in self.cross_fields:
                if p in multi:
                    raise PreprocessError(f"{where}: key 'cross_fields': {p!r} is a multivalent field; multivalent "
                                          f"fields take no part in pairs (a cross of two token sets is not one "
                                          f"value)", reason="schema")
                hits = [n for n in cat_fields if fnmatch.fnmatchcase(n, p)]
                if not hits:
                    raise PreprocessError(f"{where}: key 'cross_fields': {p!r} matches no categorical field "
                                          f"(categorical fields: {cat_fields})", reason="schema")
                cross += [h for h in hits if h not in cross]
            cross = [n for n in cat_fields if n in cross]  # field order
        return ResolvedSchema(schema=self, columns=cols, label=self.label, categorical=cat, continuous=cont,
                              drop=sorted(drop), fields=fields, cross_fields=cross, multivalent=multi,
                              max_len=self._resolve_max_len(multi, where))

    def _resolve_multivalent(self, match: Any, drop: set[str], cont: set[str], sources: set[str],
                             where: str) -> dict[str, str]:
        """``{column: token separator}`` of the multivalent columns (checked against the other keys)."""
        out: dict[str, str] = {}
        for pattern, tok in self.multivalent.items():
            for c in match("multivalent", [pattern]):
                for what, group in (("the label", {self.label}), ("dropped ('drop')", drop),
                                    ("continuous ('continuous')", cont), ("a derived field's source", sources)):
                    if c in group:
                        raise PreprocessError(f"{where}: key 'multivalent': column {c!r} is {what}; a multivalent "
                                              f"column is categorical", reason="schema")
                out.setdefault(c, tok)
        return out

    def _resolve_max_len(self, multi: dict[str, str], where: str) -> dict[str, int | None]:
        """Configured ``max_len`` per multivalent column (None = from train, capped at MAX_LEN_CAP)."""
        if not isinstance(self.max_len, dict):
            return {c: self.max_len for c in multi}
        out: dict[str, int | None] = {c: None for c in multi}
        for pattern, v in self.max_len.items():
            hits = [c for c in multi if fnmatch.fnmatchcase(c, pattern)]
            if not hits and not any(ch in pattern for ch in _GLOB):
                raise PreprocessError(f"{where}: key 'max_len': {pattern!r} is not a multivalent column "
                                      f"(multivalent: {list(multi)})", reason="schema")
            for c in hits:
                if out[c] is None:
                    out[c] = v
        return out


@dataclass
class ResolvedSchema:
    """A schema matched against real column names.

    ``fields`` lists ``(name, kind, source, bucketized)`` in model order (a multivalent field is
    categorical there); ``multivalent`` maps each multivalent field to its token separator and
    ``max_len`` to its configured length (None = from train).
    """

    schema: DatasetSchema
    columns: list[str]
    label: str
    categorical: list[str]
    continuous: list[str]
    drop: list[str]
    fields: list[tuple[str, str, str, bool]]
    cross_fields: list[str]
    multivalent: dict[str, str] = field(default_factory=dict)
    max_len: dict[str, int | None] = field(default_factory=dict)

    @property
    def cat_fields(self) -> list[str]:
        """Every categorical field, univalent and multivalent (each gets an OOV vocabulary)."""
        return [f[0] for f in self.fields if f[1] == "categorical"]

    @property
    def cont_fields(self) -> list[str]:
        return [f[0] for f in self.fields if f[1] == "continuous"]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        c = self.cross_fields
        return [(c[i], c[j]) for i in range(len(c)) for j in range(i + 1, len(c))]

    def source_of(self, name: str) -> str:
        for f in self.fields:
            if f[0] == name:
                return f[2]
        raise KeyError(name)

    def is_bucketized(self, name: str) -> bool:
        return any(f[0] == name and f[3] for f in self.fields)


CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]

CRITEO = DatasetSchema(
    name="criteo", label="label", sep="\t", header=False, columns=CRITEO_COLUMNS,
    categorical=["C*"], continuous=["I*"], oov_threshold=20, cross_threshold=20,
    continuous_mode="bucketize", cross_fields=[f"C{i}" for i in range(1, 27)],
)

AVAZU = DatasetSchema(
    name="avazu", label="click", sep=",", header=True, categorical=["*"], drop=["id"],
    derived=[DerivedColumn("hour_of_day", "hour", "hour_of_day"), DerivedColumn("weekday", "hour", "weekday")],
    oov_threshold=5, cross_threshold=5,
)

# make-ipinyou-data's train.log.txt / test.log.txt: tab-separated with a header.  The 16
# categorical fields used by PNN / OptInter, plus ``usertag`` (comma-separated user tag ids) as a
# multivalent field (mean-pooled; it takes no part in pairs, so the 120 pairs are the paper's; the
# paper removes usertag: a YAML copy of this schema without ``multivalent`` and with usertag under
# ``drop`` matches that); ids, prices and free-text urls are dropped.
IPINYOU_COLUMNS = ["click", "weekday", "hour", "bidid", "timestamp", "logtype", "ipinyouid", "useragent", "IP",
                   "region", "city", "adexchange", "domain", "url", "urlid", "slotid", "slotwidth", "slotheight",
                   "slotvisibility", "slotformat", "slotprice", "creative", "bidprice", "payprice", "keypage",
                   "advertiser", "usertag"]
IPINYOU = DatasetSchema(
    name="ipinyou", label="click", sep="\t", header=True,
    categorical=["weekday", "hour", "useragent", "IP", "region", "city", "adexchange", "domain", "slotid",
                 "slotwidth", "slotheight", "slotvisibility", "slotformat", "slotprice", "creative", "advertiser"],
    drop=["bidid", "timestamp", "logtype", "ipinyouid", "url", "urlid", "bidprice", "payprice", "keypage",
          "nclick*", "nconversation*"],
    multivalent={"usertag": ","},
    oov_threshold=5, cross_threshold=5,
)

# The lead's generator (preprocess/synthetic.py): header ``label,p_true,c0..,n0..``.  Small
# thresholds (2): synthetic values are planted, so rare values carry signal worth keeping.
SYNTHETIC = DatasetSchema(
    name="synthetic", label="label", sep=",", header=True, categorical=["c*"], continuous=["n*"],
    drop=["p_true"], oov_threshold=2, cross_threshold=2, continuous_mode="minmax",
)

BUILTIN: dict[str, DatasetSchema] = {s.name: s for s in (CRITEO, AVAZU, IPINYOU, SYNTHETIC)}

_YAML_KEYS = {f.name for f in dataclasses.fields(DatasetSchema)}


def load_schema_yaml(path: str | Path) -> DatasetSchema:
    """Read a user's YAML schema; unknown keys, a missing label or bad values name file and key."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise PreprocessError(f"schema file does not exist", file=str(path), reason="schema")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PreprocessError(f"not valid YAML ({e})", file=str(path), reason="schema") from e
    if not isinstance(d, dict):
        raise PreprocessError("a schema must be a mapping of keys to values", file=str(path), reason="schema")
    unknown = sorted(set(d) - _YAML_KEYS)
    if unknown:
        raise PreprocessError(f"unknown keys {unknown} (allowed: {sorted(_YAML_KEYS)})", file=str(path),
                              reason="schema")
    if "label" not in d:
        raise PreprocessError("key 'label' is missing (name the 0/1 click column)", file=str(path), reason="schema")
    d.setdefault("name", path.stem)
    for key in ("categorical", "continuous", "drop", "columns", "cross_fields"):
        v = d.get(key)
        if isinstance(v, str):
            d[key] = [v]
        elif v is not None and not isinstance(v, list):
            raise PreprocessError(f"key {key!r}: must be a list of column names or patterns", file=str(path),
                                  reason="schema")
    if "multivalent" in d and d["multivalent"] is None:
        d["multivalent"] = {}
    if "derived" in d:
        if not isinstance(d["derived"], list) or not all(isinstance(x, dict) for x in d["derived"]):
            raise PreprocessError("key 'derived': must be a list of {name, source, fn}", file=str(path),
                                  reason="schema")
        try:
            d["derived"] = [DerivedColumn(**x) for x in d["derived"]]
        except TypeError as e:
            raise PreprocessError(f"key 'derived': {e}", file=str(path), reason="schema") from e
    try:
        s = DatasetSchema.__new__(DatasetSchema)
        for f in dataclasses.fields(DatasetSchema):
            if f.name in d:
                setattr(s, f.name, d[f.name])
            elif f.default is not dataclasses.MISSING:
                setattr(s, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                setattr(s, f.name, f.default_factory())  # type: ignore[misc]
        s.validate(where=str(path))
    except PreprocessError:
        raise
    except (TypeError, ValueError) as e:
        raise PreprocessError(f"bad schema ({e})", file=str(path), reason="schema") from e
    return s


def get_schema(name_or_path: str | Path) -> DatasetSchema:
    """A built-in schema by name, or a YAML schema file by path."""
    s = str(name_or_path)
    if s in BUILTIN:
        return dataclasses.replace(BUILTIN[s])
    if s.endswith((".yaml", ".yml")) or Path(s).exists():
        return load_schema_yaml(s)
    raise PreprocessError(f"unknown dataset {s!r}: use one of {sorted(BUILTIN)} or a path to a schema .yaml",
                          reason="schema")
