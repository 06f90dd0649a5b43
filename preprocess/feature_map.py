"""``feature_map.json``: the one contract between preprocessing and the models.

The preprocessing stage writes, into its output folder::

    feature_map.json
    train/part-00000.parquet ...   # one int32 column per categorical field and per pair,
    valid/part-00000.parquet ...   # one list<int32> column per multivalent field,
    test/part-00000.parquet  ...   # one float32 column per continuous field,
    summary.json                   # and the label column (float32, 0.0 / 1.0)

Model code reads *only* this file and those parquet folders.

Id conventions (FuxiCTR's tokenizer habit):

* ``PAD_ID = 0`` is reserved (padding of multivalent fields; never produced for a row value);
* ``OOV_ID = 1`` is the one out-of-vocabulary id of a field or pair (values seen fewer than the
  threshold times on **train**, and values never seen on train);
* kept values get ids ``2 .. vocab_size - 1``, sorted by train count descending, then by value
  ascending, so ids are deterministic whatever the partitioning or process.

So a categorical field or pair with ``k`` kept values has ``vocab_size == k + 2``.
A pair id is a function of the two *encoded* field ids (``key = id_a * vocab_b + id_b``), never
of concatenated strings.

Multivalent fields (``FieldSpec.multivalent``, declared by the schema, e.g. iPinYou's
``usertag``): a cell holds a list of tokens (``"10063,10110,13866"``). Its vocabulary counts each
distinct token once per train row (duplicates within a row count once) and follows the id rules
above; a row is stored as the list of the ids of its distinct non-empty tokens in first-occurrence
order (an OOV token gives ``OOV_ID``), truncated to the field's ``max_len`` (the first tokens are
kept); an empty or missing cell is the empty list (the model pools it to the zero vector). The
models mean-pool the token embeddings. A cross-product of two token *sets* is not one value, so
multivalent fields never take part in ``pairs``; :attr:`FeatureMap.categorical` lists only the
univalent categorical fields, :attr:`FeatureMap.multivalent` the multivalent ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .atomic import json_path, read_json, write_json_atomic

PAD_ID = 0
OOV_ID = 1
FIRST_ID = 2
FEATURE_MAP_FILE = "feature_map.json"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclass
class FieldSpec:
    """One original field as the model sees it.

    ``kind`` is ``"categorical"`` (int32 ids; ``vocab_size`` set) or ``"continuous"`` (float32 in
    [0, 1] after min-max scaling; ``min``/``max`` set). ``source`` names the raw column it came
    from (a bucketized continuous column keeps its raw name as source). ``multivalent`` fields
    (always categorical) store a list of at most ``max_len`` ids per row (parquet
    ``list<int32>``; mean-pooled by the model); ``max_len`` is None for every other field and is
    then left out of the JSON.
    """

    name: str
    kind: str
    column: str
    source: str
    vocab_size: int | None = None
    oov_threshold: int | None = None
    min: float | None = None
    max: float | None = None
    bucketized: bool = False
    multivalent: bool = False
    missing_train: int = 0
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "continuous"):
            raise ValueError(f"field {self.name!r}: kind must be categorical or continuous, got {self.kind!r}")
        if self.kind == "categorical" and (self.vocab_size is None or self.vocab_size < FIRST_ID):
            raise ValueError(f"field {self.name!r}: categorical field needs vocab_size >= {FIRST_ID}")
        if self.multivalent:
            if self.kind != "categorical":
                raise ValueError(f"field {self.name!r}: a multivalent field must be categorical")
            if not isinstance(self.max_len, int) or self.max_len < 1:
                raise ValueError(f"field {self.name!r}: a multivalent field needs max_len >= 1, got {self.max_len!r}")
        elif self.max_len is not None:
            raise ValueError(f"field {self.name!r}: max_len is only for multivalent fields")


@dataclass
class PairSpec:
    """A cross-product feature over two univalent categorical fields (``fields[0] < fields[1]`` in field order)."""

    name: str
    fields: tuple[str, str]
    column: str
    vocab_size: int
    threshold: int
    distinct_train: int = 0

    def __post_init__(self) -> None:
        self.fields = tuple(self.fields)  # type: ignore[assignment]
        if len(self.fields) != 2:
            raise ValueError(f"pair {self.name!r}: needs exactly two fields")


@dataclass
class SplitInfo:
    """Rows and positive ratio of one split, and its parquet folder relative to the map."""

    rows: int
    positives: int
    path: str

    @property
    def pos_ratio(self) -> float:
        return self.positives / self.rows if self.rows else 0.0


def pair_column(a: str, b: str) -> str:
    """Parquet column name of the cross of fields ``a`` and ``b``."""
    return f"{a}|{b}"


@dataclass
class FeatureMap:
    """Everything a model needs to know about the encoded data."""

    dataset: str
    label: str
    fields: list[FieldSpec]
    pairs: list[PairSpec]
    splits: dict[str, SplitInfo]
    schema: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    version: int = FORMAT_VERSION

    # ---- views -------------------------------------------------------------------------------
    @property
    def categorical(self) -> list[FieldSpec]:
        """The univalent categorical fields (one id per row; ``batch.cat``, pairs, first-order weights)."""
        return [f for f in self.fields if f.kind == "categorical" and not f.multivalent]

    @property
    def multivalent(self) -> list[FieldSpec]:
        """The multivalent categorical fields (a list of ids per row; ``batch.multi``, mean-pooled)."""
        return [f for f in self.fields if f.multivalent]

    @property
    def continuous(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "continuous"]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in feature map (fields: {[f.name for f in self.fields]})")

    def field_index(self, name: str) -> int:
        return [f.name for f in self.fields].index(name)

    def pair_indices(self) -> list[tuple[int, int]]:
        """Index of each pair's two fields in ``self.fields`` (order of ``self.pairs``)."""
        idx = {f.name: i for i, f in enumerate(self.fields)}
        return [(idx[p.fields[0]], idx[p.fields[1]]) for p in self.pairs]

    def split_dir(self, root: str | Path, split: str) -> Path:
        return Path(root) / self.splits[split].path

    # ---- (de)serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for s, info in self.splits.items():
            d["splits"][s]["pos_ratio"] = info.pos_ratio
        for p in d["pairs"]:
            p["fields"] = list(p["fields"])
        for f in d["fields"]:
            if f["max_len"] is None:  # univalent fields: the format of maps without multivalent fields
                del f["max_len"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureMap":
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"feature map version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        splits = {
            k: SplitInfo(rows=v["rows"], positives=v["positives"], path=v["path"]) for k, v in d["splits"].items()
        }
        return cls(
            dataset=d["dataset"],
            label=d["label"],
            fields=[FieldSpec(**f) for f in d["fields"]],
            pairs=[PairSpec(**p) for p in d["pairs"]],
            splits=splits,
            schema=d.get("schema", {}),
            settings=d.get("settings", {}),
            content_hash=d.get("content_hash", ""),
            version=d["version"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json(), default_name=FEATURE_MAP_FILE)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureMap":
        path = json_path(path, FEATURE_MAP_FILE)
        d = read_json(path, missing="no feature map here (run `optinter preprocess` first)")
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid feature map ({e!r})") from e


def fingerprint(parts: Iterable[Any]) -> str:
    """Stable sha256 hex digest of JSON-serializable parts (used for content hashes)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()
