"""The parquet loader (issue 12, "feeding a fast device"): the batches it streams, checked against an
independent re-enactment of its documented order; determinism per seed; only the model's columns read;
id checks with and without parquet statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from optinter.architecture import random_architecture
from optinter.config import default_config
from optinter.data import ParquetBatches
from optinter.registry import build_model
from optinter.stages import make_loaders
from preprocess.feature_map import FeatureMap


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def _units(data_dir, split: str) -> list[pd.DataFrame]:
    """Every row group of the split as a pandas frame, in file then row-group order."""
    out = []
    for f in sorted((data_dir / split).glob("*.parquet")):
        pf = pq.ParquetFile(f)
        out += [pf.read_row_group(g).to_pandas() for g in range(pf.metadata.num_row_groups)]
    return out


def _reference(data_dir, fmap, split, pairs, batch, shuffle, seed, epoch, buffer, chunk, drop_last):
    """The loader's documented order, re-enacted on row indices of a pandas reading: units permuted with
    ``default_rng([seed, epoch])``; rows arrive in chunks of ``chunk`` rows of one row group; once the
    buffer holds ``max(buffer, batch)`` rows (and at the end) it is permuted with the same generator and
    cut into batches; the rows left over (fewer than a batch) stay, in that order, at the buffer's front."""
    units = _units(data_dir, split)
    cols = [f.column for f in fmap.categorical] + [f.column for f in fmap.continuous] + list(pairs) + [fmap.label]
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    order = rng.permutation(len(units)) if shuffle else np.arange(len(units))
    frame = pd.concat([units[i] for i in order], ignore_index=True)[cols].to_numpy(np.float64)
    sizes = [c for i in order for c in [chunk] * (len(units[i]) // chunk) + ([len(units[i]) % chunk] if len(units[i]) % chunk else [])]
    limit = max(buffer, batch) if shuffle else batch
    out, pending, start = [], np.zeros(0, dtype=np.int64), 0

    def flush(final: bool) -> np.ndarray:
        idx = pending[rng.permutation(len(pending))] if shuffle else pending
        n_full = len(idx) // batch * batch
        out.extend(frame[idx[s:s + batch]] for s in range(0, n_full, batch))
        if final and n_full < len(idx) and not drop_last:
            out.append(frame[idx[n_full:]])
        return idx[n_full:]

    for m in sizes:
        pending = np.concatenate([pending, np.arange(start, start + m)])
        start += m
        if len(pending) >= limit:
            pending = flush(False)
    if len(pending):
        flush(True)
    return out


def _as_rows(b) -> np.ndarray:
    return np.concatenate([b.cat.numpy(), b.cont.numpy(), b.pairs.numpy(), b.label.numpy()[:, None]], 1).astype(np.float64)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch, buffer, chunk, drop_last", [(256, 1000, 300, False), (100, 50, 128, True),
                                                              (500, 2000, 4096, False), (7, 64, 50, False)])
def test_batches_match_the_documented_order(tiny_data, fmap, shuffle, batch, buffer, chunk, drop_last):
    data_dir, _ = tiny_data
    pairs = ["c1|c3", "c0|c1", "c2|c4"]
    for epoch in (0, 1):
        dl = ParquetBatches(data_dir, fmap, "train", batch, pairs, shuffle=shuffle, seed=5, shuffle_buffer=buffer,
                            chunk_rows=chunk, drop_last=drop_last, prefetch=epoch * 2)
        dl.set_epoch(epoch)
        got = list(dl)
        want = _reference(data_dir, fmap, "train", pairs, batch, shuffle, 5, epoch, buffer, chunk, drop_last)
        assert len(got) == len(want) == len(dl)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(_as_rows(g), w)
            for t, dt in ((g.cat, torch.int64), (g.pairs, torch.int64), (g.cont, torch.float32),
                          (g.label, torch.float32), (g.multi, torch.int64)):
                assert t.dtype == dt and t.is_contiguous()


def test_same_seed_same_batches(tiny_data, fmap):
    data_dir, _ = tiny_data
    pairs = [p.name for p in fmap.pairs]

    def run(seed: int, epoch: int, prefetch: int) -> list[np.ndarray]:
        dl = ParquetBatches(data_dir, fmap, "train", 128, pairs, shuffle=True, seed=seed, shuffle_buffer=900,
                            chunk_rows=333, prefetch=prefetch)
        dl.set_epoch(epoch)
        return [_as_rows(b) for b in dl]

    a = run(11, 0, 2)
    for other in (run(11, 0, 0), run(11, 0, 2)):  # a fresh loader, with or without the prefetch thread
        assert len(other) == len(a) and all(np.array_equal(x, y) for x, y in zip(a, other))
    for other in (run(12, 0, 2), run(11, 1, 2)):
        assert not np.array_equal(np.concatenate(a), np.concatenate(other))
        np.testing.assert_array_equal(np.unique(np.concatenate(a), axis=0), np.unique(np.concatenate(other), axis=0))


def test_reads_only_the_models_columns(tiny_data, fmap, monkeypatch):
    """A re-trained OptInter reads its memorized pairs only; a model without pairs none."""
    data_dir, _ = tiny_data
    arch = random_architecture(fmap, seed=3)
    model = build_model("optinter", fmap, default_config(fmap, "optinter").model, arch=arch)
    memorized = [p for p, c in zip(arch.pairs, arch.choices) if c == "memorize"]
    assert memorized and len(memorized) < fmap.num_pairs
    assert sorted(model.required_pairs()) == sorted(memorized)
    seen: list[list[str]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        seen.append(list(kwargs.get("columns") or []))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    cfg = default_config(fmap, "optinter")
    loaders = make_loaders(data_dir, fmap, model, cfg)
    b = next(iter(loaders["train"]))
    assert b.pairs.shape[1] == len(model.required_pairs())
    base = {f.column for f in fmap.categorical} | {f.column for f in fmap.continuous} | {fmap.label}
    assert seen and all(set(cols) == base | set(model.required_pairs()) for cols in seen)
    seen.clear()
    next(iter(ParquetBatches(data_dir, fmap, "valid", 64, [])))
    assert seen and all(set(cols) == base for cols in seen)


@pytest.mark.parametrize("statistics", [True, False])
def test_id_and_null_errors_with_and_without_statistics(tiny_data, fmap, tmp_path, statistics):
    """Ids are checked from the row groups' min/max statistics, or from the values where a file has none."""
    import shutil

    data_dir, _ = tiny_data
    d = tmp_path / "d"
    shutil.copytree(data_dir, d)
    f = sorted((d / "test").glob("*.parquet"))[-1]
    t = pq.read_table(f).to_pandas()
    t.loc[len(t) - 3, "c0|c1"] = {p.name: p.vocab_size for p in fmap.pairs}["c0|c1"]
    pq.write_table(pa.Table.from_pandas(t, preserve_index=False), f, row_group_size=300, write_statistics=statistics)
    assert (pq.ParquetFile(f).metadata.row_group(0).column(0).statistics is not None) == statistics
    with pytest.raises(ValueError, match=r"'c0\|c1' has ids outside") as ei:
        list(ParquetBatches(d, fmap, "test", 100, ["c0|c1"], prefetch=0))
    assert str(f) in str(ei.value)
    list(ParquetBatches(d, fmap, "test", 100, ["c1|c3"], prefetch=0))  # the bad column is not read: fine
    t = pq.read_table(f)
    i = t.schema.get_field_index("c2")
    col = pa.array(t["c2"].to_numpy().astype(float), mask=np.arange(len(t)) == 4).cast(pa.int32())
    pq.write_table(t.set_column(i, "c2", col), f, write_statistics=statistics)
    with pytest.raises(ValueError, match="'c2' has 1 missing values"):
        list(ParquetBatches(d, fmap, "test", 100, [], prefetch=0))
