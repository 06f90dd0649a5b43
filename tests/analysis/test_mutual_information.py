"""MI of fields and pairs against sklearn's mutual_info_score on tiny encoded parquet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mutual_info_score

from encoded_data import write_encoded
from optinter.analysis import joint_counts, mi_from_counts, mutual_information


def test_mi_matches_sklearn(tmp_path):
    fm, train = write_encoded(tmp_path, n_rows=2500, n_files=3)
    pairs, fields, h = mutual_information(tmp_path)
    assert len(pairs) == fm.num_pairs and len(fields) == len(fm.categorical)
    y = train["label"].astype(int)
    for row in fields.itertuples():
        assert row.mi == pytest.approx(mutual_info_score(y, train[row.field]), rel=1e-9, abs=1e-12)
        assert row.n_values == train[row.field].nunique()
    for row in pairs.itertuples():
        assert row.mi == pytest.approx(mutual_info_score(y, train[row.pair]), rel=1e-9, abs=1e-12)
        assert row.gain == pytest.approx(row.mi - fields.set_index("field").loc[[row.field_a, row.field_b], "mi"].max())
    n = len(train)
    np.testing.assert_allclose(pairs["mi_mm"], pairs["mi"] - (pairs["pair"].map(lambda c: train[c].nunique()) - 1) / (2 * n))
    np.testing.assert_allclose(fields["mi_mm"], fields["mi"] - (fields["field"].map(lambda c: train[c].nunique()) - 1) / (2 * n))
    p = y.mean()
    assert h == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
    assert np.allclose(pairs["mi_norm"], pairs["mi"] / h)
    # the planted pair carries the most information
    assert pairs.sort_values("mi").iloc[-1]["pair"] == "c0|c1"


def test_mi_invariant_to_partitioning(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_encoded(a, n_rows=2000, n_files=1, seed=3)
    write_encoded(b, n_rows=2000, n_files=4, seed=3)
    write_encoded(c, n_rows=2000, n_files=2, seed=3, row_group_size=100)
    ref, ref_f, h = mutual_information(a)
    for d, kw in ((b, {}), (c, {"rows_per_task": 150})):
        got, got_f, h2 = mutual_information(d, **kw)
        pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12)
        pd.testing.assert_frame_equal(got_f, ref_f, check_exact=False, rtol=1e-12)
        assert h2 == pytest.approx(h, rel=1e-12)


def test_sparse_and_dense_counting_agree(tmp_path, monkeypatch):
    write_encoded(tmp_path, n_rows=1500, n_files=2, seed=5)
    dense = joint_counts(tmp_path)
    import optinter.analysis.counts as an  # where the counting reads its limit

    monkeypatch.setattr(an, "DENSE_VOCAB_LIMIT", 0)
    sparse = joint_counts(tmp_path, columns_per_task=2)
    assert dense.keys() == sparse.keys()
    for k in dense:
        np.testing.assert_array_equal(dense[k][0], sparse[k][0])
        np.testing.assert_array_equal(dense[k][1], sparse[k][1])


def test_mi_from_counts_against_pandas_recount():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 9, 500)
    y = (rng.random(500) < 0.2 + 0.05 * (x % 3)).astype(int)
    k, n = np.unique(x * 2 + y, return_counts=True)
    mi, h, nv = mi_from_counts(k, n)
    assert mi == pytest.approx(mutual_info_score(y, x))
    assert nv == pd.Series(x).nunique()
    assert mi_from_counts(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == (0.0, 0.0, 0)


def test_bad_label_is_reported_with_file(tmp_path):
    write_encoded(tmp_path, n_rows=300)
    f = tmp_path / "train" / "part-00000.parquet"
    df = pd.read_parquet(f)
    df.loc[3, "label"] = 2.0
    df.to_parquet(f, index=False)
    with pytest.raises(ValueError, match="part-00000.parquet.*label"):
        mutual_information(tmp_path)


def test_ids_outside_vocab_are_reported(tmp_path):
    write_encoded(tmp_path, n_rows=300)
    fmj = json.loads((tmp_path / "feature_map.json").read_text())
    fmj["fields"][1]["vocab_size"] = 3
    (tmp_path / "feature_map.json").write_text(json.dumps(fmj))
    with pytest.raises(ValueError, match="'c1'.*outside"):
        mutual_information(tmp_path)


def test_distributed_client_gives_same_values(tmp_path):
    distributed = pytest.importorskip("distributed")
    write_encoded(tmp_path, n_rows=1200, n_files=2, seed=9)
    ref, _, _ = mutual_information(tmp_path)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        got, _, _ = mutual_information(tmp_path, client=client)
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12)
