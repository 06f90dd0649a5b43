"""``CrossVocab.transform_pair`` on its three lookup paths (dense table, hash per call, binary search in the
sorted kept keys) against a plain dict of the kept keys."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.cross_vocab import DENSE_LOOKUP_FACTOR, SEARCH_FACTOR, CrossVocab, pair_keys


@pytest.mark.parametrize("va, vb, n", [(3, 5, 100),             # dense table
                                       (50, 10**6, 5000),       # hash lookup: few kept keys next to the rows
                                       (50, 10**6, 200),        # binary search: many kept keys next to the rows
                                       (10**4, 10**4, 30)])
def test_transform_pair_paths_agree_with_a_dict(va, vb, n) -> None:
    rng = np.random.default_rng(va + n)
    a, b = rng.integers(0, va, 20000), rng.zipf(1.3, 20000) % vb
    cv = CrossVocab(threshold=2).fit({"a": a, "b": b}, {"a": va, "b": vb}, [("a", "b")])
    kept = {int(k): i + 2 for i, k in enumerate(cv.keys_["a|b"])}
    for qa, qb in ((a[:n], b[:n]), (rng.integers(0, va, n), rng.zipf(1.3, n) % vb)):
        got = cv.transform_pair("a|b", qa, qb)
        want = np.array([kept.get(int(k), 1) for k in pair_keys(qa, qb, vb)])
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    space, k = (int(a[:n].max()) + 1) * vb, len(kept)
    path = "dense" if space <= max(DENSE_LOOKUP_FACTOR * n, 1 << 16) else "hash" if k <= SEARCH_FACTOR * n else "search"
    assert path == {(3, 5, 100): "dense", (50, 10**6, 5000): "hash", (50, 10**6, 200): "search"}.get((va, vb, n), path)
