"""The ``optinter`` command: one subcommand per stage, each a thin shell over a plain function.

    optinter synth       write synthetic data with planted interactions   (preprocess.cli)
    optinter preprocess  raw files → encoded parquet + feature_map.json    (preprocess.cli)
    optinter search      OptInter search stage → architecture.json          (optinter.cli_train)
    optinter retrain     re-train an architecture                           (optinter.cli_train)
    optinter train       train any registered model                         (optinter.cli_train)
    optinter analyze     mutual information, figures, report                (optinter.cli_analysis)
    optinter compare     the paper's tables (V–IX) and Fig. 4               (optinter.cli_analysis)
    optinter predict     score raw files with a trained model → parquet    (optinter.cli_predict)
    optinter register    register a trained model in the MLflow registry   (optinter.cli_predict)
    optinter run         the whole Prefect flow in-process (no server)      (flows.cli)
    optinter serve       serve the deployments against a Prefect server     (flows.cli)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# Sub-command providers: each module exposes ``register(subparsers)``; each subparser sets
# ``func(args) -> int | None`` as its default.
_PROVIDERS = ("preprocess.cli", "optinter.cli_train", "optinter.cli_analysis", "optinter.cli_predict", "flows.cli")

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optinter",
        description="OptInter: search memorize / factorize / naive for every feature interaction, then train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _PROVIDERS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        module.register(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("distributed", "urllib3", "httpx", "alembic", "numexpr", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    # Nothing in this project calls home: set the offline switches unless the user chose otherwise.
    from optinter.tracking import apply_offline_env

    apply_offline_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, NotADirectoryError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"optinter {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
