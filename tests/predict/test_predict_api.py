"""``optinter.load(...).predict(...)``: the scores of a run's raw test file reproduce its metrics.json;
unseen / missing values, extra / reordered columns are scored; bad input is a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scoring_helpers import MODELS, assert_reproduces

import optinter
from optinter.predict import Predictor
from preprocess.errors import PreprocessError
from preprocess.feature_map import OOV_ID


@pytest.mark.parametrize("model", MODELS)
def test_raw_test_file_reproduces_run_metrics(trained, model) -> None:
    m = trained.models[model]
    y = trained.labels()
    from_dir = optinter.load(m.dir)
    assert from_dir.name == model and from_dir.metrics["test_auc"] == m.metrics["test_auc"]
    assert_reproduces(y, from_dir.predict(str(trained.test_csv)), m.metrics)        # raw file
    assert_reproduces(y, from_dir.predict(trained.test_frame()), m.metrics)          # raw DataFrame
    assert_reproduces(y, from_dir.predict(trained.data_dir / "test"), m.metrics)     # encoded parquet folder
    from_run = optinter.load(m.run_id, tracking_uri=trained.tracking_uri)            # MLflow run id
    assert_reproduces(y, from_run.predict(pa.Table.from_pandas(trained.test_frame())), m.metrics)


def test_pipeline_run_id_means_its_retrained_optinter(trained) -> None:
    p = optinter.load(trained.parent_run_id, tracking_uri=trained.tracking_uri)
    assert p.name == "optinter" and p.path == trained.models["optinter"].dir


def test_predictor_exposes_feature_map_architecture_and_only_memorized_pairs(trained) -> None:
    p = optinter.load(trained.models["optinter"].dir)
    arch = p.architecture
    assert arch is not None and p.feature_map.content_hash
    memorized = [name for name, c in zip(arch.pairs, arch.choices) if c == "memorize"]
    assert sorted(memorized) == sorted(p.model.required_pairs())
    assert [f"{a}|{b}" for a, b in p.encoder.pairs] == p.model.required_pairs()
    assert sorted(p.encoder.cross.keys_) == sorted(memorized)  # only those vocabularies are loaded
    enc = p.encoder.encode(p.encoder.parse_frame(trained.test_frame())["table"])
    assert [c for c in enc.column_names if "|" in c] == p.model.required_pairs()
    # the run folder's encoder holds only what the model reads
    import json

    saved = json.loads((trained.models["optinter"].dir / "encoder" / "vocab" / "cross.json").read_text())
    assert sorted(saved["pairs"]) == sorted(memorized)
    assert not (trained.models["lr"].dir / "encoder" / "vocab" / "cross.json").exists()
    lr = optinter.load(trained.models["lr"].dir)
    assert lr.architecture is None and lr.encoder.cross is None


def test_unseen_missing_extra_and_reordered_columns_are_scored(trained) -> None:
    p = optinter.load(trained.models["optinter"].dir)
    df = trained.test_frame().head(50)
    base = p.predict(df)
    # extra columns, another column order: the same scores
    shuffled = df.assign(extra=np.arange(len(df)), note="x")[["note", "n0"] + [f"c{i}" for i in range(5, -1, -1)] +
                                                            ["extra", "label"]]
    np.testing.assert_array_equal(p.predict(shuffled), base)
    # no label column needed
    np.testing.assert_array_equal(p.predict(df.drop(columns=["label", "p_true"])), base)
    # an unseen category is the OOV id; a missing value is the empty category / the train-missing value
    odd = df.copy()
    odd.loc[0, "c0"] = "never-seen"
    odd.loc[1, "c1"] = None
    odd.loc[2, "n0"] = np.nan
    odd.loc[3, "n0"] = 1e9  # far above the train max: clipped to 1
    out = p.predict(odd)
    assert np.isfinite(out).all() and out.dtype == np.float32
    np.testing.assert_array_equal(out[4:], base[4:])
    enc = p.encoder.encode(p.encoder.parse_frame(odd)["table"])
    assert enc["c0"][0].as_py() == OOV_ID
    assert enc["c1"][1].as_py() == p.encoder.oov.transform_column("c1", pa.array([""]))[0]
    assert enc["n0"][2].as_py() == 0.0 and enc["n0"][3].as_py() == 1.0
    clipped = odd.copy()
    clipped.loc[3, "n0"] = p.feature_map.field("n0").max
    assert p.predict(clipped)[3] == out[3]


def test_integer_categories_match_their_text(trained) -> None:
    """A categorical column given as numbers is scored as its decimal text (as in a raw file)."""
    p = optinter.load(trained.models["lr"].dir)
    df = trained.test_frame().head(20)
    as_text = df.assign(c0=[str(i) for i in range(20)])
    as_int = df.assign(c0=np.arange(20))
    as_float = df.assign(c0=np.where(np.arange(20) == 3, np.nan, np.arange(20, dtype=float)))
    np.testing.assert_array_equal(p.predict(as_int), p.predict(as_text))
    np.testing.assert_array_equal(p.predict(as_float), p.predict(as_text.assign(c0=lambda d: d.c0.where(
        np.arange(20) != 3, ""))))


def test_bad_input_names_the_column(trained) -> None:
    p = optinter.load(trained.models["fm"].dir)
    df = trained.test_frame().head(10)
    with pytest.raises(PreprocessError, match="no column 'c3'"):
        p.predict(df.drop(columns=["c3"]))
    with pytest.raises(PreprocessError, match="column 'c2': expected categorical values.*0.5"):
        p.predict(df.assign(c2=np.full(10, 0.5)))
    with pytest.raises(PreprocessError, match="column 'n0': expected numbers"):
        p.predict(df.assign(n0=True))
    bad = df.astype({"n0": object})
    bad.loc[4, "n0"] = "abc"
    with pytest.raises(PreprocessError, match=r"input, row 4: column 'n0': not a number: 'abc'.*on_bad_rows='skip'"):
        p.predict(bad)
    skipped = p.predict(bad, on_bad_rows="skip")
    assert np.isnan(skipped[4]) and np.isfinite(np.delete(skipped, 4)).all()
    np.testing.assert_array_equal(np.delete(skipped, 4), np.delete(p.predict(df), 4))
    with pytest.raises(ValueError, match="on_bad_rows"):
        p.predict(df, on_bad_rows="drop")


def test_bad_rows_in_files_name_file_and_line(trained, tmp_path) -> None:
    p = optinter.load(trained.models["deepfm"].dir)
    lines = trained.test_csv.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",not-a-number"
    lines[9] = "1,2,3"
    f = tmp_path / "bad.csv"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreprocessError, match=r"bad\.csv, line 6: column 'n0': not a number: 'not-a-number'"):
        p.predict(str(f))
    out = p.predict([str(f)], on_bad_rows="skip")
    assert len(out) == len(lines) - 1 and np.isnan(out[[4, 8]]).all()
    full = p.predict(str(trained.test_csv))
    keep = np.setdiff1d(np.arange(len(full)), [4, 8])
    np.testing.assert_allclose(out[keep], full[keep], atol=1e-7)


def test_models_without_vocabularies_score_encoded_parquet_only(tiny_encoded, tmp_path) -> None:
    from optinter.config import RunConfig, apply_overrides
    from optinter.stages import run_train

    data_dir = tiny_encoded
    cfg = apply_overrides(RunConfig(), ["train.epochs=1", "model.embed_dim=4", "model.mlp_dims=8"])
    m = run_train(data_dir, "fm", tmp_path / "fm", cfg)
    p = Predictor.load(tmp_path / "fm")
    assert p.encoder is None
    y = pd.read_parquet(data_dir / "test")["label"].to_numpy()
    assert_reproduces(y, p.predict(str(data_dir / "test")), m)
    with pytest.raises(ValueError, match="only encoded parquet can be scored"):
        p.predict(pd.DataFrame({"c0": ["a"]}))


@pytest.fixture()
def tiny_encoded(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optinter"))
    from helpers import make_encoded_dataset

    make_encoded_dataset(tmp_path / "data", rows=(600, 200, 200))
    return tmp_path / "data"
