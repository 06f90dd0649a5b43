"""Table-V-like comparison on the shipped Criteo sample, every model with its defaults.

    python benchmarks/criteo_table.py [--data /tmp/work/criteo] [--out /tmp/criteo_table]
                                      [--models all | lr,fm,deepfm,...]
                                      [--threads 2] [--set key=value ...]

``--data``: an encoded Criteo folder (``optinter preprocess --dataset criteo``); when it does not
exist it is built from ../shared/data/criteo/split/{train,valid,test}.tsv.gz with the default
criteo preprocessing. Each model is trained with ``default_config(feature_map, model)`` (the
defaults derived from the data; plus the
``--set`` overrides, applied to every model) through ``optinter.stages.run_train``: early
stopping and model selection on the validation AUC, one look at the test split. ``optinter`` is
searched then re-trained (Algorithms 1 and 2). Prints one JSON line per model while running,
then a Markdown table: valid AUC, test AUC, test log loss, #params, architecture counts
[m, f, n] and wall seconds (search + re-train for optinter).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/preprocess.py shadows preprocess

REPO = Path(_HERE).parent
SPLIT = REPO / ".." / "shared" / "data" / "criteo" / "split"
MODELS = "all"  # every registered model (Table III)


def ensure_data(data: Path) -> Path:
    """``data`` if it holds an encoded dataset, else encode the shipped split into it."""
    if (data / "feature_map.json").exists():
        return data
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    files = {s: SPLIT / f"{s}.tsv.gz" for s in ("train", "valid", "test")}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise SystemExit(f"no encoded data at {data} and the Criteo split is missing: {missing}")
    run_preprocess(PreprocessConfig(dataset="criteo", out=str(data), train=[str(files["train"])],
                                    valid=[str(files["valid"])], test=[str(files["test"])]))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/work/criteo")
    ap.add_argument("--out", default="/tmp/criteo_table")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")

    from optinter.config import apply_overrides, default_config
    from optinter.registry import available_models
    from optinter.stages import load_feature_map, run_train

    data = ensure_data(Path(args.data))
    fmap = load_feature_map(data)
    rows = []
    names = available_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    for name in names:
        over = list(args.overrides) + ([f"train.num_threads={args.threads}"] if args.threads else [])
        cfg = apply_overrides(default_config(fmap, name), over)
        t0 = time.perf_counter()
        m = run_train(data, name, Path(args.out) / name, cfg)
        m["wall"] = time.perf_counter() - t0
        arch = (f"[{m['n_memorize']}, {m['n_factorize']}, {m['n_naive']}]" if "n_memorize" in m else "")
        rows.append((name, m, arch))
        print(json.dumps({"model": name, "valid_auc": round(m["valid_auc"], 4), "test_auc": round(m["test_auc"], 4),
                          "test_logloss": round(m["test_logloss"], 4), "params": m["params"], "arch": arch,
                          "best_epoch": m["best_epoch"], "seconds": round(m["wall"], 1)}), flush=True)
    print()
    print("| model | valid AUC | test AUC | test log loss | #params | arch [m, f, n] | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, m, arch in rows:
        print(f"| {name} | {m['valid_auc']:.4f} | {m['test_auc']:.4f} | {m['test_logloss']:.4f} | "
              f"{m['params']:,} | {arch} | {m['wall']:.0f} |")


if __name__ == "__main__":
    main()
