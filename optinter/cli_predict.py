"""``optinter predict`` and ``optinter register`` (registered by ``optinter/cli.py``).

    optinter predict --model RUN_DIR|MLFLOW_RUN_ID|models:/NAME/VERSION --raw FILES... --out scores.parquet
    optinter register --model RUN_DIR|MLFLOW_RUN_ID --name NAME
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _predict(args: argparse.Namespace) -> int:
    from .scoring import score_files

    s = score_files(args.model, args.raw, args.out, on_bad_rows=args.on_bad_rows, id_columns=args.id_columns,
                    blocksize=args.blocksize, scheduler=args.scheduler, n_workers=args.workers,
                    threads_per_worker=args.threads,
                    local=args.local, device=args.device, batch_size=args.batch_size)
    dropped = sum(s["rows_dropped"].values())
    why = ", ".join(f"{k}: {v}" for k, v in s["rows_dropped"].items() if v)
    print(f"predict: {s['rows_scored']:,} rows scored with {s['model_name']} ({dropped:,} dropped"
          f"{': ' + why if why else ''}) in {s['seconds']:.1f}s ({s['rows_per_s']:,.0f} rows/s), mean probability "
          f"{s['score_mean']:.4f} -> {s['out']}")
    if args.summary:
        with open(args.summary, "w") as fh:
            json.dump(s, fh, indent=2)
    return 0


def _register(args: argparse.Namespace) -> int:
    from .pyfunc import register as register_model

    uri = register_model(args.model, args.name, experiment=args.experiment)
    print(f"register: {args.model} -> {uri}")
    return 0


def register(sub: Any) -> None:
    """Add the ``predict`` and ``register`` subcommands to an argparse subparsers object."""
    p = sub.add_parser(
        "predict", help="score raw files with a trained model -> parquet of click probabilities",
        description="Score raw files (the dataset's format, plain or gzip; or parquet: raw columns or the encoded "
                    "splits) with a trained model, encoding them with the vocabularies of its training data. "
                    "Writes parquet: row (0-based input row), probability, and the --id-column columns. "
                    "Partitions are scored on Dask (DASK_SCHEDULER_ADDRESS or a LocalCluster) for large inputs, "
                    "in this process for small ones.")
    p.add_argument("--model", required=True,
                   help="a training stage's output folder, an MLflow run id (a pipeline run: its re-trained OptInter), "
                        "runs:/<run id>/model or models:/<name>/<version|@alias>")
    p.add_argument("--raw", nargs="+", required=True, metavar="FILE", help="input files or globs (or parquet folders)")
    p.add_argument("--out", required=True, help="output parquet file (written to a temporary file, then renamed)")
    p.add_argument("--id-column", dest="id_columns", action="append", default=[], metavar="COL",
                   help="pass this input column through to the output (repeatable)")
    p.add_argument("--on-bad-rows", choices=("error", "skip"), default="error",
                   help="a malformed row: stop with its file and line (default) or drop it and count it")
    p.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS or a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (and in this process); default 1")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", dest="local", action="store_const", const=True, default=None,
                       help="score in this process, without Dask")
    where.add_argument("--dask", dest="local", action="store_const", const=False,
                       help="score on Dask even a small input (default: Dask with a configured scheduler or "
                            "inputs over 512 MiB)")
    p.add_argument("--blocksize", type=int, default=8 * 1024 * 1024, help="bytes per partition of a text file (8 MiB)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per model call (default: train.eval_batch_size)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--summary", metavar="FILE", help="also write the summary (counts, rows/s, histogram) as JSON")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "register", help="register a trained model in the MLflow Model Registry",
        description="Register a trained model as a new version of NAME in the MLflow Model Registry "
                    "($MLFLOW_TRACKING_URI, default ./mlflow.db). A folder is first logged as an MLflow model "
                    "in a new run; a run id uses the model logged in that run.")
    p.add_argument("--model", required=True, help="a training stage's output folder, an MLflow run id or runs:/<id>/model")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--experiment", default="optinter", help="MLflow experiment of the run created for a folder")
    p.set_defaults(func=_register)
