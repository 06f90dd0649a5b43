"""Multivalent (list-valued) categorical fields: schema keys, token counting / encoding, the stage end to end.

Every figure is checked against an independent pure-Python / pandas re-computation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pp_reference as ref
from preprocess.errors import PreprocessError
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo
from preprocess.multivalent import count_tokens, encode_tokens, resolve_max_len
from preprocess.pipeline import PreprocessConfig, run_preprocess
from preprocess.schema import IPINYOU, IPINYOU_COLUMNS, MAX_LEN_CAP, DatasetSchema, load_schema_yaml

THRESHOLD = 3
COLUMNS = ["click", "site", "tags", "dev", "price"]


def ref_tokens(cell: str, sep: str = ",") -> list[str]:
    """Distinct non-empty tokens in first-occurrence order (the documented rule)."""
    return list(dict.fromkeys(t for t in cell.split(sep) if t))


def ref_encode(cell: str, voc: dict[str, int], max_len: int) -> list[int]:
    return [voc.get(t, 1) for t in ref_tokens(cell)][:max_len]


def tag_cells(rng: np.random.Generator, n: int, longest: int = 9) -> list[str]:
    """Comma-separated tag lists: Zipf-ish tags, duplicates, empty tokens and empty cells."""
    out = []
    for _ in range(n):
        k = int(rng.integers(0, longest + 1))
        toks = [f"t{int(min(rng.zipf(1.4), 40))}" for _ in range(k)]
        if toks and rng.random() < 0.2:
            toks.append(toks[0])  # a duplicate within the row
        if toks and rng.random() < 0.1:
            toks.insert(1, "")  # an empty token ("a,,b")
        out.append(",".join(toks))
    return out


def write_tsv(path: Path, n: int, seed: int, longest: int = 9) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"click": rng.integers(0, 2, n), "site": rng.choice(list("abcdefg"), n),
                       "tags": tag_cells(rng, n, longest), "dev": rng.choice(["p", "q", "r"], n),
                       "price": rng.normal(10, 3, n).round(2)})
    df.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("multi")
    return {s: write_tsv(d / f"{s}.tsv", n, seed) for s, n, seed in (("train", 2500, 1), ("valid", 400, 2),
                                                                          ("test", 400, 3))}


def write_schema(path: Path, extra: str = "") -> Path:
    path.write_text("name: tagged\nlabel: click\nsep: \"\\t\"\ncategorical: [site, dev]\ncontinuous: [price]\n"
                    f"multivalent: {{tags: ','}}\noov_threshold: {THRESHOLD}\ncross_threshold: 2\n{extra}")
    return path


def read_raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


# ---- schema ---------------------------------------------------------------------------------------
def test_ipinyou_declares_usertag_multivalent() -> None:
    rs = IPINYOU.resolve(IPINYOU_COLUMNS)
    assert rs.multivalent == {"usertag": ","} and rs.max_len == {"usertag": None}
    assert "usertag" in rs.cat_fields and "usertag" not in rs.drop and "usertag" not in rs.cross_fields
    assert len(rs.cross_fields) == 16 and len(rs.pairs) == 16 * 15 // 2
    assert all("usertag" not in p for p in rs.pairs)


def test_yaml_multivalent_and_max_len(tmp_path) -> None:
    s = load_schema_yaml(write_schema(tmp_path / "a.yaml", "max_len: 5\n"))
    assert s.multivalent == {"tags": ","} and s.max_len == 5
    rs = s.resolve(COLUMNS)
    assert rs.cat_fields == ["site", "tags", "dev"] and rs.cont_fields == ["price"] and rs.max_len == {"tags": 5}
    assert rs.cross_fields == ["site", "dev"] and rs.pairs == [("site", "dev")]
    s = load_schema_yaml(write_schema(tmp_path / "b.yaml", "max_len: {'ta*': 7}\n"))
    assert s.resolve(COLUMNS).max_len == {"tags": 7}
    # a multivalent column need not be listed as categorical, and a glob cross_fields skips it
    s = DatasetSchema(name="x", label="click", sep="\t", categorical=["*"], continuous=["price"],
                      multivalent={"t*": "|"}, cross_fields=["*"])
    rs = s.resolve(COLUMNS)
    assert rs.multivalent == {"tags": "|"} and rs.cross_fields == ["site", "dev"]
    # schemas without multivalent columns keep their former dictionary form (and content hash)
    assert "multivalent" not in DatasetSchema(name="y", label="click").to_dict()
    assert s.to_dict()["multivalent"] == {"t*": "|"}


@pytest.mark.parametrize("extra, columns, key, words", [
    ("multivalent: {nosuch: ','}", COLUMNS, "multivalent", "nosuch"),
    ("multivalent: {tags: \"\\t\"}", COLUMNS, "multivalent", "file separator"),
    ("multivalent: {price: ','}", COLUMNS, "multivalent", "continuous"),
    ("multivalent: {tags: ','}\ndrop: [tags]", COLUMNS, "multivalent", "dropped"),
    ("multivalent: {click: ','}", COLUMNS, "multivalent", "label"),
    ("multivalent: [tags]", COLUMNS, "multivalent", "mapping"),
    ("multivalent: {tags: ''}", COLUMNS, "multivalent", "non-empty"),
    ("multivalent: {tags: ','}\ncross_fields: [site, tags]", COLUMNS, "cross_fields", "take no part in pairs"),
    ("multivalent: {tags: ','}\nmax_len: 0", COLUMNS, "max_len", ">= 1"),
    ("multivalent: {tags: ','}\nmax_len: {site: 3}", COLUMNS, "max_len", "not a multivalent column"),
    ("max_len: 4", COLUMNS, "max_len", "declares none"),
])
def test_bad_declarations_name_the_key(tmp_path, extra, columns, key, words) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(f"label: click\nsep: \"\\t\"\ncategorical: [site, dev]\ncontinuous: [price]\n{extra}\n")
    with pytest.raises(PreprocessError) as ei:
        load_schema_yaml(p).resolve(columns, where=str(p))
    msg = str(ei.value)
    assert f"'{key}'" in msg and words in msg and str(p) in msg


# ---- tokens: counting and encoding ------------------------------------------------------------------
def test_count_and_encode_tokens_match_pure_python() -> None:
    rng = np.random.default_rng(7)
    cells = tag_cells(rng, 600)
    keep = rng.random(600) < 0.8  # a filtered dictionary column keeps unused dictionary entries
    col = pa.array(cells).dictionary_encode().filter(pa.array(keep))
    rows = [c for c, k in zip(cells, keep) if k]
    table, hist = count_tokens(col, ",")
    exp = pd.Series([t for c in rows for t in ref_tokens(c)]).value_counts()
    got = dict(zip(table["value"].to_pylist(), table["count"].to_pylist()))
    assert got == exp.to_dict()
    n_tok = pd.Series([len(ref_tokens(c)) for c in rows])
    np.testing.assert_array_equal(hist, np.bincount(n_tok))
    assert resolve_max_len(None, hist, MAX_LEN_CAP) == n_tok.max()
    assert resolve_max_len(None, hist, 3) == 3 and resolve_max_len(5, hist, 3) == 5
    assert resolve_max_len(None, np.array([4]), 64) == 1  # no tokens at all → one PAD slot
    voc = ref.vocab(pd.Series([t for c in rows for t in ref_tokens(c)]), THRESHOLD)

    def to_ids(arr: pa.Array) -> np.ndarray:
        return np.array([voc.get(t, 1) for t in arr.to_pylist()], dtype=np.int32)

    for max_len in (2, 64):
        enc = encode_tokens(col, ",", to_ids, max_len)
        assert enc.type == pa.list_(pa.int32())
        assert enc.to_pylist() == [ref_encode(c, voc, max_len) for c in rows]
    # plain (not dictionary-encoded) and chunked columns give the same lists; a null cell is an empty one
    chunked = pa.chunked_array([pa.array(rows[:100]), pa.array(rows[100:])])
    assert encode_tokens(chunked, ",", to_ids, 4).to_pylist() == [ref_encode(c, voc, 4) for c in rows]
    with_null = pa.array(rows[:50] + [None]).dictionary_encode()
    assert encode_tokens(with_null, ",", to_ids, 4).to_pylist() == [ref_encode(c, voc, 4) for c in rows[:50]] + [[]]
    assert count_tokens(with_null, ",")[1][0] == sum(not ref_tokens(c) for c in rows[:50]) + 1


# ---- the stage end to end -------------------------------------------------------------------------
def test_preprocess_multivalent_matches_pandas(files, tmp_path, scheduler) -> None:
    out = tmp_path / "o"
    schema = write_schema(tmp_path / "tagged.yaml")
    summary = run_preprocess(PreprocessConfig(dataset=str(schema), out=str(out), train=[str(files["train"])],
                                              valid=[str(files["valid"])], test=[str(files["test"])],
                                              scheduler=scheduler, blocksize=16 * 1024))
    assert summary["partitions"] > 3  # several blocks: per-partition counts are reduced
    fm = FeatureMap.load(out)
    raw = {s: read_raw(files[s]) for s in files}
    toks = {s: raw[s]["tags"].map(ref_tokens) for s in raw}
    voc = ref.vocab(toks["train"].explode().dropna(), THRESHOLD)
    longest = int(toks["train"].map(len).max())
    f = fm.field("tags")
    assert f.multivalent and f.kind == "categorical" and f.vocab_size == len(voc) + 2
    assert f.max_len == min(longest, MAX_LEN_CAP) and f.oov_threshold == THRESHOLD
    assert [x.name for x in fm.categorical] == ["site", "dev"] and [x.name for x in fm.multivalent] == ["tags"]
    assert [p.name for p in fm.pairs] == ["site|dev"]
    vocab = json.loads((out / "vocab" / "fields.json").read_text())
    assert vocab["vocab_"]["tags"] == list(voc)  # id order: count desc, value asc
    for s in raw:
        t = pq.read_table(out / s)
        assert t.schema.field("tags").type == pa.list_(pa.int32())
        assert t["tags"].to_pylist() == [ref_encode(c, voc, f.max_len) for c in raw[s]["tags"]], s
        site_voc = ref.vocab(raw["train"]["site"], THRESHOLD)
        np.testing.assert_array_equal(t["site"].to_numpy(), ref.encode(raw[s]["site"], site_voc))
    n_tok = toks["train"].map(len)
    st = summary["multivalent"]["tags"]
    assert st["max_len"] == f.max_len and st["max_tokens_train"] == longest
    assert st["empty_rows_train"] == int((n_tok == 0).sum()) and st["truncated_rows_train"] == 0
    assert st["mean_tokens_train"] == pytest.approx(n_tok.mean(), abs=1e-4)
    assert json.loads((out / "summary.json").read_text())["multivalent"]["tags"] == st
    # max_len from the schema truncates (first tokens kept) and the summary counts the truncated rows
    out2 = tmp_path / "o2"
    summary2 = run_preprocess(PreprocessConfig(dataset=str(write_schema(tmp_path / "t2.yaml", "max_len: 3\n")),
                                               out=str(out2), train=[str(files["train"])],
                                               valid=[str(files["valid"])], test=[str(files["test"])],
                                               scheduler=scheduler))
    assert FeatureMap.load(out2).field("tags").max_len == 3
    assert pq.read_table(out2 / "valid")["tags"].to_pylist() == [ref_encode(c, voc, 3) for c in raw["valid"]["tags"]]
    assert summary2["multivalent"]["tags"]["truncated_rows_train"] == int((n_tok > 3).sum())
    # a multivalent field named in --cross-fields is refused
    with pytest.raises(PreprocessError, match="cross_fields.*multivalent"):
        run_preprocess(PreprocessConfig(dataset=str(schema), out=str(tmp_path / "x"), train=[str(files["train"])],
                                        valid=[str(files["valid"])], test=[str(files["test"])],
                                        scheduler=scheduler, cross_fields=["site", "tags"]))
    assert not (tmp_path / "x").exists()


# ---- feature_map.json -----------------------------------------------------------------------------
def _fmap(fields: list[FieldSpec]) -> FeatureMap:
    return FeatureMap(dataset="d", label="y", fields=fields,
                      pairs=[PairSpec(name="a|b", fields=("a", "b"), column="a|b", vocab_size=5, threshold=1)],
                      splits={"train": SplitInfo(rows=10, positives=3, path="train")})


def test_feature_map_without_multivalent_round_trips_unchanged(tmp_path) -> None:
    fm = _fmap([FieldSpec(name="a", kind="categorical", column="a", source="a", vocab_size=4),
                FieldSpec(name="b", kind="categorical", column="b", source="b", vocab_size=3),
                FieldSpec(name="x", kind="continuous", column="x", source="x", min=0.0, max=2.0)])
    text = fm.to_json()
    d = json.loads(text)
    assert all("max_len" not in f for f in d["fields"])  # the former format, key for key
    fm.save(tmp_path / "feature_map.json")
    again = FeatureMap.load(tmp_path)
    assert again.to_json() == text and again.multivalent == [] and [f.name for f in again.categorical] == ["a", "b"]


def test_feature_map_with_multivalent_round_trips(tmp_path) -> None:
    fm = _fmap([FieldSpec(name="a", kind="categorical", column="a", source="a", vocab_size=4),
                FieldSpec(name="t", kind="categorical", column="t", source="t", vocab_size=9, multivalent=True,
                          max_len=6),
                FieldSpec(name="b", kind="categorical", column="b", source="b", vocab_size=3)])
    fm.save(tmp_path / "feature_map.json")
    again = FeatureMap.load(tmp_path)
    assert again.to_json() == fm.to_json() and again.field("t").max_len == 6
    assert [f.name for f in again.categorical] == ["a", "b"] and [f.name for f in again.multivalent] == ["t"]
    with pytest.raises(ValueError, match="max_len"):
        FieldSpec(name="t", kind="categorical", column="t", source="t", vocab_size=9, multivalent=True)
    with pytest.raises(ValueError, match="categorical"):
        FieldSpec(name="t", kind="continuous", column="t", source="t", multivalent=True, max_len=3)
