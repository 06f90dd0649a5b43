"""The README's example schema is a schema the loader accepts, with every key it knows, and it
preprocesses a file of that shape."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from preprocess.schema import DatasetSchema, load_schema_yaml

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    block = text.split("<!-- schema-example", 1)[1]
    return re.search(r"```yaml\n(.*?)```", block, re.S).group(1)


def test_readme_schema_names_every_key_and_loads(tmp_path):
    src = _example()
    keys = set(yaml.safe_load(src))
    assert keys == {f.name for f in dataclasses.fields(DatasetSchema)}
    f = tmp_path / "shop.yaml"
    f.write_text(src)
    s = load_schema_yaml(f)
    assert s.label == "clicked" and s.multivalent == {"tags": "|"} and len(s.derived) == 2


def test_readme_schema_preprocesses_a_matching_file(tmp_path):
    import numpy as np
    import pandas as pd

    from preprocess.feature_map import FeatureMap
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({
        "event_id": np.arange(n), "ts_raw": "x", "clicked": rng.integers(0, 2, n),
        "user_a": rng.integers(0, 5, n), "user_b": rng.integers(0, 4, n), "item_id": rng.integers(0, 6, n),
        "page": rng.choice(["home", "cart"], n), "price": rng.random(n), "dwell_s": rng.random(n),
        "ts": rng.choice(["14102100", "14102213"], n), "tags": rng.choice(["a|b", "b", "", "c|a"], n),
    })
    raw = tmp_path / "shop.csv"
    df.to_csv(raw, index=False)
    schema = tmp_path / "shop.yaml"
    schema.write_text(_example())
    out = tmp_path / "enc"
    run_preprocess(PreprocessConfig(dataset=str(schema), raw=[str(raw)], out=str(out), processes=False,
                                    n_workers=1))
    fm = FeatureMap.load(out)
    names = {f.name for f in fm.fields}
    assert {"user_a", "item_id", "page", "price", "hour_of_day", "weekday", "tags"} <= names
    assert fm.splits["train"].rows + fm.splits["valid"].rows + fm.splits["test"].rows == n
