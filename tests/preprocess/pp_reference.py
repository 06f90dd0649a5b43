"""An independent pandas re-computation of the stage, used only to check numbers in tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from preprocess.schema import CRITEO_COLUMNS


def read_criteo(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=CRITEO_COLUMNS, dtype=str, keep_default_na=False)


def bucket_token(v: str) -> str:
    if v == "":
        return ""
    x = float(v)
    return str(int(math.floor(math.log(x) ** 2))) if x > 2 else str(int(x))


def vocab(values: pd.Series, threshold: int) -> dict[str, int]:
    """value → id (2.. by count desc, value asc) for values seen >= threshold times."""
    vc = values.value_counts()
    kept = sorted(((v, c) for v, c in vc.items() if c >= threshold), key=lambda t: (-t[1], t[0]))
    return {v: i + 2 for i, (v, _) in enumerate(kept)}


def encode(values: pd.Series, voc: dict[str, int]) -> np.ndarray:
    return values.map(lambda v: voc.get(v, 1)).to_numpy(np.int64)


def cross_vocab(a: np.ndarray, b: np.ndarray, threshold: int) -> dict[tuple[int, int], int]:
    """(id_a, id_b) → cross id (2.. by count desc, then (id_a, id_b) asc)."""
    counts = pd.Series(list(zip(a.tolist(), b.tolist()))).value_counts()
    kept = sorted(((k, c) for k, c in counts.items() if c >= threshold), key=lambda t: (-t[1], t[0]))
    return {k: i + 2 for i, (k, _) in enumerate(kept)}
