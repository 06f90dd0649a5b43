"""Fixtures for the preprocessing tests: tiny Criteo-shaped files and one shared Dask cluster."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from preprocess.schema import CRITEO_COLUMNS

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def criteo_lines(n: int, seed: int) -> list[str]:
    """``n`` Criteo-format lines (label, 13 ints with blanks/negatives, 26 small-alphabet categoricals)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        row = [str(int(rng.random() < 0.3))]
        for i in range(13):
            r = rng.random()
            row.append("" if r < 0.15 else str(int(rng.integers(-2, 3))) if r < 0.3 else str(int(rng.zipf(1.5))))
        for j in range(26):
            card = 3 + 4 * (j % 7)
            r = rng.random()
            row.append("" if r < 0.1 else f"{int(min(rng.zipf(1.3), card)) * 7919 + j:08x}")
        lines.append("\t".join(row))
    return lines


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def tiny_criteo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny_criteo")
    out = {s: write_lines(d / f"{s}.tsv", criteo_lines(n, seed)) for s, n, seed in
           (("train", 3000, 1), ("valid", 400, 2), ("test", 400, 3))}
    out["raw"] = write_lines(d / "raw.tsv", criteo_lines(4000, 4))
    out["raw_gz"] = write_lines(d / "raw.tsv.gz", criteo_lines(4000, 4), gz=True)
    return out


@pytest.fixture(scope="session")
def scheduler() -> str:
    """Address of one in-process LocalCluster (2 worker threads) shared by the pipeline tests."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


assert len(CRITEO_COLUMNS) == 40
