"""Benchmark of the preprocessing stage: Dask (``run_preprocess``) vs a single-process pandas version.

    python benchmarks/preprocess.py --rows 1000000 4000000 [--repeat 2] [--continuous-mode minmax]
    python benchmarks/preprocess.py --criteo ../shared/data/criteo/split --copies 8 --continuous-mode minmax --repeat 2

For each N it writes N Criteo-shaped rows (or, with ``--criteo``, takes the real Criteo sample with its
train split repeated ``--copies`` times) (label, 13 integer columns with blanks, 26 hashed
categoricals drawn log-uniformly — Zipf with exponent 1 — over realistic Criteo cardinalities) as
pre-split 8:1:1 TSV files, then runs, each in a fresh child process:

* ``dask``:   ``run_preprocess`` (LocalCluster, ``--workers`` x 1 thread, all 325 crosses of C1..C26);
* ``pandas``: the same steps in one pandas process (read, bucketize, OOV vocab, 325 cross vocabs,
  encode, write parquet).

It prints wall seconds, rows/s, the CPU seconds and the peak memory of the child's whole process tree
(scheduler, nanny and worker processes included; RSS summed and PSS summed, sampled every 50 ms with psutil), the 1-minute load
average when the run ended (other jobs on the machine stretch wall time, not CPU time), and the
pandas/dask ratios of wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

# the shared helpers (``_common``) come from this folder, which then leaves the import path again:
# benchmarks/preprocess.py would shadow the ``preprocess`` package (see ``_common``'s docstring)
_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import CRITEO_COLUMNS, run_sampled, split_8_1_1, write_criteo_splits  # noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


# ---- the single-process pandas implementation of the same steps ------------------------------------
def pandas_impl(files: dict[str, str], out: str, oov_t: int = 20, cross_t: int = 20, mode: str = "bucketize") -> dict:
    """``mode`` ``bucketize``: the 13 integer columns become categorical fields (floor(ln(x)²)); ``minmax``:
    they stay continuous, scaled by the train min / max (missing → 0), and only C1..C26 get vocabularies."""
    import pandas as pd

    dfs = {s: pd.read_csv(p, sep="\t", header=None, names=CRITEO_COLUMNS, dtype=str, keep_default_na=False)
           for s, p in files.items()}
    scaled: dict[str, dict[str, np.ndarray]] = {s: {} for s in dfs}
    if mode == "minmax":
        for i in range(1, 14):
            xs = {s: pd.to_numeric(df[f"I{i}"].replace("", np.nan)).to_numpy(np.float64) for s, df in dfs.items()}
            lo, hi = np.nanmin(xs["train"]), np.nanmax(xs["train"])
            for s, x in xs.items():
                y = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)
                scaled[s][f"I{i}"] = np.where(np.isnan(x), 0.0, y).astype(np.float32)
            for df in dfs.values():
                del df[f"I{i}"]
    for df in (dfs.values() if mode != "minmax" else ()):
        for i in range(1, 14):
            x = pd.to_numeric(df[f"I{i}"].replace("", np.nan)).to_numpy(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                b = np.where(x > 2, np.floor(np.log(np.where(x > 2, x, 1.0)) ** 2), np.trunc(np.nan_to_num(x)))
            tok = pd.Series(b.astype(np.int64)).astype(str)
            tok[np.isnan(x)] = ""
            df[f"I{i}"] = tok.to_numpy()
    fields = [c for c in CRITEO_COLUMNS[1:] if c in dfs["train"].columns]
    enc = {s: {"label": df["label"].astype(np.float32).to_numpy(), **scaled[s]} for s, df in dfs.items()}
    sizes = {}
    for f in fields:
        vc = dfs["train"][f].value_counts()
        vc = vc[vc >= oov_t]
        kept = sorted(zip(vc.index, vc.to_numpy()), key=lambda t: (-t[1], t[0]))
        idx = pd.Index([v for v, _ in kept])
        sizes[f] = len(kept) + 2
        for s, df in dfs.items():
            pos = idx.get_indexer(df[f])
            enc[s][f] = np.where(pos >= 0, pos + 2, 1).astype(np.int32)
    dfs.clear()
    cross = [f"C{i}" for i in range(1, 27)]
    for i, a in enumerate(cross):
        for b in cross[i + 1:]:
            key = enc["train"][a].astype(np.int64) * sizes[b] + enc["train"][b]
            vc = pd.Series(key).value_counts()
            vc = vc[vc >= cross_t]
            order = np.lexsort((vc.index.to_numpy(), -vc.to_numpy()))
            idx = pd.Index(vc.index.to_numpy()[order])
            for s in enc:
                k = enc[s][a].astype(np.int64) * sizes[b] + enc[s][b]
                pos = idx.get_indexer(k)
                enc[s][f"{a}|{b}"] = np.where(pos >= 0, pos + 2, 1).astype(np.int32)
    os.makedirs(out, exist_ok=True)
    for s, cols in enc.items():
        pd.DataFrame(cols).to_parquet(os.path.join(out, f"{s}.parquet"), index=False)
    return {"rows": {s: len(c["label"]) for s, c in enc.items()}}


def dask_impl(files: dict[str, str], out: str, workers: int, blocksize: int, mode: str = "bucketize") -> dict:
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    cfg = PreprocessConfig(dataset="criteo", out=out, train=[files["train"]], valid=[files["valid"]],
                           test=[files["test"]], n_workers=workers, blocksize=blocksize, continuous_mode=mode)
    s = run_preprocess(cfg)
    return {"rows": s["rows"], "seconds": s["seconds"]}


# ---- measuring --------------------------------------------------------------------------------------
def run_child(args: list[str]) -> tuple[dict, float, dict[str, float], float]:
    """Run this script as a child; return (its JSON result, wall seconds, peak memory of its process tree in MiB
    — ``{"rss": summed RSS, "pss": summed PSS}``, each the peak over the samples of the sum over every process
    of the tree (scheduler, nanny and worker processes included) —, CPU seconds of its process tree — last
    sample of every process seen; robust to other load on the machine)."""
    r = run_sampled([sys.executable, __file__, *args], 0.05)
    if r.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {r.returncode}")
    peak = {"rss": r.peak_rss / 2**20, "pss": r.peak_pss / 2**20}
    return json.loads(r.stdout.strip().splitlines()[-1]), r.wall_s, peak, r.cpu_s


def criteo_copies(src: Path, dest: Path, copies: int) -> dict[str, str]:
    """The real Criteo sample (``src``/{train,valid,test}.tsv.gz): train concatenated ``copies`` times,
    valid and test once, as plain TSV in ``dest`` (written once, reused)."""
    import gzip
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    files = {}
    for s, k in (("train", copies), ("valid", 1), ("test", 1)):
        p = dest / f"{s}_x{k}.tsv"
        if not p.exists():
            tmp = p.with_suffix(".part")
            with open(tmp, "wb") as fo:
                for _ in range(k):
                    with gzip.open(src / f"{s}.tsv.gz", "rb") as fi:
                        shutil.copyfileobj(fi, fo, 1 << 22)
            tmp.rename(p)
        files[s] = str(p)
    return files


def _count_rows(path: str) -> int:
    n = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            n += chunk.count(b"\n")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--criteo", metavar="DIR", help="use the real Criteo sample split in DIR (train/valid/test.tsv.gz) "
                                                     "instead of generated rows: train repeated --copies times")
    ap.add_argument("--copies", type=int, default=8, help="train copies with --criteo (default 8: 877,688 rows)")
    ap.add_argument("--continuous-mode", default="bucketize", choices=("bucketize", "minmax"),
                    help="the 13 integer columns: log² buckets (categorical) or min-max (continuous), both impls")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blocksize", type=int, default=32 << 20)
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per implementation (alternating dask, pandas); the ratios use the fastest run "
                         "of each, which is the least disturbed by other jobs on the machine")
    ap.add_argument("--pandas-max-rows", type=int, default=2_000_000,
                    help="skip the pandas run above this many rows (it holds every split and all 325 pair "
                         "columns in memory: ~6 GB at 4M rows)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--child", choices=("dask", "pandas"), help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        files = json.loads(a.files)
        res = (dask_impl(files, a.out, a.workers, a.blocksize, a.continuous_mode) if a.child == "dask"
               else pandas_impl(files, a.out, mode=a.continuous_mode))
        print(json.dumps(res))
        return
    base = Path(a.dir or tempfile.mkdtemp(prefix="bench_pp_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"continuous mode {a.continuous_mode}, {a.workers} workers x 1 thread, blocksize {a.blocksize >> 20} MiB; "
          f"peak memory = the largest sum over the whole process tree (RSS summed / PSS summed)")
    print(f"{'rows':>9} {'impl':>7} {'seconds':>8} {'rows/s':>9} {'CPU s':>7} {'RSS MiB':>8} {'PSS MiB':>8}  notes")
    inputs: list[tuple[int, Path, dict[str, str]]] = []
    if a.criteo:
        files = criteo_copies(Path(a.criteo), base / f"criteo_x{a.copies}", a.copies)
        inputs.append((sum(_count_rows(p) for p in files.values()), base / f"criteo_x{a.copies}", files))
    else:
        for n in a.rows:
            d = base / f"n{n}"
            d.mkdir(exist_ok=True)
            files = {s: str(p) for s, p in write_criteo_splits(d, split_8_1_1(n), n).items()}
            inputs.append((n, d, files))
    for n, d, files in inputs:
        mb = sum(os.path.getsize(p) for p in files.values()) / 2**20
        res: dict[str, list[tuple[float, float, float]]] = {}
        for _ in range(max(1, a.repeat)):
            for impl in ("dask", "pandas"):
                if impl == "pandas" and (a.skip_pandas or n > a.pandas_max_rows):
                    continue
                out = d / f"out_{impl}"
                r, wall, peak, cpu_s = run_child(["--child", impl, "--files", json.dumps(files), "--out", str(out),
                                                  "--workers", str(a.workers), "--blocksize", str(a.blocksize),
                                                  "--continuous-mode", a.continuous_mode])
                res.setdefault(impl, []).append((wall, cpu_s, peak["pss"]))
                note = f"{mb:.0f} MiB input, load {os.getloadavg()[0]:.1f}"
                if impl == "dask":
                    note += " jobs " + json.dumps(r["seconds"])
                print(f"{n:>9} {impl:>7} {wall:>8.1f} {n / wall:>9.0f} {cpu_s:>7.1f} {peak['rss']:>8.0f} "
                      f"{peak['pss']:>8.0f}  {note}", flush=True)
        if "pandas" in res:
            best = {k: (min(w for w, _, _ in v), min(c for _, c, _ in v), min(m for _, _, m in v)) for k, v in res.items()}
            print(f"{n:>9} ratio pandas/dask: wall time {best['pandas'][0] / best['dask'][0]:.2f}x, "
                  f"CPU time {best['pandas'][1] / best['dask'][1]:.2f}x, peak PSS {best['pandas'][2] / best['dask'][2]:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
