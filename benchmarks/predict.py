"""Scoring speed: raw Criteo-shaped rows → click probabilities, and the served model's latency.

    python benchmarks/predict.py [--rows 500000] [--workers 2] [--requests 300] [--repeat 1] [--paper] [--dir DIR]

1. Writes ``--rows`` Criteo-shaped rows (the generator of ``benchmarks/_common.py``) as the train
   file plus ``rows/10`` valid and test rows, and preprocesses them with the Dask stage
   (LocalCluster ``--workers`` x 1 thread, all 325 crosses, thresholds 20): its rows/s (all rows read
   / the stage's seconds, cluster start included) is the reference.
2. Builds a re-trained OptInter (a random architecture, ≈ 1/3 memorize / factorize / naive like
   Table VI's [117, 98, 110]) and DeepFM on that feature map with the defaults derived from it
   (``default_config(fmap, model)``; ``--paper``: Table IV, s1 = 20, MLP 700x5) and saves each as a trained model
   folder (``optinter.stages.save_bundle``; random weights: the speed does not depend on them).
3. Scores the train file's raw rows with ``optinter.scoring.score_files`` (what ``optinter predict``
   runs): on a LocalCluster of the same shape (cluster start and model loading included), and in
   this process (``--local``; one torch thread, the default). Prints rows/s from file to probabilities.
4. Serves each model with ``mlflow models serve -m <model> --env-manager local`` on 127.0.0.1 and
   sends ``--requests`` single-row requests one after the other (after 20 warm-up requests), raw test
   rows as ``dataframe_split`` JSON: p50 / p99 latency as the client sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the shared helpers (``_common``) come from this folder, which then leaves the import path again:
# benchmarks/preprocess.py would shadow the ``preprocess`` package (see ``_common``'s docstring)
_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from _common import CRITEO_COLUMNS, write_criteo_splits  # noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402


def build_models(data: Path, out: Path, paper: bool, seed: int = 0) -> dict[str, Path]:
    """A re-trained OptInter (random architecture) and DeepFM saved as trained model folders."""
    import torch

    from optinter.architecture import random_architecture
    from optinter.config import default_config, paper_config
    from optinter.registry import build_model
    from optinter.stages import save_bundle
    from preprocess.feature_map import FeatureMap

    fmap = FeatureMap.load(data)
    dirs = {}
    for name in ("optinter", "deepfm"):
        cfg = paper_config("criteo", name) if paper else default_config(fmap, name)
        torch.manual_seed(seed)
        arch = random_architecture(fmap, seed) if name == "optinter" else None
        model = build_model(name, fmap, cfg.model, arch=arch)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        save_bundle(d, name, model, cfg, fmap, arch, data)
        counts = f", [m, f, n] = {arch.counts()}" if arch is not None else ""
        m = cfg.model
        print(f"# {name}: {model.num_params():,} parameters{counts}; reads {len(model.required_pairs())} pair columns; "
              f"s1 = {m.embed_dim}, s2 = {m.cross_embed_dim}, MLP {m.mlp_dims}", flush=True)
        dirs[name] = d
    return dirs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_latency(bundle: Path, test_file: Path, requests: int, scratch: Path,
                   omp_threads: int | None = None) -> dict[str, float]:
    """p50 / p99 ms of single-row ``POST /invocations`` against ``mlflow models serve``
    (``omp_threads``: its ``OMP_NUM_THREADS``; None = torch's default)."""
    import httpx

    from optinter.predict import Predictor
    from optinter.pyfunc import save_pyfunc_model

    model_dir = scratch / f"mlflow-{bundle.name}"
    if not model_dir.exists():
        assert save_pyfunc_model(bundle, model_dir) is not None
    kinds = Predictor.load(bundle).raw_columns
    rows = []
    with open(test_file) as fh:
        for line, _ in zip(fh, range(requests + 20)):
            cells = dict(zip(CRITEO_COLUMNS, line.rstrip("\n").split("\t")))
            rows.append([(float(cells[c]) if cells[c] else None) if kinds[c] == "continuous" else cells[c]
                         for c in kinds])
    port = _free_port()
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": os.pathsep.join([str(_HERE.parent), os.environ.get("PYTHONPATH", "")])}
    if omp_threads:
        env["OMP_NUM_THREADS"] = str(omp_threads)
    log = open(scratch / f"serve-{bundle.name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as client:
            deadline = time.time() + 120
            while True:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"mlflow models serve did not start: {(scratch / log.name).read_text()[-2000:]}")
                try:
                    if client.get(f"{url}/ping").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            ms = []
            for i, row in enumerate(rows):
                t0 = time.perf_counter()
                r = client.post(f"{url}/invocations", json={"dataframe_split": {"columns": list(kinds), "data": [row]}})
                dt = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                if i >= 20:
                    ms.append(dt)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000, help="train rows (scored afterwards)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of the preprocessing stage and of each scoring mode, alternating; the table shows "
                         "the fastest of each (the least disturbed by other jobs on the machine)")
    ap.add_argument("--paper", action="store_true", help="Table IV model sizes instead of the Criteo defaults")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from optinter.tracking import apply_offline_env

    apply_offline_env()
    from optinter.scoring import score_files
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    base = Path(a.dir or tempfile.mkdtemp(prefix="bench_predict_"))
    base.mkdir(parents=True, exist_ok=True)
    files = write_criteo_splits(base, {"train": a.rows, "valid": a.rows // 10, "test": a.rows // 10}, a.rows)
    res: dict[str, dict] = {}

    def keep(key: str, rows: int, seconds: float) -> None:
        if key not in res or seconds < res[key]["seconds"]:
            res[key] = {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}

    models: dict[str, Path] = {}
    for _ in range(a.repeat):
        pp = run_preprocess(PreprocessConfig(dataset="criteo", out=str(base / "data"), train=[str(files["train"])],
                                             valid=[str(files["valid"])], test=[str(files["test"])],
                                             n_workers=a.workers))
        keep("preprocess", pp["rows_read"], pp["seconds"]["total"])
        models = models or build_models(base / "data", base / "models", a.paper)  # same data: same feature map
        for name, d in models.items():
            for mode, local in ((f"dask {a.workers}x1", False), ("in-process, 1 thread", True)):
                s = score_files(d, [str(files["train"])], base / f"scores-{name}.parquet", n_workers=a.workers,
                                local=local)
                keep(f"{name} ({mode})", s["rows_scored"], s["seconds"])
    print(f"{'':32} {'rows':>9} {'seconds':>8} {'rows/s':>9}")
    for k, v in res.items():
        print(f"{k:32} {v['rows']:>9,} {v['seconds']:>8.1f} {v['rows_per_s']:>9,.0f}")
    for name, d in models.items():
        for omp in (None, 1):
            key = f"{name} served" + (f", OMP_NUM_THREADS={omp}" if omp else "")
            res[key] = lat = served_latency(d, files["test"], a.requests, base, omp)
            print(f"{key}, single-row requests: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
                  f"({lat['requests']} requests)", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
