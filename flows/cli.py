"""``optinter run`` (the whole flow in-process) and ``optinter serve`` (deployments on a server).

Registered by ``optinter/cli.py`` through :func:`register`; also runnable as ``python -m flows.cli``.
Prefect is imported only inside the commands, after the environment is set: ``optinter run`` uses
an ephemeral Prefect API under a project-local ``PREFECT_HOME`` (``.optinter/prefect``), MLflow in
``./mlflow.db`` (or ``MLFLOW_TRACKING_URI``) and a Dask LocalCluster (or ``DASK_SCHEDULER_ADDRESS``),
with every call-home switched off.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from optinter.cluster import add_jobs_arguments

#: Where ``optinter run`` keeps its ephemeral Prefect database (unless PREFECT_HOME is set).
RUN_PREFECT_HOME = ".optinter/prefect"
#: ``optinter serve`` is a client of a server: its own PREFECT_HOME (profiles, local storage).
SERVE_PREFECT_HOME = ".optinter/prefect-serve"


def prepare_env(prefect_home: str) -> None:
    """Offline switches, ``PREFECT_HOME`` and logging settings, before Prefect is imported."""
    from optinter.tracking import apply_offline_env

    from .logs import prefect_logging_env

    apply_offline_env(prefect_home)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates one level only
    prefect_logging_env()
    # the first start of an ephemeral API migrates a fresh SQLite database: slow on small machines
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _kv_json(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), json.loads(v)
    except json.JSONDecodeError:
        return k.strip(), v


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic",
                   help="criteo | avazu | ipinyou | synthetic | path/to/schema.yaml (default: synthetic)")
    g.add_argument("--raw", nargs="+", metavar="PATH", help="raw files or globs, split train/valid/test")
    g.add_argument("--train", dest="train_path", metavar="PATH", help="pre-split train file")
    g.add_argument("--valid", dest="valid_path", metavar="PATH", help="pre-split valid file")
    g.add_argument("--test", dest="test_path", metavar="PATH", help="pre-split test file")
    g.add_argument("--oov-threshold", type=int, help="min train count to keep a value (default: the schema's)")
    g.add_argument("--cross-threshold", type=int, help="min train count to keep a cross value")
    g.add_argument("--synth", type=_kv_json, action="append", default=[], metavar="KEY=VALUE",
                   help="synthetic generator setting, e.g. n_train=100000 (repeatable)")
    g.add_argument("--preprocess", type=_kv_json, action="append", default=[], metavar="KEY=VALUE",
                   help="extra PreprocessConfig setting, e.g. on_bad_rows=skip (repeatable)")
    g = p.add_argument_group("models")
    g.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="[SCOPE:]KEY=VALUE",
                   help="model config override, e.g. train.epochs=5 or retrain:train.lr_o=1e-4 or "
                        "fm:model.embed_dim=8 (repeatable)")
    g.add_argument("--config", metavar="FILE",
                   help="YAML / JSON settings (e.g. what `optinter tune` wrote) over the data-derived defaults, "
                        "under --set")
    g.add_argument("--tune", dest="tune_mode", choices=("auto", "on", "off"), default="auto",
                   help="tune the re-train on the validation split (auto: when the train split has at most "
                        "250k rows)")
    g.add_argument("--tune-set", dest="tune", type=_kv_json, action="append", default=[], metavar="KEY=VALUE",
                   help="tune stage setting, e.g. trials=10, minutes=5, parallel=2 (repeatable)")
    g.add_argument("--baselines", type=str, default=None,
                   help="comma-separated baseline models (default: lr,fm,deepfm; 'none' for none)")
    g.add_argument("--seed", type=int, default=2026)
    g.add_argument("--no-quickstart", dest="quickstart", action="store_false",
                   help="synthetic dataset: use the library's full-size defaults instead of the quick-start sizes")
    g = p.add_argument_group("stages and results")
    g.add_argument("--stages", type=_csv, default=None,
                   help="what to compute, comma-separated (default: retrain,baselines,evaluate,analyze)")
    g.add_argument("--force", type=_csv, action="append", default=[], metavar="STAGE",
                   help="recompute a stage (or a model, or 'all') even when cached (repeatable / comma-separated)")
    g.add_argument("--from", dest="from_run", metavar="RUN_ID|FOLDER",
                   help="reuse an earlier run's results: an MLflow run id (stage or pipeline) or a stage folder")
    g.add_argument("--artifact-root", help="folder or fsspec URL of stage outputs "
                                           "(default: $OPTINTER_ARTIFACT_ROOT or ./artifacts)")
    g.add_argument("--experiment", default="optinter", help="MLflow experiment name")
    g.add_argument("--compare", type=_kv_json, action="append", default=[], metavar="KEY=VALUE",
                   help="CompareConfig setting of the compare stage, e.g. models=lr,fm seeds=2 (repeatable)")
    g.add_argument("--score", type=_kv_json, action="append", default=[], metavar="KEY=VALUE",
                   help="score stage setting (with --stages score): raw=FILE|GLOB|JSON list (required), "
                        "model=RUN_ID|models:/NAME/VERSION (default: this run's re-trained OptInter), "
                        "on_bad_rows=skip, id_columns=... (repeatable)")
    g.add_argument("--register", action="append", default=[], metavar="[MODEL=]NAME",
                   help="register a trained model in the MLflow Model Registry: NAME (the re-trained OptInter) "
                        "or MODEL=NAME, e.g. deepfm=ctr-deepfm (repeatable)")
    add_jobs_arguments(p)


def flow_params(args: argparse.Namespace) -> dict[str, Any]:
    """The flow's parameters from parsed ``run`` arguments."""
    baselines = None
    if args.baselines is not None:
        baselines = [] if args.baselines.strip().lower() in ("", "none") else _csv(args.baselines)
    return dict(
        dataset=args.dataset, raw=args.raw, train_path=args.train_path, valid_path=args.valid_path,
        test_path=args.test_path, synth=dict(args.synth) or None, preprocess=dict(args.preprocess) or None,
        oov_threshold=args.oov_threshold, cross_threshold=args.cross_threshold, overrides=args.overrides or None,
        baselines=baselines, seed=args.seed, artifact_root=args.artifact_root,
        force=[f for group in args.force for f in group] or None, from_run=args.from_run, stages=args.stages,
        experiment=args.experiment, quickstart=args.quickstart, compare=dict(args.compare) or None,
        config_file=args.config, tune_mode=args.tune_mode, tune=dict(args.tune) or None,
        score=dict(args.score) or None, register_as=args.register or None,
        jobs={k: v for k, v in (("workers", args.workers), ("threads", args.threads),
                                ("scheduler", args.scheduler)) if v is not None} or None)


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP: stop like Ctrl-C, so that MLflow runs are closed (``KILLED``) and Prefect's
    temporary server is stopped."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


def cmd_run(args: argparse.Namespace) -> int:
    prepare_env(RUN_PREFECT_HOME)
    params = flow_params(args)
    from flows.spec import SpecError, resolve_spec

    try:  # fail fast, before Prefect's API starts
        resolve_spec(**params)
    except SpecError as e:
        print(f"optinter run: error: {e}", file=sys.stderr)
        return 2
    from flows.guard import start_guard

    start_guard()  # stops Prefect's temporary server (and any other child) if this process is killed
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    from flows.pipeline import optinter_flow
    from flows.results import render_summary

    try:
        summary = optinter_flow(**params)
    except KeyboardInterrupt as e:
        print(f"optinter run: interrupted ({e or 'Ctrl-C'}); its MLflow runs are marked KILLED", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — the traceback is in the log above
        from flows.steps import error_text

        print(f"optinter run: failed: {error_text(e)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(render_summary(summary))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    prepare_env(SERVE_PREFECT_HOME)
    from flows.spec import ARTIFACT_ROOT_ENV, DEFAULT_ARTIFACT_ROOT

    if args.artifact_root or ARTIFACT_ROOT_ENV not in os.environ:  # absolute: flow runs are subprocesses
        root = args.artifact_root or DEFAULT_ARTIFACT_ROOT
        os.environ[ARTIFACT_ROOT_ENV] = root if "://" in root else str(Path(root).resolve())
    from optinter.tracking import default_tracking_uri

    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri("."))  # absolute, for the flow runs
    from flows.deploy import serve_deployments

    try:
        serve_deployments(args.deployments, limit=args.limit)
    except RuntimeError as e:
        print(f"optinter serve: error: {e}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: Any) -> None:
    """Add ``run`` and ``serve`` to the ``optinter`` command."""
    p = subparsers.add_parser(
        "run", help="run the whole pipeline in-process (Prefect ephemeral API, Dask LocalCluster, MLflow SQLite)",
        description="Run the optinter Prefect flow in this process, without a server: preprocess → search → "
                    "re-train → evaluate → analyze, plus baselines. Stages whose inputs did not change are "
                    "reused from the artifact root. Ends with the results table and the MLflow UI command.")
    _add_pipeline_args(p)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON instead of the table")
    p.set_defaults(func=cmd_run)

    s = subparsers.add_parser(
        "serve", help="register and serve the optinter/* deployments against a Prefect server",
        description="Register the deployments optinter/full-pipeline, preprocess, search, retrain, baselines, "
                    "analyze, compare, score with the Prefect server at PREFECT_API_URL and run their flow runs "
                    "until interrupted. Then: prefect deployment run optinter/full-pipeline --param dataset=synthetic")
    s.add_argument("--deployments", type=_csv, default=None, help="serve only these (comma-separated)")
    s.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    s.add_argument("--artifact-root", help="default artifact root of the flow runs (OPTINTER_ARTIFACT_ROOT)")
    s.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    parser = argparse.ArgumentParser(prog="optinter")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
