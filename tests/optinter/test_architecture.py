from __future__ import annotations

import json

import numpy as np
import pytest

from optinter.architecture import CHOICES, Architecture, random_architecture
from preprocess.feature_map import FeatureMap


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def test_round_trip_and_counts(fmap, tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=fmap.num_pairs)
    arch = Architecture.from_probs(fmap, probs)
    assert arch.choices == [CHOICES[k] for k in probs.argmax(1)]
    m, f, n = arch.counts()
    assert [m, f, n] == [int((probs.argmax(1) == k).sum()) for k in range(3)]
    path = arch.save(tmp_path)
    assert path.name == "architecture.json"
    d = json.loads(path.read_text())
    assert d["counts"] == [m, f, n] and list(d["pairs"]) == [p.name for p in fmap.pairs]
    back = Architecture.load(path)
    assert back.pairs == arch.pairs and back.choices == arch.choices
    np.testing.assert_allclose(back.probs, probs)
    assert back.hash() == arch.hash()
    back.validate(fmap)


def test_hash_depends_on_choices_only(fmap):
    a = Architecture.uniform(fmap, "memorize")
    b = Architecture.uniform(fmap, "memorize")
    b.meta["x"] = 1
    assert a.hash() == b.hash()
    c = Architecture.uniform(fmap, "factorize")
    assert a.hash() != c.hash()


def test_validate_and_load_errors(fmap, tmp_path):
    arch = Architecture.uniform(fmap, "naive")
    other = Architecture(pairs=arch.pairs[:-1], choices=arch.choices[:-1])
    with pytest.raises(ValueError, match="missing"):
        other.validate(fmap)
    shuffled = Architecture(pairs=arch.pairs[::-1], choices=arch.choices)
    with pytest.raises(ValueError, match="order"):
        shuffled.validate(fmap)
    assert shuffled.reorder(fmap).pairs == arch.pairs
    with pytest.raises(ValueError, match="choice"):
        Architecture(pairs=["a|b"], choices=["keep"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 99, "pairs": {}}))
    with pytest.raises(ValueError, match="version"):
        Architecture.load(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Architecture.load(bad)
    with pytest.raises(FileNotFoundError):
        Architecture.load(tmp_path / "missing.json")


def test_random_architecture_is_seeded(fmap):
    a, b, c = random_architecture(fmap, 1), random_architecture(fmap, 1), random_architecture(fmap, 2)
    assert a.choices == b.choices and a.source == "random"
    big = FeatureMap.from_dict(fmap.to_dict())
    assert a.counts() and sum(a.counts()) == fmap.num_pairs
    assert a.choices != c.choices or fmap.num_pairs < 3
    big.pairs = big.pairs * 30  # many pairs → all three choices appear, roughly uniformly
    for k, p in enumerate(big.pairs):
        big.pairs[k] = type(p)(name=f"{p.name}#{k}", fields=p.fields, column=p.column, vocab_size=p.vocab_size,
                               threshold=p.threshold)
    counts = random_architecture(big, 3).counts()
    assert all(abs(x - big.num_pairs / 3) < 4 * np.sqrt(big.num_pairs * 2 / 9) for x in counts)
