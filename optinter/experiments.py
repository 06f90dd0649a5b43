"""The paper's experiments (section III, Tables V–IX and Fig. 4) as one ``compare`` stage.

:func:`run_compare` asks the chosen tables (:mod:`optinter.tables`, one registered unit each:
the jobs it needs, how it builds its table) for their training *jobs* (model × seed × config
variant), runs them, round by round, and writes what the tables build:

1. every chosen table lists the requests (:class:`~optinter.tables.Request`) it needs given the
   runs so far; the new ones (deduplicated by cache key) form one round of *independent* jobs;
2. the round goes through :data:`RunJobs` — ``run_jobs(jobs, run_one)`` returns ``run_one(job)``
   for every job, in input order: a :class:`~optinter.cluster.JobPool`'s, which runs them one after
   the other here, or concurrently on a Dask cluster (a LocalCluster by default where the cores fit
   two jobs, or ``$DASK_SCHEDULER_ADDRESS``), each job's training on a worker with its thread budget
   while the cache and MLflow bookkeeping stays in this process;
3. ``run_one`` (:meth:`JobRunner.run_one`) reuses or computes the job's folder in the one stage
   cache (:class:`optinter.store.ArtifactStore`), training it with the trainer (default
   :func:`stages_trainer`: ``optinter.stages``) under a child run of the tracker
   (:meth:`Tracker.child`); until no table asks for more, then every table builds.

Each job is a stage folder ``<cache_dir>/<key>/`` (marker ``_stage.json``, ``metrics.json``,
``job.json``, the trainer's outputs without weights) whose key hashes the data's content hash,
the model, the job variant, the random-architecture seed and the fully resolved config (seed
included): re-running with more seeds or more tables trains only what is new. Tables are written
as CSV and Markdown, figures as PNG, atomically into ``out_dir``, and logged to the (parent)
tracker; each trained job is logged to a child run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from preprocess.atomic import atomic_output_dir, read_json
from preprocess.feature_map import FeatureMap, fingerprint

from .cluster import JobPool, JobsConfig
from .config import RunConfig, default_config, merged_config, paper_config
from .report import REPORT_FILE, write_report
from .stats import fmt_params
from .store import ArtifactStore, stage_key
from .tables import (  # noqa: F401 - the table helpers, importable from here as before
    CATEGORY, METHODS, MODEL_ORDER, OPTINTER, TABLES, Job, ParamCountFn, Request, Runs, Table, TableContext,
    TableOutput, arch_counts, count_params, default_models, enlarged_embed_dim, order_models, summarize, table_v, table_vi,
    to_markdown)
from .tracking import TAG_STAGE, TAG_STEP, Tracker, as_tracker, terminal_status

log = logging.getLogger(__name__)

#: The registered tables (:data:`optinter.tables.TABLES`) when the module was imported.
ALL_TABLES = tuple(TABLES)
CACHE_ENV = "OPTINTER_COMPARE_CACHE"
#: Tag of the child runs of the compare jobs.
JOB_STAGE = "compare-job"


# ---- configuration ---------------------------------------------------------------------------------
@dataclass
class CompareConfig:
    """What ``compare`` runs. Every list accepts the CLI's comma-separated strings too."""

    models: tuple[str, ...] = ()  # Table V models; () = every registered model
    seeds: int = 3  # seeds per model (paper: 10); seed i uses train.seed + i
    tables: tuple[str, ...] = ALL_TABLES
    overrides: tuple[str, ...] = ()  # "key=value" applied to every job's config
    dataset: str | None = None  # a label for the tables; None = feature_map.json's dataset
    paper: str | None = None  # Table IV settings of this dataset instead of the data-derived defaults
    config_file: str | None = None  # YAML / JSON settings (e.g. `optinter tune`'s) under ``overrides``
    enlarge_models: tuple[str, ...] = ("fm", "fnn", "ipnn", "deepfm")  # Table VII
    n_random: int = 10  # Table VIII random architectures
    fig4_cross_dims: tuple[int, ...] = (2, 5, 10)  # Fig. 4 memorized embedding sizes
    fig4_models: tuple[str, ...] = ("optinter", "optinter_m")
    ablation_seeds: int | None = None  # seeds for Tables VII–IX and Fig. 4 (None = seeds)
    alpha: float = 0.005  # significance level marked with * (paper: p < 0.005)
    cache_dir: str | None = None  # None = $OPTINTER_COMPARE_CACHE, else <out_dir>/../compare_cache
    keep_models: bool = False  # keep model.pt / checkpoints in the cache
    max_enlarge: int = 2048  # upper bound of the Table VII embedding size

    def __post_init__(self) -> None:
        for name in ("models", "tables", "overrides", "enlarge_models", "fig4_models"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = [x for x in v.split(",") if x.strip()]
            setattr(self, name, tuple(str(x).strip() for x in v))
        if isinstance(self.fig4_cross_dims, str):
            self.fig4_cross_dims = tuple(int(x) for x in self.fig4_cross_dims.split(",") if x.strip())
        self.fig4_cross_dims = tuple(int(x) for x in self.fig4_cross_dims)
        self.tables = tuple(_norm_table(t) for t in self.tables)

    def validate(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"compare: seeds must be >= 1, got {self.seeds}")
        if self.ablation_seeds is not None and self.ablation_seeds < 1:
            raise ValueError(f"compare: ablation_seeds must be >= 1, got {self.ablation_seeds}")
        if self.n_random < 1:
            raise ValueError(f"compare: n_random must be >= 1, got {self.n_random}")
        if any(d <= 0 for d in self.fig4_cross_dims):
            raise ValueError(f"compare: fig4_cross_dims must be positive, got {self.fig4_cross_dims}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"compare: alpha must be in (0, 1), got {self.alpha}")
        from .config import PAPER_DATASETS

        if self.paper is not None and self.paper not in PAPER_DATASETS:
            raise ValueError(f"compare: paper must be one of {PAPER_DATASETS}, got {self.paper!r}")

    @property
    def n_ablation(self) -> int:
        return self.ablation_seeds if self.ablation_seeds is not None else self.seeds


def _norm_table(t: str) -> str:
    s = str(t).strip()
    low = s.lower()
    if low in ("fig4", "figure4", "4", "f4"):
        return "fig4"
    up = s.upper().removeprefix("TABLE").strip()
    if up not in TABLES:
        raise ValueError(f"compare: unknown table {t!r}; choose from {', '.join(TABLES)}")
    return up


# ---- the trainer -------------------------------------------------------------------------------------
#: ``train_fn(job, data_dir, job_dir, cfg, tracker) -> metrics dict`` (metrics.json keys; for
#: search → re-train models optionally ``"search": {metrics of the search-stage model}``).
TrainFn = Callable[[Job, Path, Path, RunConfig, "Tracker | None"], Mapping[str, Any]]


def stages_trainer(job: Job, data_dir: Path, job_dir: Path, cfg: RunConfig, tracker: Tracker | None) -> dict[str, Any]:
    """The real trainer: ``optinter.stages`` (``run_train``; random architectures via ``run_retrain``)."""
    from . import stages

    if job.variant == "random":
        from .architecture import random_architecture

        fm = FeatureMap.load(data_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        arch_path = random_architecture(fm, int(job.arch_seed or 0), model=job.model).save(job_dir / "architecture.json")
        stages.run_retrain(data_dir, arch_path, job_dir / "retrain", cfg, tracker=tracker)
        return read_json(job_dir / "retrain" / "metrics.json")
    out = job_dir / "train"
    stages.run_train(data_dir, job.model, out, cfg, tracker=tracker)
    metrics = read_json(out / "metrics.json")
    for cand in (out / "search" / "metrics.json", out / "search_metrics.json"):
        if cand.exists() and "search" not in metrics:
            metrics["search"] = read_json(cand)
    return metrics


# ---- running jobs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedJob:
    """A job with its resolved config and cache key; ``table`` labels it in ``runs.csv``."""

    job: Job
    table: str
    cfg: RunConfig
    key: str


@dataclass
class JobOutcome:
    """What running one job gives: its metrics, and whether they came from the cache."""

    metrics: dict[str, Any]
    cached: bool


#: ``run_jobs(jobs, run_one) -> [run_one(j) for j in jobs]``: run independent jobs (in any order,
#: at once if it likes) and return their outcomes in input order.
RunJobs = Callable[[Sequence[PlannedJob], Callable[[PlannedJob], JobOutcome]], list[JobOutcome]]


def run_in_order(jobs: Sequence[PlannedJob], run_one: Callable[[PlannedJob], JobOutcome]) -> list[JobOutcome]:
    """The default :data:`RunJobs`: one job after the other, in this process."""
    return [run_one(j) for j in jobs]


def cache_store(cache_dir: str | os.PathLike[str]) -> tuple[ArtifactStore, str]:
    """The stage cache of the compare jobs: folders ``<cache_dir>/<key>/`` are the stage named
    after ``cache_dir`` of an :class:`ArtifactStore` rooted at its parent (local or fsspec URL)."""
    text = str(cache_dir).rstrip("/")
    if "://" in text:
        root, _, stage = text.rpartition("/")
        return ArtifactStore(root), stage
    path = Path(text).expanduser().resolve()
    return ArtifactStore(path.parent), path.name


class JobRunner:
    """Plans requests into :class:`PlannedJob` items (config, key; each key once) and runs one job
    through the stage cache; remembers every job for ``runs.csv``."""

    def __init__(self, data_dir: Path, fm: FeatureMap, cc: CompareConfig, cache_dir: str | Path,
                 train_fn: TrainFn, tracker: Tracker, pool: JobPool | None = None) -> None:
        self.data_dir, self.fm, self.cc, self.train_fn, self.tracker = data_dir, fm, cc, train_fn, tracker
        self.pool = pool  # where train_fn runs (None: here)
        self.data_hash = fm.content_hash or fingerprint([str(data_dir.resolve())])
        self.store, self.stage = cache_store(cache_dir)
        self.rows: list[dict[str, Any]] = []
        self.n_trained = 0
        self.n_cached = 0
        self._by_key: dict[str, dict[str, Any]] = {}

    def config(self, job: Job) -> RunConfig:
        """The job's resolved config: defaults (or the paper's), the config file, the overrides,
        the job's own, and the seed."""
        base = paper_config(self.cc.paper, job.model) if self.cc.paper else default_config(self.fm, job.model)
        cfg = merged_config(base, self.cc.config_file, list(self.cc.overrides) + list(job.extra))
        cfg.train.seed = cfg.train.seed + job.seed_index
        return cfg

    def key(self, job: Job, cfg: RunConfig) -> str:
        return stage_key(JOB_STAGE, self._inputs(job, cfg))

    def _inputs(self, job: Job, cfg: RunConfig) -> dict[str, Any]:
        return {"data": self.data_hash, "model": job.model, "variant": job.variant, "arch_seed": job.arch_seed,
                "config": cfg.to_dict()}

    def plan(self, requests: Sequence[Request]) -> tuple[list[tuple[Request, str]], list[PlannedJob]]:
        """(every request with its key, the jobs of the keys not run yet — each once, in order)."""
        keyed, new, seen = [], [], set()
        for r in requests:
            cfg = self.config(r.job)
            key = self.key(r.job, cfg)
            keyed.append((r, key))
            if key not in self._by_key and key not in seen:
                seen.add(key)
                new.append(PlannedJob(r.job, r.table, cfg, key))
        return keyed, new

    def record(self, jobs: Sequence[PlannedJob], outcomes: Sequence[JobOutcome]) -> None:
        """Keep the outcomes of a round (``runs.csv`` rows in job order)."""
        for pj, out in zip(jobs, outcomes, strict=True):
            m = out.metrics
            self._by_key[pj.key] = m
            if out.cached:
                self.n_cached += 1
            else:
                self.n_trained += 1
            self.rows.append({"table": pj.table, "job": pj.job.label, "model": pj.job.model,
                              "variant": pj.job.variant, "seed": pj.cfg.train.seed, "arch_seed": pj.job.arch_seed,
                              "extra": " ".join(pj.job.extra), "key": pj.key, "cached": out.cached,
                              "test_auc": m.get("test_auc"), "test_logloss": m.get("test_logloss"),
                              "params": m.get("params"), "seconds": m.get("seconds"), "job_seconds": m.get("job_seconds"),
                              "run_id": m.get("compare_run_id")})

    def metrics(self, key: str) -> dict[str, Any]:
        return self._by_key[key]

    def run_one(self, pj: PlannedJob) -> JobOutcome:
        """The job's metrics from its cached folder, or trained into a new one under a child run."""
        log.info("compare [%s]: %s (key %s)", pj.table, pj.job.label, pj.key)
        rec = self.store.lookup(self.stage, pj.key)
        if rec is not None:
            return JobOutcome(dict(rec.result), cached=True)
        # named by job and short key: jobs of other settings read apart across compare runs
        child = self.tracker.child(f"{pj.job.label} {pj.key[:8]}", {
            TAG_STEP: pj.job.label, TAG_STAGE: JOB_STAGE, "optinter.model": pj.job.model,
            "optinter.compare_table": pj.table, "optinter.seed": pj.cfg.train.seed, "optinter.compare_key": pj.key})
        error: BaseException | None = None
        try:
            rec = self.store.run(self.stage, pj.key, self._inputs(pj.job, pj.cfg),
                                 lambda out: self._train(pj, out, child), run_id=child.run_id, name=pj.job.label)
        except BaseException as e:
            error = e
            raise
        finally:
            child.end(terminal_status(error))
        m = dict(rec.result)
        log.info("compare [%s]: %s → test AUC %.4f, log loss %.4f, %s params", pj.table, pj.job.label,
                 m.get("test_auc", float("nan")), m.get("test_logloss", float("nan")),
                 fmt_params(float(m.get("params", float("nan")))))
        return JobOutcome(m, cached=False)

    def _train(self, pj: PlannedJob, job_dir: Path, tracker: Tracker) -> dict[str, Any]:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "job.json").write_text(json.dumps({"job": dataclasses.asdict(pj.job), "config": pj.cfg.to_dict(),
                                                      "data_hash": self.data_hash}, indent=2, default=str))
        t0 = time.time()
        args = (pj.job, self.data_dir, job_dir, pj.cfg, tracker)
        metrics = dict(self.pool.call(self.train_fn, *args, name=pj.job.label) if self.pool is not None
                       else self.train_fn(*args))
        metrics.setdefault("model", pj.job.model)
        metrics.setdefault("seconds", time.time() - t0)
        metrics["job_seconds"] = time.time() - t0  # the whole job (a search → re-train's "seconds" is its re-train)
        if tracker.run_id:
            metrics["compare_run_id"] = tracker.run_id
        if not self.cc.keep_models:
            for p in list(job_dir.rglob("*.pt")):
                p.unlink()
        (job_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
        return json.loads(json.dumps(metrics, default=float))


def run_tables(tables: Sequence[Table], ctx: TableContext, runner: JobRunner,
               run_jobs: RunJobs = run_in_order) -> Runs:
    """Ask ``tables`` for the jobs they need and run them, one round of independent jobs at a time
    (through ``run_jobs``), until none asks for a new one; returns every requested job's metrics."""
    runs = Runs()
    while True:
        requests = [r for t in tables for r in t.jobs(ctx, runs) if r.job not in runs]
        if not requests:
            return runs
        keyed, new = runner.plan(requests)
        if new:
            runner.record(new, run_jobs(new, runner.run_one))
        for r, key in keyed:
            runs.add(r.job, runner.metrics(key))


# ---- the stage ------------------------------------------------------------------------------------------------
def run_compare(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], cc: CompareConfig | None = None,
                tracker: Tracker | None = None, *, train_fn: TrainFn | None = None,
                param_count_fn: ParamCountFn | None = None, run_jobs: RunJobs | None = None,
                pool: JobPool | None = None) -> dict[str, Any]:
    """The ``compare`` stage: train what the chosen tables need (cached) and write the tables.

    Writes into ``out_dir`` (atomically): ``table_<name>.csv`` / ``.md`` for each table,
    ``fig4.csv`` / ``fig4.png``, ``runs.csv`` (every job: key, cached?, metrics), ``tables.md``
    (all tables) and ``report.html``. ``train_fn`` defaults to :func:`stages_trainer`; each newly
    trained job logs to ``tracker.child(...)`` (a nested MLflow run under an ``MlflowTracker``).
    Each round of independent jobs runs on ``pool`` (default: a :class:`~optinter.cluster.JobPool` of
    :meth:`JobsConfig.from_env() <optinter.cluster.JobsConfig.from_env>`, closed at the end), or through
    ``run_jobs`` when given (then ``train_fn`` runs here). The job cache is ``cc.cache_dir``, else
    ``$OPTINTER_COMPARE_CACHE``, else ``compare_cache`` beside ``out_dir``. Returns paths and headline
    numbers.
    """
    if pool is None and run_jobs is None:
        with JobPool(JobsConfig.from_env()) as own:
            return run_compare(data_dir, out_dir, cc, tracker, train_fn=train_fn, param_count_fn=param_count_fn,
                               pool=own)
    t0 = time.time()
    cc = cc or CompareConfig()
    cc.validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    fm = FeatureMap.load(data_dir)
    tr = as_tracker(tracker)
    cache_dir = cc.cache_dir or os.environ.get(CACHE_ENV) or str(out_dir.parent / "compare_cache")
    runner = JobRunner(data_dir, fm, cc, cache_dir, train_fn or stages_trainer, tr, pool)
    models = order_models(cc.models) if cc.models else default_models()
    if not models:
        raise ValueError("compare: no models to train (none registered and none given with --models)")
    dataset = cc.dataset or fm.dataset
    ctx = TableContext(fm, cc, models, dataset, runner.config, param_count_fn or count_params)
    n, na = cc.seeds, cc.n_ablation
    tr.log_params({f"compare.{k}": (",".join(map(str, v)) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(cc).items() if k != "cache_dir"})
    tr.set_tags({"compare.cache_dir": str(cache_dir)})  # a machine path: a tag, not a param
    log.info("compare: tables %s; models %s; %d seeds (%d for ablations); cache %s",
             ",".join(cc.tables), ",".join(models), n, na, cache_dir)

    tables = [t for name, t in TABLES.items() if name in cc.tables]
    runs = run_tables(tables, ctx, runner, run_jobs or (pool.run_jobs if pool is not None else run_in_order))
    outputs = {t.name: t.build(ctx, runs) for t in tables}
    summary: dict[str, Any] = {}
    for out in outputs.values():
        summary.update(out.summary)
    files = _write_outputs(out_dir, data_dir, dataset, tables, outputs, runner, n, na, cache_dir)
    metrics: dict[str, float] = {"compare.jobs_trained": runner.n_trained, "compare.jobs_cached": runner.n_cached}
    for t in tables:
        df = outputs[t.name].df
        if t.log_metrics and "auc_mean" in df:
            for row in df.itertuples():
                key = str(row.model).replace(" ", "_")
                metrics[f"{t.name}.{key}.auc"] = row.auc_mean
                metrics[f"{t.name}.{key}.logloss"] = row.logloss_mean
    tr.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))})
    for f in files:
        tr.log_artifact(out_dir / f, "compare")
    summary.update({"out_dir": str(out_dir), "cache_dir": str(cache_dir), "tables": sorted(outputs),
                    "files": [str(out_dir / f) for f in files], "jobs_trained": runner.n_trained,
                    "jobs_cached": runner.n_cached, "seconds": time.time() - t0})
    log.info("compare: %d job(s) trained, %d cached; wrote %s in %.1f s", runner.n_trained, runner.n_cached,
             out_dir, summary["seconds"])
    return summary


def _write_outputs(out_dir: Path, data_dir: Path, dataset: str, tables: Sequence[Table],
                   outputs: Mapping[str, TableOutput], runner: JobRunner, n: int, na: int,
                   cache_dir: str | os.PathLike[str]) -> list[str]:
    """Every table's CSV / Markdown, its figures, ``runs.csv``, ``tables.md`` and ``report.html``,
    atomically into ``out_dir``; returns the file names."""
    files: list[str] = []
    with atomic_output_dir(out_dir, merge=True) as tmp:
        md_all = [f"# Compare — {dataset}\n",
                  f"{n} seed(s) per model ({na} for Tables VII–IX and Fig. 4); test-set metrics.\n"]
        figures: list[tuple[str, Path]] = []
        for t in tables:
            out = outputs[t.name]
            out.df.to_csv(tmp / f"{t.stem}.csv", index=False, float_format="%.10g")
            (tmp / f"{t.stem}.md").write_text(f"**{out.title}**\n\n" + to_markdown(out.md))
            files += [f"{t.stem}.csv", f"{t.stem}.md"]
            md_all.append(f"## {out.title}\n\n{to_markdown(out.md)}")
        for t in tables:
            for fig in outputs[t.name].figures:
                fig.draw(tmp / fig.file)
                files.append(fig.file)
                figures.append((fig.caption, tmp / fig.file))
                md_all.append(f"![{fig.alt}]({fig.file})\n")
        pd.DataFrame(runner.rows).to_csv(tmp / "runs.csv", index=False, float_format="%.10g")
        (tmp / "tables.md").write_text("\n".join(md_all))
        files += ["runs.csv", "tables.md"]
        write_report(tmp / REPORT_FILE, f"OptInter compare — {dataset}", data_dir=data_dir,
                     tables=[(outputs[t.name].title, outputs[t.name].md.to_dict("records")) for t in tables],
                     figures=figures,
                     notes=[f"{n} seed(s) per model; {runner.n_trained} job(s) trained, {runner.n_cached} from the "
                            f"cache ({cache_dir})."])
        files.append(REPORT_FILE)
    return files
