"""``optinter search``, ``optinter retrain`` and ``optinter train`` (registered by ``optinter/cli.py``).

Each takes ``--data DIR --out DIR``; the settings are the defaults derived from the data's
``feature_map.json`` (:mod:`optinter.defaults`; ``--paper`` for Table IV instead), then
``--config FILE``, then ``--set key=value`` overrides (e.g. ``--set train.epochs=3
--set model.mlp_dims=400,400``). Each calls the matching :mod:`optinter.stages` function and
prints a one-line result.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import PAPER_DATASETS, RunConfig, default_config, merged_config, paper_config


def build_config(source: Any, model: str, overrides: list[str], paper: str | bool | None = None,
                 config_file: str | None = None) -> RunConfig:
    """The settings of one stage: the defaults derived from the data (``source``: a feature map,
    data statistics, or None for the library defaults), then ``config_file`` (``--config``), then
    the ``key=value`` ``overrides`` (``--set``).

    ``paper`` (a Table IV dataset name: criteo, avazu, ipinyou) starts from the paper's Table IV
    settings exactly instead of the data-derived defaults."""
    if paper:
        if paper not in PAPER_DATASETS:
            raise ValueError(f"--paper {paper!r}: Table IV has settings for {', '.join(PAPER_DATASETS)} only")
        base = paper_config(str(paper), model)
    else:
        base = default_config(source, model)
    return merged_config(base, config_file, overrides)


def _feature_map(args: argparse.Namespace) -> Any:
    try:
        from .stages import load_feature_map

        return load_feature_map(args.data)
    except (FileNotFoundError, ValueError):
        return None  # the stage reports the bad data folder


def _paper(args: argparse.Namespace, fmap: Any) -> str | None:
    """``--paper`` alone: the Table IV settings of the feature map's built-in dataset."""
    if args.paper is None:
        return None
    if args.paper != _PAPER_FROM_DATA:
        return args.paper
    name = getattr(fmap, "dataset", None)
    if name not in PAPER_DATASETS or not _is_builtin_schema(fmap):
        raise ValueError(f"--paper: Table IV has no settings for dataset {name!r}; name one: "
                         f"--paper {'|'.join(PAPER_DATASETS)}")
    return name


def _is_builtin_schema(fmap: Any) -> bool:
    """True when the data was encoded with the built-in schema of its name (not a user's YAML
    file that happens to carry that name)."""
    import json

    from preprocess.schema import BUILTIN

    builtin = BUILTIN.get(fmap.dataset)
    return builtin is not None and (not fmap.schema or fmap.schema == json.loads(json.dumps(builtin.to_dict())))


def _config(args: argparse.Namespace, model: str) -> RunConfig:
    fmap = _feature_map(args)
    return build_config(fmap, model, args.overrides, _paper(args, fmap), args.config)


_PAPER_FROM_DATA = "<data>"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="encoded data folder (feature_map.json + parquet splits)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically at the end)")
    p.add_argument("--paper", nargs="?", const=_PAPER_FROM_DATA, default=None, metavar="DATASET",
                   help="start from the paper's Table IV settings exactly (criteo | avazu | ipinyou; "
                        "alone: the data's built-in dataset) instead of the defaults derived from the data")
    p.add_argument("--config", metavar="FILE",
                   help="YAML / JSON settings (e.g. what `optinter tune` wrote), applied over the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.epochs=3 or model.mlp_dims=400,400 (repeatable; "
                        "applied last)")


def _search(args: argparse.Namespace) -> int:
    from .stages import run_search, summary_line

    cfg = _config(args, args.model)
    m = run_search(args.data, args.out, cfg, model=args.model)
    print(f"search: {summary_line(m)} -> {args.out}/architecture.json")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from .architecture import Architecture
    from .stages import run_retrain, summary_line

    arch = Architecture.load(args.arch)
    cfg = _config(args, arch.model)
    m = run_retrain(args.data, args.arch, args.out, cfg)
    print(f"retrain: {summary_line(m)} -> {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .stages import run_train, summary_line

    cfg = _config(args, args.model)
    m = run_train(args.data, args.model, args.out, cfg)
    print(f"train: {summary_line(m)} -> {args.out}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    import os

    from .tune import TuneConfig, run_tune

    tc = TuneConfig(model=args.model, trials=args.trials, minutes=args.minutes, space=tuple(args.params) or None,
                    seed=args.seed, max_epochs=args.max_epochs, parallel=args.parallel)
    tc.validate()  # budget / space errors before anything is read
    cfg = _config(args, args.model)
    scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    s = run_tune(args.data, args.out, tc, cfg, arch_path=args.arch, scheduler=scheduler)
    print(f"tune: {s['model']} best valid AUC {s['best_valid_auc']:.5f} (trial {s['best_trial']} of {s['trials']}, "
          f"{s['pruned']} pruned) {s['best_params']} -> {args.out}/tuned.yaml")
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

    p = sub.add_parser("tune", help="tune a model's settings on the validation split (Optuna) -> tuned.yaml",
                       description="Hyper-parameter search on the validation split (TPE sampler, pruning on the "
                                   "per-epoch validation AUC); the test split is never read. Writes tuned.yaml "
                                   "(pass it to search / retrain / train / run with --config), trials.csv, tune.json.")
    _common(p)
    p.add_argument("--model", default="optinter", help="model to tune (optinter: its re-train, needs --arch)")
    p.add_argument("--arch", help="architecture.json (for --model optinter / autofis)")
    p.add_argument("--trials", type=int, default=8, help="budget in trials (0 = only --minutes)")
    p.add_argument("--minutes", type=float, default=0.0, help="budget in minutes (0 = only --trials)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=KIND:ARGS",
                   help="search space entry, e.g. train.lr_o=log:1e-4:1e-2, model.dropout=float:0:0.5, "
                        "model.embed_dim=int:4:16, model.mlp_dims=choice:64|128,128 (repeatable; default: "
                        "optinter.tune.DEFAULT_SPACES)")
    p.add_argument("--max-epochs", type=int, default=0, help="epochs per trial (0 = the model's train.epochs)")
    p.add_argument("--seed", type=int, default=2026, help="sampler seed")
    p.add_argument("--parallel", type=int, default=1,
                   help="trials at once on a Dask cluster: a LocalCluster of that many workers, or --scheduler")
    p.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a LocalCluster)")
    p.set_defaults(func=_tune)
