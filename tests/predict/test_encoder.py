"""preprocess.encoder: scoring encodes raw rows exactly as the preprocessing stage did (the same
functions), here on a schema with every kind of field (categorical with missing values, a
multivalent column, a continuous column bucketized *and* min-max scaled, derived hour / weekday
fields, pairs); unseen / missing / out-of-range values against a hand computation from the vocabularies."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocess.cross_vocab import CrossVocab
from preprocess.encoder import RawEncoder, export_encoder
from preprocess.errors import PreprocessError
from preprocess.feature_map import OOV_ID
from preprocess.pipeline import PreprocessConfig, run_preprocess

SCHEMA = """
name: mini
label: click
sep: "\\t"
header: true
categorical: [site, dev]
continuous: [price]
drop: [uid]
derived:
  - {name: hour_of_day, source: hour, fn: hour_of_day}
  - {name: weekday, source: hour, fn: weekday}
multivalent: {tags: ","}
continuous_mode: both
oov_threshold: 3
cross_threshold: 2
"""


def _write(path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c", "d", "e", "", "rare1", "rare2"], n, p=[.3, .2, .15, .1, .1, .1, .03, .02])
    dev = rng.choice(["p", "q", "r", ""], n)
    tags = [",".join(f"t{int(min(rng.zipf(1.5), 12))}" for _ in range(rng.integers(0, 5))) for _ in range(n)]
    price = np.round(np.exp(rng.normal(2, 1.5, n)), 2).astype(str)
    price[rng.random(n) < 0.1] = ""
    hour = [f"1410{d:02d}{h:02d}" for d, h in zip(rng.integers(21, 31, n), rng.integers(0, 24, n))]
    df = pd.DataFrame({"uid": np.arange(n), "click": rng.integers(0, 2, n), "hour": hour, "site": site, "dev": dev,
                       "tags": tags, "price": price})
    df.to_csv(path, sep="\t", index=False)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    d = tmp_path_factory.mktemp("mini")
    (d / "mini.yaml").write_text(SCHEMA)
    for s, n, seed in (("train", 2000, 1), ("valid", 300, 2), ("test", 300, 3)):
        _write(d / f"{s}.tsv", n, seed)
    cfg = PreprocessConfig(dataset=str(d / "mini.yaml"), out=str(d / "out"), train=[str(d / "train.tsv")],
                           valid=[str(d / "valid.tsv")], test=[str(d / "test.tsv")], processes=False, n_workers=1,
                           threads_per_worker=2, blocksize=4096)
    run_preprocess(cfg)
    return d


def _rows(t: pa.Table) -> dict[str, list]:
    return {c: t[c].to_pylist() for c in t.column_names}


def test_scoring_encodes_test_rows_as_the_stage_did(mini) -> None:
    enc = RawEncoder.load(mini / "out")
    assert set(enc.columns) == {"hour", "site", "dev", "tags", "price"}
    assert enc.columns["tags"] == "multivalent" and enc.columns["price"] == "continuous"
    expected = pq.read_table(mini / "out" / "test").drop(["click"])
    cols, first = enc.file_columns(mini / "test.tsv")
    parsed = enc.parse_text((mini / "test.tsv").read_bytes()[first:], cols)
    got = enc.encode(parsed["table"])
    assert got.column_names == expected.column_names  # every field, then every pair
    assert _rows(got) == _rows(expected)
    # a DataFrame of the same rows (pandas' own types: NaN for empty cells, floats for price)
    df = pd.read_csv(mini / "test.tsv", sep="\t", dtype={"hour": str})
    assert df["site"].isna().any() and df["price"].dtype == float
    got_df = enc.encode(enc.parse_frame(df)["table"])
    assert _rows(got_df) == _rows(expected)


def test_unseen_missing_and_out_of_range_values_against_the_vocabularies(mini) -> None:
    enc = RawEncoder.load(mini / "out")
    oov, mm = enc.oov, enc.minmax

    def fid(field: str, value: str) -> int:
        v = oov.vocab_[field]
        return v.index(value) + 2 if value in v else OOV_ID

    frame = pd.DataFrame({
        "hour": ["26010115", "14102100", "garbage"],
        "site": ["never-seen", "", "a"],
        "dev": ["p", None, "q"],
        "tags": ["t1,t1,zzz,,t2", "", None],
        "price": [1e6, -5.0, np.nan],
    })
    t = enc.encode(enc.parse_frame(frame)["table"])
    assert t["site"].to_pylist() == [OOV_ID, fid("site", ""), fid("site", "a")]
    assert t["dev"].to_pylist() == [fid("dev", "p"), fid("dev", ""), fid("dev", "q")]
    assert t["tags"].to_pylist() == [[fid("tags", "t1"), OOV_ID, fid("tags", "t2")], [], []]
    buckets = [str(math.floor(math.log(1e6) ** 2)), "-5", ""]
    assert t["price"].to_pylist() == [fid("price", b) for b in buckets]
    lo, hi = mm.min_["price_v"], mm.max_["price_v"]
    assert lo < hi < 1e6 and lo > -5
    assert t["price_v"].to_pylist() == [1.0, 0.0, 0.0]  # clipped above / below, missing → 0
    # 2026-01-01 is a Thursday (Monday = 0); an unreadable timestamp is the empty token
    assert t["hour_of_day"].to_pylist() == [fid("hour_of_day", "15"), fid("hour_of_day", "00"),
                                            fid("hour_of_day", "ge")]
    assert t["weekday"].to_pylist() == [fid("weekday", "3"), fid("weekday", "1"), fid("weekday", "")]
    # pair ids: kept key id_a * vocab_b + id_b → its rank + 2, else OOV
    cv = enc.cross
    for a, b in enc.pairs:
        name = f"{a}|{b}"
        keys = {int(k): i + 2 for i, k in enumerate(cv.keys_[name])}
        want = [keys.get(x * oov.vocab_size(b) + y, OOV_ID) for x, y in zip(t[a].to_pylist(), t[b].to_pylist())]
        assert t[name].to_pylist() == want


def test_only_the_pairs_asked_for_are_loaded_and_exported(mini, tmp_path) -> None:
    fm = json.loads((mini / "out" / "feature_map.json").read_text())
    names = [p["name"] for p in fm["pairs"]]
    assert len(names) == 10
    enc = RawEncoder.load(mini / "out", pairs=names[3:5])
    assert sorted(enc.cross.keys_) == sorted(names[3:5])
    t = enc.encode(enc.parse_frame(pd.read_csv(mini / "test.tsv", sep="\t", dtype={"hour": str}))["table"])
    assert [c for c in t.column_names if "|" in c] == names[3:5]
    full = pq.read_table(mini / "out" / "test")
    assert t[names[3]].to_pylist() == full[names[3]].to_pylist()
    export_encoder(mini / "out", tmp_path / "enc", names[3:5])
    sub = CrossVocab.load(tmp_path / "enc" / "vocab" / "cross")
    assert sorted(sub.keys_) == sorted(names[3:5])
    assert RawEncoder.load(tmp_path / "enc", pairs=names[3:5]).encode(
        enc.parse_frame(pd.read_csv(mini / "test.tsv", sep="\t", dtype={"hour": str}))["table"]).equals(t)
    with pytest.raises(ValueError, match="not in the feature map"):
        RawEncoder.load(mini / "out", pairs=["site|nope"])


def test_frame_columns_of_other_types(mini) -> None:
    enc = RawEncoder.load(mini / "out")
    base = pd.DataFrame({"hour": ["14102105"] * 3, "site": ["a", "b", "c"], "dev": ["p", "q", "r"],
                         "tags": ["t1,t2", "t3", ""], "price": [1.5, 2.0, 30.0]})
    want = _rows(enc.encode(enc.parse_frame(base)["table"]))
    lists = base.assign(tags=[["t1", "t2"], ["t3"], []])  # multivalent cells as lists
    texts = base.assign(price=[" 1.5", "2", "30.0 "])     # numbers as text, blanks trimmed
    cat = base.assign(site=base["site"].astype("category"), extra=[1, 2, 3])[["extra", "price", "tags", "dev",
                                                                             "site", "hour"]]
    for frame in (lists, texts, cat, pa.Table.from_pandas(base)):
        assert _rows(enc.encode(enc.parse_frame(frame)["table"])) == want
    with pytest.raises(PreprocessError, match="no column 'tags'"):
        enc.parse_frame(base.drop(columns=["tags"]))
    with pytest.raises(PreprocessError, match="column 'dev': expected categorical values"):
        enc.parse_frame(base.assign(dev=[True, False, True]))
    with pytest.raises(PreprocessError, match="column 'site'.*the number 0.25"):
        enc.parse_frame(base.assign(site=[1.0, 0.25, 2.0]))
    bad = enc.parse_frame(base.assign(price=["1", "x", ""]))
    assert [(r, why) for r, why, _ in bad["bad"]] == [(1, "non_numeric")]
    assert bad["lines"].tolist() == [0, 2] and bad["table"].num_rows == 2
