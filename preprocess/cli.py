"""``optinter synth`` and ``optinter preprocess`` (registered by ``optinter/cli.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from preprocess.errors import PreprocessError


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 32MB, 65536)") from None


def _kv(text: str) -> tuple[str, int]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=N, got {text!r}")
    k, v = text.rsplit("=", 1)
    try:
        return k, int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=N with an integer N, got {text!r}") from None


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        r = tuple(float(x) for x in text.replace(":", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 8,1,1, got {text!r}") from None
    if len(r) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 8,1,1, got {text!r}")
    return r  # type: ignore[return-value]


def _add_preprocess(sub: Any) -> None:
    p = sub.add_parser("preprocess", help="raw CTR logs -> encoded parquet splits + feature_map.json (Dask)",
                       description="Preprocess raw CTR logs on a Dask cluster: ingest, split, OOV thresholds, "
                                   "min-max / bucketize, cross-product vocabularies, encode. Writes "
                                   "{train,valid,test}/part-*.parquet, feature_map.json and summary.json in --out.")
    p.add_argument("--dataset", required=True, help="criteo | avazu | ipinyou | synthetic | path/to/schema.yaml")
    p.add_argument("--raw", nargs="+", metavar="PATH", help="raw files or globs (plain or gzip), split by --ratios")
    p.add_argument("--train", nargs="+", metavar="PATH", help="pre-split train file(s)")
    p.add_argument("--valid", nargs="+", metavar="PATH", help="pre-split valid file(s)")
    p.add_argument("--test", nargs="+", metavar="PATH", help="pre-split test file(s)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--oov-threshold", type=int, help="min train count to keep a value (default: the schema's)")
    p.add_argument("--cross-threshold", type=int, help="min train count to keep a cross value (default: the schema's)")
    p.add_argument("--field-threshold", type=_kv, action="append", default=[], metavar="FIELD=N",
                   help="per-field OOV threshold (repeatable)")
    p.add_argument("--pair-threshold", type=_kv, action="append", default=[], metavar="A|B=N",
                   help="per-pair cross threshold (repeatable)")
    p.add_argument("--seed", type=int, default=2026, help="split seed (with --raw)")
    p.add_argument("--ratios", type=_ratios, default=(8.0, 1.0, 1.0), help="train,valid,test ratios (default 8,1,1)")
    p.add_argument("--on-bad-rows", choices=("error", "skip"), default="error",
                   help="stop at the first bad row (default) or drop bad rows and count them")
    p.add_argument("--continuous-mode", choices=("minmax", "bucketize", "both"),
                   help="how continuous columns become fields (default: the schema's)")
    p.add_argument("--cross-fields", nargs="+", metavar="FIELD", help="fields (or globs) to cross (default: schema's)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS or a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per LocalCluster worker (default 1)")
    p.add_argument("--blocksize", type=_size, default=32 << 20, help="partition size of raw text (default 32MB)")
    p.set_defaults(func=cmd_preprocess)


def cmd_preprocess(args: argparse.Namespace) -> int:
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    cfg = PreprocessConfig(
        dataset=args.dataset, out=args.out, raw=args.raw, train=args.train, valid=args.valid, test=args.test,
        oov_threshold=args.oov_threshold, cross_threshold=args.cross_threshold,
        field_thresholds=dict(args.field_threshold), pair_thresholds=dict(args.pair_threshold), seed=args.seed,
        ratios=args.ratios, on_bad_rows=args.on_bad_rows, scheduler=args.scheduler, n_workers=args.workers,
        threads_per_worker=args.threads, blocksize=args.blocksize, continuous_mode=args.continuous_mode,
        cross_fields=args.cross_fields,
    )
    summary = run_preprocess(cfg)
    brief = {k: v for k, v in summary.items() if k != "pair_vocab_sizes"}
    brief["pair_vocab_sizes"] = f"{len(summary['pair_vocab_sizes'])} pairs (see {Path(args.out) / 'summary.json'})"
    print(json.dumps(brief, indent=2))
    return 0


# ---- synth ------------------------------------------------------------------------------------------
def _parse_value(text: str, kind: Any) -> Any:
    text = text.strip()
    if text.startswith("["):
        v = json.loads(text)
    else:
        v = [x for x in text.replace(";", ",").split(",") if x.strip()]
        v = [[int(y) for y in x.split("-")] if "-" in x.strip()[1:] else float(x) if "." in x else int(x) for x in v]

    def tup(x: Any) -> Any:
        return tuple(tup(y) for y in x) if isinstance(x, list) else x

    return tup(v)


def _add_synth(sub: Any) -> None:
    from preprocess.synthetic import SynthConfig

    p = sub.add_parser("synth", help="write synthetic CTR data with planted memorize/factorize/naive pairs",
                       description="Generate train/valid/test CSVs and truth.json (planted pair kinds, Bayes AUC).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rows", type=int, help="total rows, split 8:1:1 (overridden by --n-train/--n-valid/--n-test)")
    hints = typing.get_type_hints(SynthConfig)
    for f in dataclasses.fields(SynthConfig):
        flag = "--" + f.name.replace("_", "-")
        t = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if t in (int, float, str):
            p.add_argument(flag, type=t, default=None, help=f"(default {default})")
        elif t is bool:
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                           help=f"true/false (default {default})")
        else:
            p.add_argument(flag, type=lambda s, _t=t: _parse_value(s, _t), default=None,
                           help=f"comma list or JSON (default {default})")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from preprocess.synthetic import SynthConfig, generate

    kw: dict[str, Any] = {}
    if args.rows is not None:
        if args.rows < 10:
            raise PreprocessError(f"parameter '--rows' must be >= 10, got {args.rows}", reason="settings")
        kw.update(n_train=args.rows - 2 * (args.rows // 10), n_valid=args.rows // 10, n_test=args.rows // 10)
    for f in dataclasses.fields(SynthConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            kw[f.name] = v
    summary = generate(SynthConfig(**kw), args.out)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``synth`` and ``preprocess`` subcommands to an argparse subparsers object."""
    _add_synth(subparsers)
    _add_preprocess(subparsers)
