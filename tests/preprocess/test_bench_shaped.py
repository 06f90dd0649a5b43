"""A small run on benchmark-shaped data (benchmarks/_common.py's generator: 26 Zipf categoricals over
Criteo cardinalities; crosses of 8 of them, with key spaces both below and far above the rows),
checked against the pandas re-computation, and byte-identical when the cross reduce is cut into many
key ranges and the input into other partitions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import pp_reference as ref
from preprocess import jobs
from preprocess.cross_vocab import DENSE_LOOKUP_FACTOR
from preprocess.feature_map import FeatureMap
from preprocess.pipeline import PreprocessConfig, run_preprocess

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "_common.py"
THRESHOLD = 3
CROSS = ["C1", "C3", "C4", "C6", "C9", "C12", "C16", "C20"]


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory) -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("bench_common", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # before it runs: its dataclass looks its module up there
    spec.loader.exec_module(mod)
    d = tmp_path_factory.mktemp("bench_shaped")
    files = {}
    for s, n, seed in (("train", 16_000, 1), ("valid", 2_000, 2), ("test", 2_000, 3)):
        files[s] = str(d / f"{s}.tsv")
        mod.write_criteo_like(Path(files[s]), n, seed, chunk=5_000)
    return files


def _run(files: dict[str, str], out: Path, scheduler: str, blocksize: int) -> Path:
    run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), train=[files["train"]], valid=[files["valid"]],
                                    test=[files["test"]], oov_threshold=THRESHOLD, cross_threshold=THRESHOLD,
                                    scheduler=scheduler, blocksize=blocksize, cross_fields=CROSS))
    return out


def test_bench_shaped_ids_match_pandas_and_bucketing(bench_files, tmp_path, scheduler, monkeypatch) -> None:
    a = _run(bench_files, tmp_path / "a", scheduler, 1 << 20)
    fm = FeatureMap.load(a)
    assert len(fm.pairs) == len(CROSS) * (len(CROSS) - 1) // 2
    raw = {s: ref.read_criteo(p) for s, p in bench_files.items()}
    enc = {s: pq.read_table(a / s).to_pandas() for s in raw}
    vocab = {f.name: f.vocab_size for f in fm.fields}
    ids: dict[str, dict[str, np.ndarray]] = {s: {} for s in raw}
    for f in ("C1", "C3", "C4", "C9", "C12", "C16", "C20"):
        voc = ref.vocab(raw["train"][f], THRESHOLD)
        assert vocab[f] == len(voc) + 2
        for s in raw:
            ids[s][f] = ref.encode(raw[s][f], voc)
            np.testing.assert_array_equal(enc[s][f].to_numpy(), ids[s][f], err_msg=f"{s} {f}")
    n_rows = {s: len(raw[s]) for s in raw}
    # dense lookups (small key space) and hash lookups (key space larger than the rows) both occur
    checked = [("C3", "C4"), ("C3", "C12"), ("C4", "C16"), ("C1", "C9"), ("C9", "C20"), ("C1", "C12")]
    spaces = [vocab[x] * vocab[y] for x, y in checked]
    small = min(n_rows.values())  # valid / test: one partition each
    assert min(spaces) <= DENSE_LOOKUP_FACTOR * small and max(spaces) > max(DENSE_LOOKUP_FACTOR * small, 1 << 16)
    for x, y in checked:
        cv = ref.cross_vocab(ids["train"][x], ids["train"][y], THRESHOLD)
        p = next(q for q in fm.pairs if q.name == f"{x}|{y}")
        assert p.vocab_size == len(cv) + 2
        for s in raw:
            exp = np.array([cv.get(k, 1) for k in zip(ids[s][x].tolist(), ids[s][y].tolist())])
            np.testing.assert_array_equal(enc[s][f"{x}|{y}"].to_numpy(), exp, err_msg=f"{s} {x}|{y}")
    # many key ranges per pair and other partitions: byte-identical parquet and vocabularies
    seen: list[list[tuple[int, int, int]]] = []
    plan = jobs.plan_cross_buckets

    def spy(*args, **kw):
        seen.append(plan(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(jobs, "SLOT_ENTRIES", 2_000)
    monkeypatch.setattr(jobs, "READ_ENTRIES", 5_000)  # runs of a few neighbouring slots read at once
    monkeypatch.setattr(jobs, "plan_cross_buckets", spy)
    b = _run(bench_files, tmp_path / "b", scheduler, 300_000)
    assert max(n for n, _, _ in seen[0]) > 4
    assert len(list((b / "train").glob("*.parquet"))) > len(list((a / "train").glob("*.parquet")))
    for s in raw:
        ta, tb = pq.read_table(a / s), pq.read_table(b / s)
        assert ta.equals(tb), s
    for f in ("vocab/cross.npz", "vocab/cross.json", "vocab/fields.json", "feature_map.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
