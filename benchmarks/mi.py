"""Time the mutual-information counting of the analyze stage on an encoded dataset.

    python benchmarks/mi.py DATA_DIR [--repeat 2] [--rows-per-task 1000000] [--distributed]

Prints rows, columns, seconds and rows × columns per second (best of ``--repeat``) for Dask's
threaded scheduler and, with ``--distributed``, a local in-process ``distributed.Client``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# benchmarks/preprocess.py would shadow the ``preprocess`` package: drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from optinter.analysis import joint_counts  # noqa: E402
from preprocess.feature_map import FeatureMap  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rows-per-task", type=int, default=1_000_000)
    ap.add_argument("--distributed", action="store_true")
    a = ap.parse_args()
    fm = FeatureMap.load(a.data)
    rows = fm.splits["train"].rows
    cols = len([f for f in fm.categorical if not f.multivalent]) + fm.num_pairs
    runs = {"threads": lambda: joint_counts(a.data, rows_per_task=a.rows_per_task)}
    client = None
    if a.distributed:
        from distributed import Client

        client = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None)
        runs["distributed (in-process, 2 threads)"] = lambda: joint_counts(a.data, client=client,
                                                                           rows_per_task=a.rows_per_task)
    print(f"{fm.dataset}: {rows:,} train rows, {cols} columns ({fm.num_pairs} pairs)")
    for name, fn in runs.items():
        s = _best(fn, a.repeat)
        print(f"  {name:38s} {s:7.2f} s   {rows * cols / s / 1e6:8.1f} M cells/s")
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
