"""Full-size rehearsal of the preprocessing stage: N Criteo-shaped rows through ``optinter preprocess``.

    python benchmarks/rehearsal.py --rows 2000000 8000000 [--dir SCRATCH] [--input-dir INPUT] [--workers 2] [--keep]

For each N it writes N rows of Criteo's layout (``benchmarks/_common.py:write_criteo_like``: 13 integer
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
``--input-dir`` puts the generated TSV files on another file system than the scratch and output (say
``/dev/shm`` when the disk cannot hold input, scratch and output at once: the full 45.8M rows need ~12.6 GiB
of input beside ~65 GiB of scratch + output); the disk figures then still measure the scratch folder only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# the shared helpers (``_common``) come from this folder, which then leaves the import path again:
# benchmarks/preprocess.py would shadow the ``preprocess`` package (see ``_common``'s docstring)
_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import run_sampled, split_8_1_1, write_criteo_splits  # noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


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
    free0 = shutil.disk_usage(fs).free
    min_free = [free0]

    def disk() -> None:
        min_free[0] = min(min_free[0], shutil.disk_usage(fs).free)

    r = run_sampled(cmd, 0.2, env=env, capture_stderr=True, on_sample=disk)
    samples, wall = r.samples, r.wall_s
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{(r.stderr or '')[-3000:]}")
    timeline = []
    for k in range(1, 11):
        window = [s for s in samples if (k - 1) * wall / 10 <= s[0] < k * wall / 10]
        timeline.append(round(max((s[1] for s in window), default=0) / 2**20))
    return {"wall_s": round(wall, 1), "cpu_s": round(r.cpu_s, 1),
            "peak_pss_mib": round(r.peak_pss / 2**20), "peak_rss_mib": round(r.peak_rss / 2**20),
            "pss_timeline_mib": timeline, "scratch_peak_gib": round((free0 - min_free[0]) / 2**30, 2),
            "stdout": r.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--input-dir", default=None,
                    help="folder for the generated TSV input, e.g. on another file system (default: --dir)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--blocksize", default="32MB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the generated input and the output")
    ap.add_argument("--log", default=None, help="append the JSON lines to this file too")
    a = ap.parse_args()
    base = Path(a.dir or tempfile.mkdtemp(prefix="rehearsal_"))
    base.mkdir(parents=True, exist_ok=True)
    repo = _HERE.parent
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    for n in a.rows:
        d = base / f"n{n}"
        d.mkdir(exist_ok=True)
        src = Path(a.input_dir) / f"n{n}" if a.input_dir else d
        src.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        files = write_criteo_splits(src, split_8_1_1(n), a.seed * 1000)
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
            shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
