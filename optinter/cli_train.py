"""``optinter search``, ``optinter retrain`` and ``optinter train`` (registered by ``optinter/cli.py``).

Each takes ``--data DIR --out DIR``, optional ``--dataset NAME`` (Table IV defaults for criteo /
avazu / ipinyou) and ``--set key=value`` overrides (e.g. ``--set train.epochs=3
--set model.mlp_dims=400,400``), calls the matching :mod:`optinter.stages` function and prints a
one-line result.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import RunConfig, apply_overrides, default_config, paper_config


def build_config(dataset: str | None, model: str, overrides: list[str], paper: bool = False) -> RunConfig:
    """Defaults for ``dataset`` (library defaults when None) with ``key=value`` overrides.

    ``paper=True`` starts from the paper's Table IV settings exactly (for the full datasets)
    instead of :func:`default_config` (which refines them for the shipped Criteo sample)."""
    base = paper_config if paper else default_config
    return apply_overrides(base(dataset or "synthetic", model), overrides)


def _dataset_of(args: argparse.Namespace) -> str | None:
    if args.dataset:
        return args.dataset
    try:
        from .stages import load_feature_map

        return load_feature_map(args.data).dataset
    except (FileNotFoundError, ValueError):
        return None  # the stage reports the bad data folder


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="encoded data folder (feature_map.json + parquet splits)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically at the end)")
    p.add_argument("--dataset", help="criteo | avazu | ipinyou: Table IV defaults (default: the feature map's dataset)")
    p.add_argument("--paper", action="store_true",
                   help="start from the paper's Table IV settings exactly (full-size datasets) instead of the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.epochs=3 or model.mlp_dims=400,400 (repeatable)")


def _search(args: argparse.Namespace) -> int:
    from .stages import run_search, summary_line

    cfg = build_config(_dataset_of(args), args.model, args.overrides, args.paper)
    m = run_search(args.data, args.out, cfg, model=args.model)
    print(f"search: {summary_line(m)} -> {args.out}/architecture.json")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from .architecture import Architecture
    from .stages import run_retrain, summary_line

    arch = Architecture.load(args.arch)
    cfg = build_config(_dataset_of(args), arch.model, args.overrides, args.paper)
    m = run_retrain(args.data, args.arch, args.out, cfg)
    print(f"retrain: {summary_line(m)} -> {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .stages import run_train, summary_line

    cfg = build_config(_dataset_of(args), args.model, args.overrides, args.paper)
    m = run_train(args.data, args.model, args.out, cfg)
    print(f"train: {summary_line(m)} -> {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add the ``search``, ``retrain`` and ``train`` subcommands to an argparse subparsers object."""
    p = sub.add_parser("search", help="search stage (Algorithm 1) -> architecture.json + metrics.json",
                       description="Search memorize / factorize / naive for every pair (OptInter Algorithm 1; "
                                   "--set train.bilevel=true for the bi-level ablation).")
    _common(p)
    p.add_argument("--model", default="optinter", help="search model (optinter or autofis)")
    p.set_defaults(func=_search)

    p = sub.add_parser("retrain", help="re-train an architecture from scratch (Algorithm 2)",
                       description="Re-train a fixed architecture (architecture.json from `optinter search`).")
    _common(p)
    p.add_argument("--arch", required=True, help="architecture.json")
    p.set_defaults(func=_retrain)

    p = sub.add_parser("train", help="train any registered model (search + re-train for optinter / autofis)",
                       description="Train a registered model; writes metrics.json and model.pt.")
    _common(p)
    p.add_argument("--model", required=True, help="model name (see the registry), e.g. deepfm, optinter_m, optinter")
    p.set_defaults(func=_train)
