"""Unit tests of each job's building block on tiny frames, against independent pandas re-computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import pp_reference as ref
from preprocess.cross_vocab import DENSE_LOOKUP_FACTOR, CrossVocab, count_keys, pair_keys, reduce_pair
from preprocess.errors import BAD_COLUMN_COUNT, BAD_LABEL, BAD_NUMBER
from preprocess.io import parse_block, plan_blocks
from preprocess.minmax import MinMaxScaler, bucketize
from preprocess.oov import OOVThresholder, count_values, reduce_counts
from preprocess.split import assign_split


def _frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": [f"v{int(x)}" for x in np.minimum(rng.zipf(1.4, n), 40)],
        "b": [f"w{int(x)}" for x in np.minimum(rng.zipf(1.2, n), 200)],
        "c": rng.choice(["", "x", "y", "z"], n),
    })


def test_oov_vocab_matches_pandas_recount() -> None:
    df = _frame()
    oov = OOVThresholder(threshold=5, thresholds={"c": 1}).fit(df)
    for f, t in (("a", 5), ("b", 5), ("c", 1)):
        expected = ref.vocab(df[f], t)
        got = {v: i + 2 for i, v in enumerate(oov.vocab_[f])}
        assert got == expected
        assert oov.vocab_size(f) == len(expected) + 2
        assert oov.counts_[f] == [int((df[f] == v).sum()) for v in oov.vocab_[f]]
        assert oov.distinct_[f] == df[f].nunique()
        np.testing.assert_array_equal(oov.transform_column(f, df[f].to_numpy()), ref.encode(df[f], expected))
    # unseen values map to OOV
    assert oov.transform_column("a", np.array(["never-seen"])).tolist() == [1]


def test_oov_partitioned_counts_equal_whole() -> None:
    df = _frame(3000, 1)
    parts = [count_values(pa.array(df["b"].iloc[i:i + 700]).dictionary_encode()) for i in range(0, 3000, 700)]
    whole = reduce_counts([count_values(pa.array(df["b"]))], 3)
    assert reduce_counts(parts, 3) == whole


def test_oov_save_load_roundtrip(tmp_path) -> None:
    df = _frame()
    oov = OOVThresholder(threshold=3).fit(df)
    oov.save(tmp_path / "v.json")
    back = OOVThresholder.load(tmp_path / "v.json")
    np.testing.assert_array_equal(back.transform_column("b", df["b"]), oov.transform_column("b", df["b"]))


def test_cross_vocab_matches_pandas_recount() -> None:
    rng = np.random.default_rng(3)
    a = np.minimum(rng.zipf(1.3, 5000), 30) + 1
    b = np.minimum(rng.zipf(1.2, 5000), 50) + 1
    cv = CrossVocab(threshold=4).fit({"a": a, "b": b}, {"a": 32, "b": 52}, [("a", "b")])
    expected = ref.cross_vocab(a, b, 4)
    got_ids = cv.transform_pair("a|b", a, b)
    exp_ids = np.array([expected.get((x, y), 1) for x, y in zip(a.tolist(), b.tolist())])
    np.testing.assert_array_equal(got_ids, exp_ids)
    assert cv.vocab_size("a|b") == len(expected) + 2
    assert cv.distinct_["a|b"] == len(set(zip(a.tolist(), b.tolist())))
    counts = pd.Series(list(zip(a.tolist(), b.tolist()))).value_counts()
    assert [int(c) for c in cv.counts_["a|b"]] == [int(counts[(int(k) // 52, int(k) % 52)]) for k in cv.keys_["a|b"]]


def test_count_keys_dense_and_hash_paths_agree() -> None:
    rng = np.random.default_rng(4)
    keys = pair_keys(rng.integers(0, 50, 10000), rng.integers(0, 60, 10000), 60)
    k1, c1 = count_keys(keys, 50 * 60)          # bincount path
    k2, c2 = count_keys(keys, 10**12)            # hash path
    o1, o2 = np.argsort(k1), np.argsort(k2)
    np.testing.assert_array_equal(k1[o1], k2[o2])
    np.testing.assert_array_equal(c1[o1], c2[o2])
    split = reduce_pair([count_keys(keys[:3000], 3000), count_keys(keys[3000:], 3000)], 2)
    whole = reduce_pair([(k1, c1)], 2)
    np.testing.assert_array_equal(split["keys"], whole["keys"])
    assert split["distinct"] == whole["distinct"]


def test_minmax_matches_pandas_and_clips() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(3, 2, 500)
    x[::7] = np.nan
    sc = MinMaxScaler().fit({"x": x})
    s = pd.Series(x)
    assert sc.min_["x"] == s.min() and sc.max_["x"] == s.max()
    assert sc.missing_["x"] == int(s.isna().sum())
    y = sc.transform_column("x", np.array([s.min(), s.max(), s.max() + 10, s.min() - 10, np.nan]))
    np.testing.assert_allclose(y, [0, 1, 1, 0, 0])
    mid = sc.transform_column("x", x)
    ok = ~np.isnan(x)
    np.testing.assert_allclose(mid[ok], ((s - s.min()) / (s.max() - s.min()))[ok], rtol=1e-6)


def test_bucketize_rule() -> None:
    xs = np.array([-3, -1, 0, 1, 2, 3, 10, 1000, 2.5])
    expected = [math.floor(math.log(v) ** 2) if v > 2 else int(v) for v in xs]
    assert bucketize(xs).tolist() == expected


def test_split_is_seeded_proportional_and_partition_free() -> None:
    offsets = np.arange(0, 200_000 * 37, 37)
    s = assign_split(7, 0, offsets, (8, 1, 1))
    frac = np.bincount(s, minlength=3) / len(s)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.005)
    pieces = np.concatenate([assign_split(7, 0, offsets[i:i + 999], (8, 1, 1)) for i in range(0, len(offsets), 999)])
    np.testing.assert_array_equal(s, pieces)
    assert not np.array_equal(s, assign_split(8, 0, offsets, (8, 1, 1)))
    assert not np.array_equal(s, assign_split(7, 1, offsets, (8, 1, 1)))


def test_parse_block_flags_bad_rows_with_lines() -> None:
    cols = ["label", "n", "c"]
    data = b"1\t3\tx\n0\t\ty\n2\t1\tz\n1\tabc\tq\n1\t4\n\n0\t5\tw\n"
    r = parse_block(data, cols, "\t", "label", ["c"], ["n"])
    assert r["n_lines"] == 7
    assert [(ln, reason) for ln, reason, _ in r["bad"]] == [(2, BAD_LABEL), (3, BAD_NUMBER), (4, BAD_COLUMN_COUNT),
                                                           (5, BAD_COLUMN_COUNT)]
    t = r["table"]
    assert t["label"].to_pylist() == [1, 0, 0]
    n = t["n"].to_numpy()
    assert n[0] == 3 and np.isnan(n[1]) and n[2] == 5
    assert t["c"].to_pylist() == ["x", "y", "w"]
    assert r["offsets"].tolist() == [0, data.index(b"0\t\ty"), data.index(b"0\t5\tw")]


def test_plan_blocks_cover_file_on_line_boundaries(tmp_path) -> None:
    p = tmp_path / "f.txt"
    lines = [("x" * (i % 17)) + str(i) for i in range(3000)]
    p.write_text("\n".join(lines) + "\n")
    data = p.read_bytes()
    for bs in (1024, 5000, 10**6):
        blocks = plan_blocks(str(p), len(data), 0, bs)
        assert blocks[0][0] == 0 and blocks[-1][1] == len(data)
        assert all(b[1] == c[0] for b, c in zip(blocks, blocks[1:]))
        assert all(data[b[1] - 1:b[1]] == b"\n" for b in blocks)


def test_bucketed_reduce_equals_whole_and_dense_equals_hash() -> None:
    from preprocess.cross_vocab import bucket_width, merge_buckets, split_buckets

    rng = np.random.default_rng(7)
    va, vb = 300, 200
    tables = []
    for i in range(5):
        a, b = np.minimum(rng.zipf(1.3, 4000), va - 1), np.minimum(rng.zipf(1.2, 4000), vb - 1)
        tables.append(count_keys(pair_keys(a, b, vb), va * vb))
    whole = reduce_pair(tables, 3)
    recount = pd.Series(np.concatenate([np.repeat(k, c) for k, c in tables])).value_counts()
    assert whole["distinct"] == len(recount)
    assert sorted(zip(whole["keys"].tolist(), whole["counts"].tolist())) == \
        sorted((int(k), int(c)) for k, c in recount.items() if c >= 3)
    for n in (2, 7):
        width = bucket_width(va * vb, n)
        split = [split_buckets(k, c, width, n) for k, c in tables]
        starts = [np.concatenate([[0], np.cumsum(sz)]) for _, _, sz in split]
        per = []
        for r in range(n):
            parts = [(k[s[r]:s[r + 1]], c[s[r]:s[r + 1]]) for (k, c, _), s in zip(split, starts)]
            assert all(((p[0] >= r * width) & (p[0] < (r + 1) * width)).all() for p in parts)
            dense = reduce_pair(parts, 3, key_range=(r * width, (r + 1) * width))
            hashed = reduce_pair(parts, 3)
            for key in ("keys", "counts"):
                np.testing.assert_array_equal(dense[key], hashed[key])
            assert dense["distinct"] == hashed["distinct"]
            per.append(dense)
        merged = merge_buckets(per)
        for key in ("keys", "counts"):
            np.testing.assert_array_equal(merged[key], whole[key])
        assert merged["distinct"] == whole["distinct"]


def test_transform_pair_dense_and_hash_lookups_match_reference() -> None:
    rng = np.random.default_rng(8)
    va, vb = 2000, 60  # key space 120,000: all rows use the dense table, a few rows the hash lookup
    a = np.minimum(rng.zipf(1.2, 60_000), va - 1)
    b = np.minimum(rng.zipf(1.1, 60_000), vb - 1)
    assert (a.max() + 1) * vb <= DENSE_LOOKUP_FACTOR * len(a)
    cv = CrossVocab(threshold=2).fit({"a": a, "b": b}, {"a": va, "b": vb}, [("a", "b")])
    expected = ref.cross_vocab(a, b, 2)
    exp_ids = np.array([expected.get((x, y), 1) for x, y in zip(a.tolist(), b.tolist())])
    np.testing.assert_array_equal(cv.transform_pair("a|b", a, b), exp_ids)            # dense
    few = slice(0, 500)
    assert (a[few].max() + 1) * vb > max(DENSE_LOOKUP_FACTOR * 500, 1 << 16)
    np.testing.assert_array_equal(cv.transform_pair("a|b", a[few], b[few]), exp_ids[few])  # hash


def test_reduce_groups_are_contiguous_balanced_and_read_in_bounded_runs(monkeypatch):
    """group_slots covers every (pair, slot) once, in slot order, in groups of about equal weight;
    _slot_runs cuts a group into runs of neighbouring slots holding <= READ_ENTRIES entries (a slot
    larger than that is a run of its own)."""
    from preprocess import jobs

    buckets = [(1, 10, 50), (8, 5, 8_000_000), (1, 3, 10), (4, 7, 4_000_000), (1, 2, 5)]
    groups = jobs.group_slots(buckets, 4)
    flat = [x for g in groups for x in g]
    assert flat == [(pi, s) for pi, s in zip([0] + [1] * 8 + [2] + [3] * 4 + [4], range(15))]
    assert len(groups) == 4 and all(groups)
    w = [sum(buckets[pi][2] // buckets[pi][0] + 1000 for pi, _ in g) for g in groups]
    assert max(w) <= 2 * min(w)
    assert jobs.group_slots([], 4) == [] and len(jobs.group_slots(buckets, 100)) <= 15

    # three parts' slot offsets; slot sizes summed over the parts: 3, 6, 9, 12, 15
    offs = [np.array([0, 1, 3, 6, 10, 15]), np.array([0, 1, 3, 6, 10, 15]), np.array([0, 1, 3, 6, 10, 15])]
    monkeypatch.setattr(jobs, "READ_ENTRIES", 18)
    group = [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4)]
    assert jobs._slot_runs(group, offs) == [[(0, 0), (0, 1), (0, 2)], [(1, 3)], [(1, 4)]]
    monkeypatch.setattr(jobs, "READ_ENTRIES", 10)
    assert jobs._slot_runs(group, offs) == [[(0, 0), (0, 1)], [(0, 2)], [(1, 3)], [(1, 4)]]
    # a gap in the slots starts a new run
    assert jobs._slot_runs([(0, 0), (0, 2)], offs) == [[(0, 0)], [(0, 2)]]
