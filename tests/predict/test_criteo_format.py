"""Criteo's format (tab-separated, no header, bucketized integer fields, 325 crosses): a model trained
on preprocessed files scores the raw test file — with its label column or without it, as Kaggle's
test file comes — to the run's metrics, and the scoring encoder equals the stage's parquet."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.parquet as pq
import pytest
from scoring_helpers import assert_reproduces

from optinter.config import RunConfig, apply_overrides
from optinter.predict import Predictor
from preprocess.encoder import RawEncoder
from preprocess.pipeline import PreprocessConfig, run_preprocess


def _lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = [f"{int(min(rng.zipf(1.4), 3 + j)) * 7919 + j:08x}" if rng.random() > 0.1 else "" for j in range(26)]
        i = ["" if rng.random() < 0.2 else str(int(rng.zipf(1.6)) - 2) for _ in range(13)]
        y = int(rng.random() < 0.15 + 0.5 * (c[0].startswith("00001eff") if c[0] else 0))
        out.append("\t".join([str(y)] + i + c))
    return out


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    d = tmp_path_factory.mktemp("criteo")
    for s, n, seed in (("train", 3000, 1), ("valid", 500, 2), ("test", 500, 3)):
        (d / f"{s}.tsv").write_text("\n".join(_lines(n, seed)) + "\n")
    run_preprocess(PreprocessConfig(dataset="criteo", out=str(d / "data"), train=[str(d / "train.tsv")],
                                    valid=[str(d / "valid.tsv")], test=[str(d / "test.tsv")], oov_threshold=3,
                                    cross_threshold=3, processes=False, n_workers=1, threads_per_worker=2))
    return d


def test_encoder_equals_the_stage_on_criteo(criteo) -> None:
    enc = RawEncoder.load(criteo / "data")
    assert len(enc.pairs) == 325 and enc.columns["I1"] == "continuous" and enc.columns["C1"] == "categorical"
    cols, first = enc.file_columns(criteo / "test.tsv")
    assert first == 0 and cols[0] == "label" and len(cols) == 40
    got = enc.encode(enc.parse_text((criteo / "test.tsv").read_bytes(), cols)["table"])
    want = pq.read_table(criteo / "data" / "test").drop(["label"])
    assert got.column_names == want.column_names
    assert all(got[c].to_pylist() == want[c].to_pylist() for c in want.column_names)
    unlabelled = criteo / "nolabel.tsv"
    unlabelled.write_text("".join(x.split("\t", 1)[1] + "\n" for x in (criteo / "test.tsv").read_text().splitlines()))
    cols2, _ = enc.file_columns(unlabelled)
    assert cols2 == cols[1:]


@pytest.mark.parametrize("model", ["lr", "wide_deep"])
def test_raw_criteo_test_file_reproduces_metrics(criteo, tmp_path, model) -> None:
    from optinter.stages import run_train

    cfg = apply_overrides(RunConfig(), ["train.epochs=1", "model.embed_dim=4", "model.mlp_dims=16",
                                        "train.batch_size=256"])
    m = run_train(criteo / "data", model, tmp_path / model, cfg)
    p = Predictor.load(tmp_path / model)
    y = np.array([int(x.split("\t", 1)[0]) for x in (criteo / "test.tsv").read_text().splitlines()])
    assert_reproduces(y, p.predict(str(criteo / "test.tsv")), m)
    gz = tmp_path / "nolabel.tsv.gz"  # unlabelled and gzip-compressed
    gz.write_bytes(gzip.compress("".join(x.split("\t", 1)[1] + "\n"
                                         for x in (criteo / "test.tsv").read_text().splitlines()).encode()))
    assert_reproduces(y, p.predict(str(gz)), m)
