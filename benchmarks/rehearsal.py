"""Full-size rehearsal of the preprocessing stage: N Criteo-shaped rows through ``optinter preprocess``.

    python benchmarks/rehearsal.py --rows 2000000 8000000 [--dir SCRATCH] [--workers 2] [--keep]

For each N it writes N rows of Criteo's layout (``benchmarks/preprocess.py:write_criteo_like``: 13 integer
columns with Criteo's missing rates, 26 hashed categoricals drawn log-uniformly — a Zipf tail with
exponent 1 — over the real Criteo cardinalities, C3 10.1M, C12 8.4M, C21 7.0M, C16 5.5M, …) as pre-split
8:1:1 TSV files, then runs ``optinter preprocess --dataset criteo`` (the defaults: 13 bucketized integer
fields + 26 categorical, thresholds 20/20, all 325 crosses; LocalCluster ``--workers`` × 1 thread) as a
child process and prints, as one JSON line per N:

* ``wall_s``, ``rows_per_s``, ``cpu_s`` (the whole process tree), the job seconds of ``summary.json``;
* ``peak_pss_mib`` / ``peak_rss_mib``: the largest sum over the process tree (scheduler, nanny and worker
  processes included), sampled every 0.2 s, and ``pss_timeline_mib``: that sum at each tenth of the run —
  flat when memory does not grow with the rows;
* ``disk``: input, output (parquet + vocabularies) and the peak scratch beside it (free-space drop of the
  file system during the run, so other writers on the machine add noise), in GiB;
* the vocabulary sizes (field values and kept cross keys), which are what memory may grow with.

The files are kept for the next N only with ``--keep``; each N's input is deleted after its run otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/preprocess.py shadows it


def _bench_preprocess():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_preprocess", _HERE / "preprocess.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run_one(cmd: list[str], fs: Path, env: dict[str, str]) -> dict:
    """Run ``cmd``; sample the process tree's PSS / RSS / CPU and the file system's free space."""
    import psutil

    t0 = time.perf_counter()
    free0 = shutil.disk_usage(fs).free
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[float, int, int]] = []
    cpu: dict[int, float] = {}
    min_free = [free0]
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            pss = rss = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        mi = p.memory_full_info()
                        pss, rss = pss + mi.pss, rss + mi.rss
                        ct = p.cpu_times()
                        cpu[p.pid] = ct.user + ct.system
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                break
            samples.append((time.perf_counter() - t0, pss, rss))
            min_free[0] = min(min_free[0], shutil.disk_usage(fs).free)
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    timeline = []
    for k in range(1, 11):
        window = [s for s in samples if (k - 1) * wall / 10 <= s[0] < k * wall / 10]
        timeline.append(round(max((s[1] for s in window), default=0) / 2**20))
    return {"wall_s": round(wall, 1), "cpu_s": round(sum(cpu.values()), 1),
            "peak_pss_mib": round(max((s[1] for s in samples), default=0) / 2**20),
            "peak_rss_mib": round(max((s[2] for s in samples), default=0) / 2**20),
            "pss_timeline_mib": timeline, "scratch_peak_gib": round((free0 - min_free[0]) / 2**30, 2),
            "stdout": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blocksize", default="32MB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the generated input and the output")
    ap.add_argument("--log", default=None, help="append the JSON lines to this file too")
    a = ap.parse_args()
    bp = _bench_preprocess()
    base = Path(a.dir or tempfile.mkdtemp(prefix="rehearsal_"))
    base.mkdir(parents=True, exist_ok=True)
    repo = _HERE.parent
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    for n in a.rows:
        d = base / f"n{n}"
        d.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        files = {}
        for s, frac, seed in (("train", 0.8, 1), ("valid", 0.1, 2), ("test", 0.1, 3)):
            p = d / f"{s}.tsv"
            if not p.exists():
                bp.write_criteo_like(p, int(n * frac), a.seed * 1000 + seed)
            files[s] = p
        gen_s = time.perf_counter() - t0
        out = d / "out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "optinter.cli", "-q", "preprocess", "--dataset", "criteo",
               "--train", str(files["train"]), "--valid", str(files["valid"]), "--test", str(files["test"]),
               "--out", str(out), "--workers", str(a.workers), "--blocksize", a.blocksize]
        r = run_one(cmd, d, env)
        summary = json.loads((out / "summary.json").read_text())
        fmap = json.loads((out / "feature_map.json").read_text())
        rows = sum(summary["rows"].values())
        rec = {
            "rows": rows, "generate_s": round(gen_s, 1), "wall_s": r["wall_s"], "rows_per_s": round(rows / r["wall_s"]),
            "cpu_s": r["cpu_s"], "peak_pss_mib": r["peak_pss_mib"], "peak_rss_mib": r["peak_rss_mib"],
            "pss_timeline_mib": r["pss_timeline_mib"], "jobs_s": summary["seconds"],
            "disk_gib": {"input": round(sum(p.stat().st_size for p in files.values()) / 2**30, 2),
                         "output": round(_tree_size(out) / 2**30, 2),
                         "parquet": round(sum(_tree_size(out / s) for s in ("train", "valid", "test")) / 2**30, 2),
                         "vocab": round(_tree_size(out / "vocab") / 2**30, 3),
                         "scratch_peak_fs_drop": r["scratch_peak_gib"]},
            "field_values_kept": sum(f.get("vocab_size") or 0 for f in fmap["fields"]),
            "cross_keys_kept": sum(p["vocab_size"] for p in fmap["pairs"]),
            "cross_keys_distinct_train": sum(p.get("distinct_train") or 0 for p in fmap["pairs"]),
            "partitions": summary["partitions"], "workers": a.workers,
            "load_1min_end": round(os.getloadavg()[0], 1),
        }
        line = json.dumps(rec)
        print(line, flush=True)
        if a.log:
            with open(a.log, "a") as fh:
                fh.write(line + "\n")
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
