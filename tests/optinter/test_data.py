"""Streaming parquet batches: same rows as a pandas read, deterministic shuffles, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from optinter.data import ParquetBatches, check_split_schema
from preprocess.feature_map import FeatureMap


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def _pandas(data_dir, split: str) -> pd.DataFrame:
    files = sorted((data_dir / split).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _rows(batches, width_pairs: int) -> np.ndarray:
    out = []
    for b in batches:
        assert b.pairs.shape == (len(b), width_pairs)
        out.append(np.concatenate([b.cat.numpy(), b.cont.numpy(), b.pairs.numpy(), b.label.numpy()[:, None]], 1))
    return np.concatenate(out)


def test_ordered_stream_equals_pandas(tiny_data, fmap):
    data_dir, _ = tiny_data
    pairs = ["c1|c3", "c0|c1"]
    dl = ParquetBatches(data_dir, fmap, "valid", batch_size=300, pair_names=pairs, chunk_rows=128)
    sizes = [len(b) for b in dl]
    assert sizes[:-1] == [300] * (len(sizes) - 1) and sum(sizes) == fmap.splits["valid"].rows == dl.num_rows
    assert len(dl) == len(sizes)
    df = _pandas(data_dir, "valid")
    cols = [f.column for f in fmap.categorical] + [f.column for f in fmap.continuous] + pairs + ["label"]
    np.testing.assert_allclose(_rows(dl, 2), df[cols].to_numpy(np.float64), rtol=1e-6)


def test_shuffle_is_a_permutation_and_deterministic(tiny_data, fmap):
    data_dir, _ = tiny_data
    mk = lambda seed: ParquetBatches(data_dir, fmap, "train", 256, [p.name for p in fmap.pairs], shuffle=True,  # noqa: E731
                                     seed=seed, shuffle_buffer=1000, chunk_rows=300)
    ordered = _rows(ParquetBatches(data_dir, fmap, "train", 256, [p.name for p in fmap.pairs]), fmap.num_pairs)
    a = mk(1)
    a.set_epoch(0)
    r0 = _rows(a, fmap.num_pairs)
    a.set_epoch(0)
    np.testing.assert_array_equal(_rows(a, fmap.num_pairs), r0)  # same (seed, epoch) → same order
    a.set_epoch(1)
    r1 = _rows(a, fmap.num_pairs)
    b = mk(2)
    r2 = _rows(b, fmap.num_pairs)
    for r in (r0, r1, r2):
        assert not np.array_equal(r, ordered)
        np.testing.assert_array_equal(np.unique(r, axis=0), np.unique(ordered, axis=0))
        assert len(r) == len(ordered)
    assert not np.array_equal(r0, r1) and not np.array_equal(r0, r2)


def test_no_pair_columns_when_not_needed(tiny_data, fmap):
    dl = ParquetBatches(tiny_data[0], fmap, "test", 500)
    assert "c0|c1" not in dl.columns
    b = next(iter(dl))
    assert b.pairs.shape == (500, 0)


def test_schema_and_id_errors(tiny_data, fmap, tmp_path):
    data_dir, _ = tiny_data
    assert check_split_schema(data_dir, fmap, "train", ["c0|c1"]) == fmap.splits["train"].rows
    # a copy of the data whose valid split lacks a column, and whose test split has an id ≥ vocab
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(data_dir, d)
    f = sorted((d / "valid").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(f).drop(["c0|c1"]), f)
    with pytest.raises(ValueError, match=r"missing column 'c0\|c1'"):
        check_split_schema(d, fmap, "valid", ["c0|c1"])
    f = sorted((d / "test").glob("*.parquet"))[0]
    t = pq.read_table(f).to_pandas()
    t.loc[5, "c2"] = fmap.field("c2").vocab_size
    pq.write_table(__import__("pyarrow").Table.from_pandas(t, preserve_index=False), f)
    with pytest.raises(ValueError, match="'c2' has ids outside"):
        list(ParquetBatches(d, fmap, "test", 100))
    with pytest.raises(FileNotFoundError, match="no parquet files"):
        ParquetBatches(tmp_path / "nowhere", fmap, "train", 10)
