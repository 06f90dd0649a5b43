"""End to end on the real Criteo sample split (../shared/data/criteo/split), through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import pp_reference as ref
from conftest import SHARED_DATA
from preprocess.feature_map import FeatureMap

SPLIT = SHARED_DATA / "criteo" / "split"

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def criteo_out(tmp_path_factory):
    if not all((SPLIT / f"{s}.tsv.gz").exists() for s in ("train", "valid", "test")):
        pytest.skip(f"real Criteo split not present under {SPLIT}")
    from optinter.cli import main

    out = tmp_path_factory.mktemp("criteo") / "out"
    rc = main(["-q", "preprocess", "--dataset", "criteo", "--train", str(SPLIT / "train.tsv.gz"),
               "--valid", str(SPLIT / "valid.tsv.gz"), "--test", str(SPLIT / "test.tsv.gz"),
               "--out", str(out), "--workers", "2", "--blocksize", "4MB"])
    assert rc == 0
    return out


def test_criteo_split_end_to_end(criteo_out) -> None:
    fm = FeatureMap.load(criteo_out)
    summary = json.loads((criteo_out / "summary.json").read_text())
    assert summary["rows"] == {"train": 109_711, "valid": 13_714, "test": 13_714}
    assert summary["rows_rejected"] == {"column_count": 0, "label": 0, "non_numeric": 0}
    assert len(fm.fields) == 39 and len(fm.pairs) == 325 and all(f.kind == "categorical" for f in fm.fields)
    train = ref.read_criteo(SPLIT / "train.tsv.gz")
    assert fm.splits["train"].positives == int((train["label"] == "1").sum())
    enc = pq.read_table(criteo_out / "train", columns=["label", "I5", "C3", "C12", "C3|C12"]).to_pandas()
    ids = {}
    for name, tok in (("I5", train["I5"].map(ref.bucket_token)), ("C3", train["C3"]), ("C12", train["C12"])):
        voc = ref.vocab(tok, 20)
        assert fm.field(name).vocab_size == len(voc) + 2
        ids[name] = ref.encode(tok, voc)
        np.testing.assert_array_equal(enc[name].to_numpy(), ids[name])
    cv = ref.cross_vocab(ids["C3"], ids["C12"], 20)
    pair = next(p for p in fm.pairs if p.name == "C3|C12")
    assert pair.vocab_size == len(cv) + 2
    exp = np.array([cv.get(k, 1) for k in zip(ids["C3"].tolist(), ids["C12"].tolist())])
    np.testing.assert_array_equal(enc["C3|C12"].to_numpy(), exp)
    valid = pq.read_table(criteo_out / "valid").num_rows
    assert valid == 13_714
