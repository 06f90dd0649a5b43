"""``optinter analyze`` and ``optinter compare`` (registered into the main ``optinter`` command).

    optinter analyze --data DIR --out DIR [--arch architecture.json] [--truth truth.json] [--metrics m.json ...]
    optinter compare --data DIR --out DIR [--models lr,fm,...] [--seeds N] [--tables V,VI,...]
                     [--set key=value ...] [--cache DIR] [--workers N] [--threads T] [--scheduler ADDR]
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .cluster import add_jobs_arguments, jobs_config


def _flat(items: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [x.strip() for item in items or [] for x in item.split(",") if x.strip()]


def register(subparsers: Any) -> None:
    """Add the ``analyze`` and ``compare`` subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "analyze", help="mutual information of every pair with the label, figures, HTML report",
        description="MI (eq. 21, nats) of every field and pair with the label on the encoded train split, the "
                    "MI heat map beside the searched architecture (Fig. 6), mean MI per method (Fig. 5) and "
                    "report.html.")
    p.add_argument("--data", required=True, help="preprocessed folder (feature_map.json + parquet splits)")
    p.add_argument("--out", required=True, help="output folder (mi.csv, PNGs, report.html)")
    p.add_argument("--arch", default=None, help="architecture.json of a search (adds methods and α to mi.csv)")
    p.add_argument("--truth", default=None, help="synthetic truth.json: mark the planted pairs")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files for the report's results table")
    p.add_argument("--scheduler", default=None,
                   help="address of a Dask scheduler (default: a running client, else local threads)")
    p.set_defaults(func=_analyze)

    c = subparsers.add_parser(
        "compare", help="the paper's experiments: Tables V–IX and Fig. 4 (cached training jobs)",
        description="Train the models each chosen table needs (cached by data hash + model + config + seed) and "
                    "write the tables as CSV + Markdown, Fig. 4 as PNG, runs.csv and report.html.")
    c.add_argument("--data", required=True, help="preprocessed folder (feature_map.json + parquet splits)")
    c.add_argument("--out", required=True, help="output folder for the tables and figures")
    c.add_argument("--models", nargs="+", default=None,
                   help="Table V models, space- or comma-separated (default: every registered model)")
    c.add_argument("--seeds", type=int, default=3, help="seeds per model (paper: 10; default 3)")
    c.add_argument("--ablation-seeds", type=int, default=None, help="seeds for Tables VII–IX and Fig. 4 (default: --seeds)")
    c.add_argument("--tables", nargs="+", default=None,
                   help="subset of V VI VII VIII IX fig4, space- or comma-separated (default: all)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every job, e.g. train.epochs=2 (repeatable)")
    c.add_argument("--paper", default=None, metavar="DATASET",
                   help="Table IV settings of criteo | avazu | ipinyou instead of the defaults derived from the data")
    c.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                   help="YAML / JSON settings (e.g. what `optinter tune` wrote) under --set")
    c.add_argument("--enlarge", nargs="+", default=None, help="Table VII models (default fm fnn ipnn deepfm)")
    c.add_argument("--random", dest="n_random", type=int, default=10, help="Table VIII random architectures")
    c.add_argument("--cross-dims", nargs="+", default=None, help="Fig. 4 memorized embedding sizes (default 2 5 10)")
    c.add_argument("--cache", default=None, help="job cache folder (default: <out>_cache beside --out)")
    c.add_argument("--keep-models", action="store_true", help="keep model weights in the cache")
    add_jobs_arguments(c)
    c.set_defaults(func=_compare)


def _print_summary(res: dict[str, Any]) -> None:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.items()}
    print(json.dumps(clean, indent=2, default=str))


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import run_analyze

    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        res = run_analyze(args.data, args.out, arch_path=args.arch, truth_path=args.truth,
                          metrics_paths=args.metrics, client=client)
    finally:
        if client is not None:
            client.close()
    _print_summary({k: v for k, v in res.items() if k != "figures"})
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .cluster import JobPool
    from .experiments import ALL_TABLES, CompareConfig, run_compare

    kw: dict[str, Any] = {"seeds": args.seeds, "overrides": tuple(args.overrides), "paper": args.paper,
                          "config_file": args.config_file,
                          "n_random": args.n_random, "ablation_seeds": args.ablation_seeds, "cache_dir": args.cache,
                          "keep_models": args.keep_models, "tables": tuple(_flat(args.tables) or ALL_TABLES)}
    if args.models:
        kw["models"] = tuple(_flat(args.models))
    if args.enlarge:
        kw["enlarge_models"] = tuple(_flat(args.enlarge))
    if args.cross_dims:
        try:
            kw["fig4_cross_dims"] = tuple(int(x) for x in _flat(args.cross_dims))
        except ValueError:
            raise ValueError(f"--cross-dims: expected integers, got {args.cross_dims}") from None
    with JobPool(jobs_config(args)) as pool:
        res = run_compare(args.data, args.out, CompareConfig(**kw), pool=pool)
    _print_summary({k: v for k, v in res.items() if k != "files"})
    return 0
