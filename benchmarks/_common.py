"""Pieces shared by the benchmark scripts: Criteo-shaped rows and a process-tree sampler.

Each script puts its own folder first on ``sys.path``, imports this module as ``_common`` and drops the folder
from the path again (all of it, as ``python benchmarks/X.py`` put it there too): ``benchmarks/preprocess.py``
would shadow the ``preprocess`` package. The insert, not ``sys.path[0]`` as the interpreter set it, makes the
import work however the script's code is run — as a script, re-run as ``__mp_main__`` by a spawned Dask worker
(which inherits the trimmed path), or loaded from its file. The leading underscore keeps the name clear of any
installed package; only the standard library and numpy are imported while the folder is on the path (pyarrow
and psutil inside the functions), and nothing here imports the project's packages. A test loads this file
with ``importlib.util.spec_from_file_location``, registering the module in ``sys.modules`` before running
it (the dataclass below needs that)."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Criteo's columns: the label, 13 integer columns, 26 hashed categoricals.
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
#: Distinct values of C1..C26 in the real Criteo data.
CARDS = [1460, 583, 10_131_227, 2_202_608, 305, 24, 12_517, 633, 3, 93_145, 5_683, 8_351_593, 3_194, 27,
         14_992, 5_461_306, 10, 5_652, 2_173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572]
#: Fraction of blank cells of C1..C26.
MISSING = [0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0,
           0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44]
#: Largest value (about) of I1..I13.
INT_MAX = [300, 20000, 60000, 400, 2_000_000, 200_000, 5000, 5000, 10000, 10, 200, 1000, 5000]
#: Fraction of blank cells of I1..I13.
INT_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22]
#: The splits in the order they are written, each with its seed offset.
SPLIT_SEEDS = (("train", 1), ("valid", 2), ("test", 3))


def write_criteo_like(path: Path, n: int, seed: int, chunk: int = 250_000) -> None:
    """``n`` rows of Criteo's layout (no header, tab-separated), written in chunks (memory stays flat)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            cols = [pa.array((rng.random(m) < 0.25).astype(np.int8))]
            for j in range(13):
                v = np.floor(np.exp(rng.random(m) * math.log(INT_MAX[j] + 2))).astype(np.int64) - 2
                cols.append(pa.array(v, mask=rng.random(m) < INT_MISSING[j]))
            for j, (k, miss) in enumerate(zip(CARDS, MISSING)):
                rank = np.floor(np.exp(rng.random(m) * math.log(k))).astype(np.uint64)
                h = (rank * np.uint64(2654435761) + np.uint64(j * 97 + 13)) & np.uint64(0xFFFFFFFF)
                cols.append(pa.array(h, mask=rng.random(m) < miss))
            t = pa.table(cols, names=CRITEO_COLUMNS)
            pcsv.write_csv(t, fh, write_options=pcsv.WriteOptions(include_header=False, delimiter="\t",
                                                                   quoting_style="none"))


def split_8_1_1(n: int) -> dict[str, int]:
    """Rows per split when ``n`` rows are pre-split 8:1:1 into train / valid / test."""
    return {"train": int(n * 0.8), "valid": int(n * 0.1), "test": int(n * 0.1)}


def write_criteo_splits(folder: Path, rows: Mapping[str, int], seed: int) -> dict[str, Path]:
    """``folder``/{train,valid,test}.tsv with ``rows[split]`` Criteo-shaped rows each, drawn with the seed
    ``seed`` + 1, 2, 3 in that order; a file already there is kept as it is (reused). Returns split → path."""
    files = {}
    for s, offset in SPLIT_SEEDS:
        p = folder / f"{s}.tsv"
        if not p.exists():
            write_criteo_like(p, rows[s], seed + offset)
        files[s] = p
    return files


@dataclass
class TreeRun:
    """What :func:`run_sampled` saw of a child process and its descendants."""

    returncode: int
    stdout: str
    stderr: str | None  # None unless captured
    wall_s: float
    #: one (seconds since the start, PSS summed over the tree, RSS summed over the tree) per sample, in bytes
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    #: CPU seconds (user + system) of every process seen, at its last sample
    cpu: dict[int, float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the whole process tree (robust to other load on the machine)."""
        return sum(self.cpu.values())

    @property
    def peak_pss(self) -> int:
        """The largest PSS sum over the tree in any sample, in bytes (shared pages counted once)."""
        return max((s[1] for s in self.samples), default=0)

    @property
    def peak_rss(self) -> int:
        """The largest RSS sum over the tree in any sample, in bytes."""
        return max((s[2] for s in self.samples), default=0)


def run_sampled(cmd: list[str], interval: float, env: Mapping[str, str] | None = None,
                capture_stderr: bool = False, on_sample: Callable[[], None] | None = None) -> TreeRun:
    """Run ``cmd`` to its end (stdout captured as text; stderr too with ``capture_stderr``, else inherited)
    while a thread samples, every ``interval`` seconds, the summed PSS / RSS of its whole process tree
    (scheduler, nanny and worker processes included) with psutil, and the CPU time of each process;
    ``on_sample`` is called after each sample."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture_stderr else None,
                            text=True, env=None if env is None else dict(env))
    samples: list[tuple[float, int, int]] = []
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            pss = rss = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        mi = p.memory_full_info()  # PSS from /proc/PID/smaps_rollup: shared pages counted once
                        pss, rss = pss + mi.pss, rss + mi.rss
                        ct = p.cpu_times()
                        cpu[p.pid] = ct.user + ct.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                break
            samples.append((time.perf_counter() - t0, pss, rss))
            if on_sample is not None:
                on_sample()
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    return TreeRun(proc.returncode, out, err, time.perf_counter() - t0, samples, cpu)
