"""Seeded train/valid/test split that does not depend on partitioning.

Each row's split is a pure function of ``(seed, file index, byte offset of the row's line in the
(decompressed) file)``: the three numbers are mixed by SplitMix64 into a uniform draw in [0, 1),
which is bucketed by the cumulative ratios.  However the files are cut into partitions, a row
always lands in the same split, and each split keeps the input row order.
"""

from __future__ import annotations

import numpy as np

from preprocess.errors import PreprocessError

SPLIT_NAMES = ("train", "valid", "test")
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniform_hash(seed: int, file_index: int, offsets: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) per row from ``(seed, file_index, offset)`` (shape N)."""
    with np.errstate(over="ignore"):
        base = _mix(np.array([(seed & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64) * _GOLD + np.uint64(file_index + 1))
        z = _mix(np.asarray(offsets, dtype=np.uint64) * _GOLD + base[0])
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def check_ratios(ratios: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 for x in r) or sum(r) <= 0:
        raise PreprocessError(f"parameter 'ratios': need three non-negative numbers (train, valid, test), got {ratios!r}",
                              reason="settings")
    s = sum(r)
    return (r[0] / s, r[1] / s, r[2] / s)


def assign_split(seed: int, file_index: int, offsets: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test; int8, shape N)."""
    r = check_ratios(ratios)
    u = uniform_hash(seed, file_index, offsets)
    cuts = np.array([r[0], r[0] + r[1]])
    return np.searchsorted(cuts, u, side="right").astype(np.int8)
