"""End-to-end runs of ``run_preprocess`` on tiny files, checked against a pandas re-computation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import pp_reference as ref
from conftest import criteo_lines, write_lines
from preprocess.errors import PreprocessError
from preprocess.feature_map import FeatureMap
from preprocess.pipeline import PreprocessConfig, run_preprocess

CROSS = ["C1", "C2", "C3", "C9", "C10"]


def _cfg(tiny: dict[str, Path], out: Path, scheduler: str, **kw) -> PreprocessConfig:
    base = dict(dataset="criteo", out=str(out), oov_threshold=3, cross_threshold=3, scheduler=scheduler,
                blocksize=64 * 1024, cross_fields=CROSS)
    if "raw" not in kw:
        base.update(train=[str(tiny["train"])], valid=[str(tiny["valid"])], test=[str(tiny["test"])])
    base.update(kw)
    return PreprocessConfig(**base)


def _read(out: Path, split: str) -> pd.DataFrame:
    return pq.read_table(out / split).to_pandas()


def test_presplit_matches_pandas_recomputation(tiny_criteo, tmp_path, scheduler) -> None:
    out = tmp_path / "out"
    summary = run_preprocess(_cfg(tiny_criteo, out, scheduler))
    fm = FeatureMap.load(out)
    raw = {s: ref.read_criteo(tiny_criteo[s]) for s in ("train", "valid", "test")}
    enc = {s: _read(out, s) for s in raw}
    assert summary["rows"] == {s: len(raw[s]) for s in raw}
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    for s in raw:
        assert fm.splits[s].rows == len(raw[s])
        assert fm.splits[s].positives == int((raw[s]["label"] == "1").sum())
        np.testing.assert_array_equal(enc[s]["label"].to_numpy(), raw[s]["label"].astype(float).to_numpy())
    ids: dict[str, dict[str, np.ndarray]] = {s: {} for s in raw}
    for f in fm.fields:
        assert f.kind == "categorical"
        tok = (lambda s, f=f: raw[s][f.name].map(ref.bucket_token)) if f.bucketized else (lambda s, f=f: raw[s][f.name])
        voc = ref.vocab(tok("train"), 3)
        assert f.vocab_size == len(voc) + 2, f.name
        for s in raw:
            ids[s][f.name] = ref.encode(tok(s), voc)
            np.testing.assert_array_equal(enc[s][f.name].to_numpy(), ids[s][f.name], err_msg=f"{s} {f.name}")
    assert len(fm.pairs) == len(CROSS) * (len(CROSS) - 1) // 2
    for p in fm.pairs:
        a, b = p.fields
        cv = ref.cross_vocab(ids["train"][a], ids["train"][b], 3)
        assert p.vocab_size == len(cv) + 2
        assert p.distinct_train == len(set(zip(ids["train"][a].tolist(), ids["train"][b].tolist())))
        for s in raw:
            exp = np.array([cv.get(k, 1) for k in zip(ids[s][a].tolist(), ids[s][b].tolist())])
            np.testing.assert_array_equal(enc[s][p.column].to_numpy(), exp, err_msg=f"{s} {p.name}")
    assert all(str(enc["train"][c].dtype) == "int32" for c in enc["train"].columns if c != "label")
    assert str(enc["train"]["label"].dtype) == "float32"


def test_minmax_and_both_modes(tiny_criteo, tmp_path, scheduler) -> None:
    out = tmp_path / "both"
    run_preprocess(_cfg(tiny_criteo, out, scheduler, continuous_mode="both", cross_fields=["C1", "I1"]))
    fm = FeatureMap.load(out)
    raw = ref.read_criteo(tiny_criteo["train"])
    enc = _read(out, "train")
    assert [p.name for p in fm.pairs] == ["I1|C1"]
    for i in (1, 2, 5):
        x = pd.to_numeric(raw[f"I{i}"].replace("", np.nan))
        f = fm.field(f"I{i}_v")
        assert f.kind == "continuous" and f.min == x.min() and f.max == x.max() and f.missing_train == x.isna().sum()
        exp = ((x - x.min()) / (x.max() - x.min())).fillna(0.0).to_numpy(np.float32)
        np.testing.assert_allclose(enc[f"I{i}_v"].to_numpy(), exp, rtol=1e-6)
        assert fm.field(f"I{i}").kind == "categorical" and fm.field(f"I{i}").bucketized
        assert str(enc[f"I{i}_v"].dtype) == "float32"
    test = _read(out, "test")
    assert test["I2_v"].between(0, 1).all()


def test_raw_split_deterministic_and_partition_independent(tiny_criteo, tmp_path, scheduler) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_preprocess(_cfg(tiny_criteo, a, scheduler, raw=[str(tiny_criteo["raw"])], seed=11))
    run_preprocess(_cfg(tiny_criteo, b, scheduler, raw=[str(tiny_criteo["raw"])], seed=11))
    # gzip input, other partitioning (one partition: the gzip is decompressed, then cut by blocksize)
    run_preprocess(_cfg(tiny_criteo, c, scheduler, raw=[str(tiny_criteo["raw_gz"])], seed=11, blocksize=1 << 24))
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "summary.json")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "summary.json")
    assert files_a == files_b and len([f for f in files_a if f.suffix == ".parquet"]) > 3
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    fa, fc = FeatureMap.load(a), FeatureMap.load(c)
    assert len(list((c / "train").glob("*.parquet"))) == 1
    for s in ("train", "valid", "test"):
        assert fa.splits[s].rows == fc.splits[s].rows
        pd.testing.assert_frame_equal(_read(a, s), _read(c, s))
    # split sizes: every input row lands in exactly one split, about 8:1:1
    n = len(ref.read_criteo(tiny_criteo["raw"]))
    rows = [fa.splits[s].rows for s in ("train", "valid", "test")]
    assert sum(rows) == n and abs(rows[0] / n - 0.8) < 0.03
    # another seed gives another split
    d = tmp_path / "d"
    run_preprocess(_cfg(tiny_criteo, d, scheduler, raw=[str(tiny_criteo["raw"])], seed=12))
    assert not _read(d, "valid").equals(_read(a, "valid"))


def test_raw_split_rows_in_input_order(tmp_path, scheduler) -> None:
    lines = criteo_lines(1500, 9)
    lines = [ln.split("\t", 1)[0] + "\t" + str(i) + "\t" + ln.split("\t", 2)[2] for i, ln in enumerate(lines)]
    raw = write_lines(tmp_path / "r.tsv", lines)
    out = tmp_path / "o"
    run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), raw=[str(raw)], scheduler=scheduler,
                                    blocksize=20_000, continuous_mode="minmax", cross_fields=["C1", "C2"],
                                    oov_threshold=2))
    fm = FeatureMap.load(out)
    lo, hi = fm.field("I1").min, fm.field("I1").max
    seen = []
    for s in ("train", "valid", "test"):
        idx = np.rint(_read(out, s)["I1"].to_numpy(np.float64) * (hi - lo) + lo).astype(int)
        # train defines [lo, hi] (strictly increasing); valid/test rows outside it are clipped (>=)
        assert ((np.diff(idx) > 0) if s == "train" else (np.diff(idx) >= 0)).all(), s
        seen += idx.tolist()
    assert len(seen) == 1500 and len(set(seen)) >= 1490


@pytest.mark.parametrize("case", ["missing", "empty", "columns", "label", "number", "dataset"])
def test_bad_input_errors_name_file_and_line(case, tiny_criteo, tmp_path, scheduler) -> None:
    good = criteo_lines(50, 5)
    p = tmp_path / "in.tsv"
    line = None
    if case == "missing":
        p = tmp_path / "nope.tsv"
    elif case == "empty":
        p.write_bytes(b"")
    else:
        bad = list(good)
        parts = bad[30].split("\t")
        if case == "columns":
            bad[30] = "\t".join(parts[:-2])
        elif case == "label":
            bad[30] = "\t".join(["2"] + parts[1:])
        elif case == "number":
            bad[30] = "\t".join(parts[:3] + ["12x"] + parts[4:])
        write_lines(p, bad)
        line = 31 if case != "dataset" else None
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    cfg = _cfg(tiny_criteo, out, scheduler, raw=[str(p)], blocksize=2048)
    if case == "dataset":
        cfg.dataset = "no-such-dataset"
    with pytest.raises(PreprocessError) as ei:
        run_preprocess(cfg)
    msg = str(ei.value)
    if case == "dataset":
        assert "no-such-dataset" in msg and "criteo" in msg
    else:
        assert str(p) in msg
    if line is not None:
        assert f"line {line}" in msg and ei.value.line == line
        assert {"columns": "column", "label": "label", "number": "not a number"}[case] in msg
    if case in ("missing", "empty"):
        assert {"missing": "does not exist", "empty": "empty"}[case] in msg
    assert (out / "keep.txt").read_text() == "previous result"  # nothing replaced
    assert not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]  # nothing half-written left


def test_skip_bad_rows_counts_reasons(tmp_path, scheduler) -> None:
    lines = criteo_lines(300, 6)
    lines[10] = "\t".join(lines[10].split("\t")[:20])
    lines[20] = "\t".join(["x"] + lines[20].split("\t")[1:])
    lines[21] = "\t".join(["1", "abc"] + lines[21].split("\t")[2:])
    lines[22] = "\t".join(["1", "1", "1e"] + lines[22].split("\t")[3:])
    raw = write_lines(tmp_path / "r.tsv", lines)
    out = tmp_path / "o"
    s = run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), raw=[str(raw)], scheduler=scheduler,
                                        on_bad_rows="skip", oov_threshold=2, cross_fields=["C1", "C2"]))
    assert s["rows_read"] == 300
    assert s["rows_rejected"] == {"column_count": 1, "label": 1, "non_numeric": 2}
    assert sum(s["rows"].values()) == 296
    assert json.loads((out / "summary.json").read_text())["rows_rejected"] == s["rows_rejected"]


def test_yaml_schema_and_header_globs(tmp_path, scheduler) -> None:
    rng = np.random.default_rng(0)
    for k in range(3):
        n = 400
        df = pd.DataFrame({"uid": np.arange(n) + k * n, "y": rng.integers(0, 2, n),
                           "site": rng.choice(["a", "b", "c", "d"], n), "dev": rng.choice(["p", "q"], n),
                           "price": rng.normal(10, 3, n).round(2)})
        with gzip.open(tmp_path / f"part{k}.csv.gz", "wt") as fh:
            df.to_csv(fh, index=False)
    schema = tmp_path / "mine.yaml"
    schema.write_text("name: mine\nlabel: y\nsep: ','\ncategorical: [site, dev]\ncontinuous: [pr*]\n"
                      "drop: [uid]\noov_threshold: 2\ncross_threshold: 2\n")
    out = tmp_path / "o"
    s = run_preprocess(PreprocessConfig(dataset=str(schema), out=str(out), raw=[str(tmp_path / "part*.csv.gz")],
                                        scheduler=scheduler))
    assert sum(s["rows"].values()) == 1200 and s["rows_read"] == 1200
    fm = FeatureMap.load(out)
    assert [f.name for f in fm.fields] == ["site", "dev", "price"]
    assert [p.name for p in fm.pairs] == ["site|dev"]
    assert fm.field("site").vocab_size == 6 and fm.field("price").kind == "continuous"
    for bad, key in (("label: y\nfoo: 1\n", "foo"), ("categorical: [site]\n", "label"),
                     ("label: y\ncategorical: [site, nosuch]\ncontinuous: [price]\ndrop: [uid, dev]\n", "nosuch")):
        schema.write_text(bad)
        with pytest.raises(PreprocessError) as ei:
            run_preprocess(PreprocessConfig(dataset=str(schema), out=str(tmp_path / "x"),
                                            raw=[str(tmp_path / "part*.csv.gz")], scheduler=scheduler))
        assert key in str(ei.value) and "mine.yaml" in str(ei.value)


def test_avazu_sample_derived_hour(tmp_path, scheduler) -> None:
    from conftest import SHARED_DATA

    path = SHARED_DATA / "avazu" / "avazu_head_of_train.csv"
    if not path.exists():
        pytest.skip("shared Avazu sample not present")
    out = tmp_path / "o"
    s = run_preprocess(PreprocessConfig(dataset="avazu", out=str(out), raw=[str(path)], scheduler=scheduler,
                                        cross_fields=["C1", "banner_pos", "hour_of_day", "weekday"]))
    fm = FeatureMap.load(out)
    names = [f.name for f in fm.fields]
    assert "id" not in names and "hour" not in names and names[-2:] == ["hour_of_day", "weekday"]
    assert len(names) == 23 and sum(s["rows"].values()) == 7491
    df = pd.read_csv(path, dtype=str)
    # 2014-10-21 was a Tuesday (ISO day_of_week 1 with Monday=0); one value each → id 2
    assert fm.field("weekday").vocab_size == 3 and fm.field("hour_of_day").vocab_size == 3
    assert (_read(out, "train")["weekday"] == 2).all()
    voc = ref.vocab(df["site_id"].iloc[:0], 5)  # noqa: F841 (structure check only below)
    assert fm.field("site_id").vocab_size <= df["site_id"].nunique() + 2
