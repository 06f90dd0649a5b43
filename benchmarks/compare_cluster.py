"""``optinter compare`` one job after the other vs on a Dask LocalCluster: wall time, ratio, metrics.

    python benchmarks/compare_cluster.py [--data /tmp/work/criteo] [--models lr,fm,fnn,ipnn,deepfm,optinter]
                                         [--seeds 3] [--workers 2] [--threads 1] [--set key=value ...]

Runs the same ``optinter compare --tables V`` twice, each as a fresh process with its own empty job
cache: ``--workers 1`` (every job in the one process, torch with every core) and ``--workers W
--threads T`` (W single-job workers of T threads; the LocalCluster's start-up counts). Prints the
whole-process wall time of each, the ratio, the summed per-job seconds, and checks that every job
(model × seed) has bit-identical test AUC and log loss in both — training is thread-count invariant,
so any difference is a bug. ``--data``: an encoded Criteo folder; built from
../shared/data/criteo/split when missing (as benchmarks/criteo_table.py does).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/preprocess.py shadows preprocess

REPO = Path(_HERE).parent
DEFAULT_MODELS = "lr,fm,fnn,ipnn,deepfm,optinter"


def run_mode(data: Path, work: Path, label: str, models: str, seeds: int, jobs: list[str],
             overrides: list[str]) -> dict[str, object]:
    """One ``optinter compare`` process; returns its wall time and its runs.csv rows."""
    out, cache = work / label / "out", work / label / "cache"
    cmd = [sys.executable, "-m", "optinter.cli", "compare", "--data", str(data), "--out", str(out), "--cache",
           str(cache), "--models", models, "--seeds", str(seeds), "--tables", "V", *jobs]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPTINTER_JOB_WORKERS", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{label}: optinter compare failed (exit {proc.returncode})")
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    return {"wall": wall, "rows": rows, "job_seconds": sum(float(r["job_seconds"] or 0) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/work/criteo")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    import importlib.util

    spec = importlib.util.spec_from_file_location("_criteo_table", Path(_HERE) / "criteo_table.py")
    ct = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ct)  # type: ignore[union-attr]
    data = ct.ensure_data(Path(args.data))

    work = Path(args.work or tempfile.mkdtemp(prefix="optinter-compare-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    n_jobs = len(args.models.split(",")) * args.seeds
    print(f"compare --tables V: {args.models} x {args.seeds} seeds = {n_jobs} jobs on {data} ({os.cpu_count()} cores)",
          flush=True)
    serial = run_mode(data, work, "serial", args.models, args.seeds, ["--workers", "1"], args.overrides)
    print(f"serial (1 process, torch default threads): {serial['wall']:.1f} s wall", flush=True)
    par = run_mode(data, work, "cluster", args.models, args.seeds,
                   ["--workers", str(args.workers), "--threads", str(args.threads)], args.overrides)
    print(f"cluster ({args.workers} workers x {args.threads} thread): {par['wall']:.1f} s wall", flush=True)

    a = {r["job"]: r for r in serial["rows"]}  # type: ignore[union-attr]
    b = {r["job"]: r for r in par["rows"]}  # type: ignore[union-attr]
    same_keys = all(a[j]["key"] == b[j]["key"] for j in a) and a.keys() == b.keys()
    differ = [j for j in a if j in b and (a[j]["test_auc"], a[j]["test_logloss"]) != (b[j]["test_auc"], b[j]["test_logloss"])]
    result = {
        "jobs": n_jobs, "cores": os.cpu_count(), "serial_wall_s": round(serial["wall"], 1),  # type: ignore[arg-type]
        "cluster_wall_s": round(par["wall"], 1), "workers": args.workers, "threads": args.threads,  # type: ignore[arg-type]
        "speedup": round(serial["wall"] / par["wall"], 2),  # type: ignore[operator]
        "serial_job_s": round(serial["job_seconds"], 1), "cluster_job_s": round(par["job_seconds"], 1),  # type: ignore[arg-type]
        "same_keys": same_keys, "identical_metrics": not differ, "differing_jobs": differ,
    }
    print("| job | test AUC (serial) | test AUC (cluster) | s (serial) | s (cluster) |")
    print("|---|---|---|---|---|")
    for j in a:
        print(f"| {j} | {float(a[j]['test_auc']):.6f} | {float(b[j]['test_auc']):.6f} | "
              f"{float(a[j]['job_seconds']):.1f} | {float(b[j]['job_seconds']):.1f} |")
    print(json.dumps(result))
    if differ or not same_keys:
        raise SystemExit(f"metrics or keys differ between the serial and the cluster run: {differ}")


if __name__ == "__main__":
    main()
