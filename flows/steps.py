"""One function per pipeline stage: cache lookup, MLflow runs, then the plain stage function.

Prefect-free, so every step can be called (and tested) directly; ``flows/pipeline.py`` only wraps
each in a ``@task``. A step

1. builds its key material (settings + upstream keys + input content hashes) and key,
2. reuses ``<artifact_root>/<stage>/<key>/`` when finished (unless forced) or an earlier run's folder
   given by ``from_run``; else calls the stage function on a fresh folder,
3. opens a nested MLflow run under the pipeline's parent run (``cached=true`` for reused stages,
   with ``optinter.source_run_id`` naming the run that computed it and a copy of its params and
   metric history), and logs params, final metrics, ``stage_seconds`` and the small output files.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from optinter import tracking as tr
from optinter.tracking import MlflowTracker, Tracker

from .cache import (MARKER, ArtifactStore, StageRecord, code_fingerprint, dir_fingerprint, file_fingerprint,
                    paths_fingerprint, stable_hash, stage_key)
from .spec import SEARCH_MODEL, PipelineSpec

log = logging.getLogger(__name__)

#: Output files logged as MLflow artifacts (small, human-readable); parquet and checkpoints stay
#: in the artifact root (the run's ``optinter.output_uri`` tag points there).
ARTIFACT_SUFFIXES = (".json", ".csv", ".md", ".html", ".png", ".svg", ".txt", ".yaml")
MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
ARCH_FILE = "architecture.json"
METRICS_FILE = "metrics.json"


class StageFailed(RuntimeError):
    """A stage function raised; the message names the stage (the cause is chained)."""


@dataclass
class Context:
    """Everything a step needs: the spec, the artifact store and the MLflow parent run."""

    spec: PipelineSpec
    store: ArtifactStore
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    reused: dict[str, StageRecord] = field(default_factory=dict)
    stage_runs: dict[str, str] = field(default_factory=dict)  # run name → MLflow run id (this pipeline run)

    def tracker(self, run_id: str) -> MlflowTracker:
        return MlflowTracker(run_id, tracking_uri=self.tracking_uri)


# ---- parent run ---------------------------------------------------------------------------------------

def open_context(spec: PipelineSpec, run_name: str | None = None, extra_tags: Mapping[str, str] | None = None
                 ) -> Context:
    """Resolve ``from_run``, create the experiment and the pipeline's parent run."""
    store = ArtifactStore(spec.artifact_root)
    reused = resolve_reference(spec.from_run, store, spec.tracking_uri) if spec.from_run else {}
    exp_id = tr.ensure_experiment(spec.experiment, spec.tracking_uri)
    tags = {tr.TAG_STAGE: "pipeline", tr.TAG_DATASET: spec.dataset_name, "optinter.targets": ",".join(spec.targets)}
    if spec.from_run:
        tags["optinter.from_run"] = spec.from_run
    tags.update(extra_tags or {})
    parent = tr.start_run(exp_id, run_name or f"{spec.dataset_name}-pipeline", tags, tracking_uri=spec.tracking_uri)
    ctx = Context(spec, store, spec.tracking_uri, exp_id, parent, reused)
    ctx.tracker(parent).log_params({
        "dataset": spec.dataset, "seed": spec.seed, "oov_threshold": spec.oov_threshold,
        "cross_threshold": spec.cross_threshold, "overrides": ";".join(spec.base_overrides + spec.overrides),
        "baselines": ",".join(spec.baselines), "stages": ",".join(spec.targets),
        "force": ",".join(spec.force), "from_run": spec.from_run, "artifact_root": spec.artifact_root,
        "raw": ";".join(spec.raw), "splits": json.dumps(spec.splits) if spec.splits else None,
        "synth": json.dumps(spec.synth, sort_keys=True) if spec.synth else None,
        "preprocess": json.dumps(spec.preprocess, sort_keys=True) if spec.preprocess else None,
    })
    log.info("MLflow parent run %s (experiment %r, %s)", parent, spec.experiment, spec.tracking_uri)
    return ctx


def close_context(ctx: Context, error: BaseException | None = None, summary: Mapping[str, Any] | None = None) -> None:
    """Finish the parent run: final metrics of the results table, ``FAILED`` with the error if any."""
    t = ctx.tracker(ctx.parent_run_id)
    if summary:
        t.set_tags({k: v for k, v in summary.get("tags", {}).items()})
        for row in summary.get("results", []):
            prefix = "" if row.get("model") == SEARCH_MODEL else f"{row.get('model')}."
            t.log_metrics({prefix + k: v for k, v in row.items() if _is_number(v)})
        for path in summary.get("artifacts", []):
            t.log_artifact(path)
    if error is not None:
        t.set_tags({tr.TAG_ERROR: f"{type(error).__name__}: {error}"[:5000]})
    tr.end_run(ctx.parent_run_id, "FAILED" if error is not None else "FINISHED", tracking_uri=ctx.tracking_uri)


# ---- references to earlier results ----------------------------------------------------------------------

def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith(".") or Path(ref).exists()


def resolve_reference(ref: str, store: ArtifactStore, tracking_uri: str) -> dict[str, StageRecord]:
    """Stage folders to reuse from ``ref`` (an MLflow run id or a stage output folder / URL).

    Returns the referenced stage and every stage upstream of it, by stage name. A pipeline
    (parent) run id means its ``search`` stage (or ``preprocess`` when it had no search).
    """
    if _looks_like_path(ref):
        rec = store.load(ref)
    else:
        run = tr.get_run(ref, tracking_uri)  # ValueError naming the run id when missing
        tags = run.data.tags
        if tags.get(tr.TAG_STAGE) == "pipeline":
            children = {c.data.tags.get(tr.TAG_STAGE): c for c in tr.child_runs(ref, tracking_uri)}
            pick = next((children[s] for s in ("search", "preprocess") if s in children), None)
            if pick is None:
                raise ValueError(f"from_run {ref!r}: pipeline run has no search or preprocess stage to reuse")
            tags = pick.data.tags
        out = tags.get(tr.TAG_OUTPUT)
        if not out:
            raise ValueError(f"from_run {ref!r}: MLflow run has no {tr.TAG_OUTPUT!r} tag (not an optinter stage run)")
        rec = store.load(out)
    found = {rec.stage: rec}
    todo = [rec]
    while todo:
        r = todo.pop()
        root = r.uri[: -len(f"/{r.stage}/{r.key}")]
        up_store = store if root == store.root else ArtifactStore(root)
        for stage, key in r.inputs.get("upstream", {}).items():
            if stage in found:
                continue
            u = up_store.lookup(stage, key)
            if u is None:
                raise ValueError(f"from_run {ref!r}: its {stage} output {root}/{stage}/{key} is missing")
            found[stage] = u
            todo.append(u)
    log.info("from_run %s: reusing %s", ref, ", ".join(f"{s}={r.uri}" for s, r in found.items()))
    return found


# ---- the generic step -------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and not math.isfinite(v))


_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")
#: Nested tables of more numbers than this (e.g. per-pair vocabulary sizes) are not logged as metrics.
MAX_NESTED_METRICS = 12


def metric_name(key: str) -> str:
    """``key`` with characters MLflow refuses (e.g. ``|`` of pair names) replaced by ``_``."""
    return _BAD_METRIC_CHARS.sub("_", key)


def _numeric(d: Mapping[str, Any], prefix: str = "", depth: int = 1) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if _is_number(v):
            out[metric_name(prefix + str(k))] = float(v)
        elif isinstance(v, Mapping) and depth > 0 and len(v) <= MAX_NESTED_METRICS:
            out.update(_numeric(v, f"{prefix}{k}.", depth - 1))
    return out


def final_metrics(rec: StageRecord) -> dict[str, float]:
    """Metrics of a finished stage: ``metrics.json`` (or the stage's returned numbers) + timing."""
    m = _numeric(rec.result)
    mpath = rec.path / METRICS_FILE
    if mpath.exists():
        m.update(_numeric(json.loads(mpath.read_text())))
    m["stage_seconds"] = float(rec.seconds)
    return m


def _logged_artifacts(t: MlflowTracker, path: str | None = None) -> set[str]:
    """Base names of every artifact already in the run (recursively)."""
    names: set[str] = set()
    for f in t.client.list_artifacts(t.run_id, path):
        if f.is_dir:
            names |= _logged_artifacts(t, f.path)
        else:
            names.add(f.path.rsplit("/", 1)[-1])
    return names


def log_outputs(t: MlflowTracker, rec: StageRecord) -> None:
    """Final metrics and the small output files of ``rec``, skipping what the stage logged itself."""
    have = set(t.client.get_run(t.run_id).data.metrics)
    t.log_metrics({k: v for k, v in final_metrics(rec).items() if k not in have or k == "stage_seconds"})
    logged = _logged_artifacts(t)
    for p in sorted(rec.path.rglob("*")):
        if (p.is_file() and p.suffix in ARTIFACT_SUFFIXES and p.stat().st_size <= MAX_ARTIFACT_BYTES
                and p.name not in logged):
            rel = p.parent.relative_to(rec.path)
            t.log_artifact(p, None if str(rel) == "." else rel.as_posix())


def _copy_source_run(ctx: Context, t: MlflowTracker, source_run_id: str | None) -> None:
    """Params, metric history and artifacts of the run that computed a reused stage (when reachable)."""
    if not source_run_id:
        return
    try:
        src = t.client.get_run(source_run_id)
    except Exception:  # noqa: BLE001 — another tracking store: nothing to copy
        return
    t.log_params(dict(src.data.params))
    from mlflow.entities import Metric

    for key in src.data.metrics:
        hist = t.client.get_metric_history(source_run_id, key)
        ms = [Metric(m.key, m.value, m.timestamp, m.step) for m in hist]
        for i in range(0, len(ms), 500):
            t.client.log_batch(t.run_id, metrics=ms[i:i + 500])
    import tempfile

    with tempfile.TemporaryDirectory(prefix="optinter-artifacts-") as tmp:
        try:
            local = t.client.download_artifacts(source_run_id, "", tmp)
        except Exception as e:  # noqa: BLE001 — artifacts gone: the local files are logged instead
            log.warning("could not copy artifacts of run %s: %s", source_run_id, e)
            return
        if any(Path(local).iterdir()):
            t.client.log_artifacts(t.run_id, local)


def execute(ctx: Context, stage: str, inputs: Mapping[str, Any], compute: Callable[[Path, Tracker], Mapping[str, Any]],
            *, name: str | None = None, model: str | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None, reuse: StageRecord | None = None) -> StageRecord:
    """Reuse or compute one stage folder, with its nested MLflow run (see the module docstring)."""
    spec = ctx.spec
    name = name or stage
    inputs = {**inputs, "code": code_fingerprint(stage)}
    key = stage_key(stage, inputs, code=False)
    forced = spec.forced(stage, model)
    rec = None
    if reuse is not None and not forced:
        rec = reuse
    elif not forced:
        rec = ctx.store.lookup(stage, key)
    run_tags = {tr.TAG_STAGE: stage, tr.TAG_DATASET: spec.dataset_name, tr.TAG_CACHED: str(rec is not None).lower()}
    if model:
        run_tags[tr.TAG_MODEL] = model
    run_tags.update({k: v for k, v in (tags or {}).items() if v is not None})
    if rec is not None:
        run_tags.update({tr.TAG_KEY: rec.key, tr.TAG_OUTPUT: rec.uri, tr.TAG_SOURCE_RUN: rec.run_id or ""})
        run_id = tr.start_run(ctx.experiment_id, name, run_tags, ctx.parent_run_id, ctx.tracking_uri)
        t = ctx.tracker(run_id)
        try:
            _copy_source_run(ctx, t, rec.run_id)
            t.log_params(dict(params or {}))
            log_outputs(t, rec)
        finally:
            tr.end_run(run_id, "FINISHED", ctx.tracking_uri)
        log.info("%s: reused %s (computed by MLflow run %s)", name, rec.uri, rec.run_id)
        ctx.stage_runs[name] = run_id
        return rec

    run_tags.update({tr.TAG_KEY: key, tr.TAG_OUTPUT: ctx.store.uri(stage, key)})
    run_id = tr.start_run(ctx.experiment_id, name, run_tags, ctx.parent_run_id, ctx.tracking_uri)
    ctx.stage_runs[name] = run_id
    t = ctx.tracker(run_id)
    t.log_params(dict(params or {}))
    log.info("%s: computing %s%s", name, ctx.store.uri(stage, key), " (forced)" if forced else "")
    try:
        rec = ctx.store.run(stage, key, inputs, lambda out: compute(out, t), force=True, run_id=run_id, name=name)
        log_outputs(t, rec)
    except BaseException as e:
        t.set_tags({tr.TAG_ERROR: f"{type(e).__name__}: {e}"[:5000]})
        tr.end_run(run_id, "FAILED", ctx.tracking_uri)
        raise
    tr.end_run(run_id, "FINISHED", ctx.tracking_uri)
    return rec


# ---- helpers for key material --------------------------------------------------------------------------

def arch_hash(search: StageRecord) -> str:
    """Content hash of the searched architecture (``architecture.json``)."""
    return stable_hash(json.loads((search.path / ARCH_FILE).read_text()))


def _tuplify(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return out


# ---- the stages --------------------------------------------------------------------------------------------

def step_synth(ctx: Context) -> StageRecord:
    """Synthetic data with planted interactions (``preprocess.synthetic.generate``)."""
    cfg = dict(ctx.spec.synth or {})

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from preprocess.synthetic import SynthConfig, generate

        truth = generate(SynthConfig(**_tuplify(cfg)), out)
        return {"bayes": truth.get("bayes", {}), "n_pairs": len(truth.get("pairs", {}))}

    return execute(ctx, "synth", {"synth": cfg}, compute, params={f"synth.{k}": v for k, v in cfg.items()},
                   reuse=ctx.reused.get("synth"))


def _preprocess_data_inputs(ctx: Context, synth: StageRecord | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(key material describing the input data, the data-path settings for the stage function)."""
    spec = ctx.spec
    if synth is not None:
        paths = {s: str(synth.path / f"{s}.csv") for s in ("train", "valid", "test")}
        return {"upstream": {"synth": synth.key}}, {"splits": paths}
    if spec.splits:
        return ({"splits": {s: file_fingerprint(p) for s, p in spec.splits.items()}}, {"splits": dict(spec.splits)})
    return {"raw": paths_fingerprint(spec.raw)}, {"raw": list(spec.raw)}


def preprocess_settings(spec: PipelineSpec) -> dict[str, Any]:
    """The preprocessing settings that go into its key and its MLflow params."""
    options = {k: v for k, v in spec.preprocess.items() if k not in PREPROCESS_RUNTIME_OPTIONS}
    return {"schema": spec.schema, "oov_threshold": spec.oov_threshold, "cross_threshold": spec.cross_threshold,
            "seed": spec.seed, "options": options}


def step_preprocess(ctx: Context, synth: StageRecord | None) -> StageRecord:
    """Raw or pre-split files → encoded parquet + ``feature_map.json`` (the Dask jobs)."""
    spec = ctx.spec
    data_key, data_paths = _preprocess_data_inputs(ctx, synth)
    settings = preprocess_settings(spec)
    params = {"dataset": spec.dataset_name, "oov_threshold": spec.oov_threshold or spec.schema.get("oov_threshold"),
              "cross_threshold": spec.cross_threshold or spec.schema.get("cross_threshold"), "seed": spec.seed,
              **{f"preprocess.{k}": v for k, v in spec.preprocess.items()}}

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        return call_preprocess(spec, data_paths, out)

    return execute(ctx, "preprocess", {**data_key, **settings}, compute, params=params,
                   reuse=ctx.reused.get("preprocess"))


#: ``PreprocessConfig`` fields that only say where / how fast to compute: not part of the cache key.
PREPROCESS_RUNTIME_OPTIONS = ("scheduler", "n_workers", "threads_per_worker", "processes")


def call_preprocess(spec: PipelineSpec, data_paths: Mapping[str, Any], out: Path) -> Mapping[str, Any]:
    """Build the ``PreprocessConfig`` and run ``preprocess.pipeline.run_preprocess``.

    Its Dask jobs run on a ``distributed`` cluster: ``DASK_SCHEDULER_ADDRESS`` (or the
    ``scheduler`` option) when set, else a LocalCluster started inside the call.
    """
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    kw: dict[str, Any] = {"dataset": spec.dataset, "out": str(out), "seed": spec.seed, **spec.preprocess}
    if "raw" in data_paths:
        kw["raw"] = list(data_paths["raw"])
    else:
        kw.update({s: [p] for s, p in data_paths["splits"].items()})
    if spec.oov_threshold is not None:
        kw["oov_threshold"] = spec.oov_threshold
    if spec.cross_threshold is not None:
        kw["cross_threshold"] = spec.cross_threshold
    summary = dict(run_preprocess(PreprocessConfig(**kw)))
    total = float(summary.get("seconds", {}).get("total", 0.0) or 0.0)
    rows = summary.get("rows_read")
    if total > 0 and isinstance(rows, (int, float)):
        summary["rows_per_s"] = rows / total
    return summary


def _model_params(cfg: Any, model: str) -> dict[str, Any]:
    return {"model": model, **cfg.flat()}


def step_search(ctx: Context, data: StageRecord) -> StageRecord:
    """OptInter search (Algorithm 1) → ``architecture.json``."""
    cfg = ctx.spec.run_config("search", SEARCH_MODEL)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_search

        return run_search(data.path, out, cfg, tracker=t, model=SEARCH_MODEL)

    rec = execute(ctx, "search", {"upstream": {"preprocess": data.key}, "config": cfg.to_dict()}, compute,
                  model=SEARCH_MODEL, params=_model_params(cfg, SEARCH_MODEL),
                  tags={tr.TAG_DATA_HASH: data.key}, reuse=ctx.reused.get("search"))
    ctx.tracker(ctx.stage_runs["search"]).set_tags({tr.TAG_ARCH_HASH: arch_hash(rec)})
    return rec


def step_retrain(ctx: Context, data: StageRecord, search: StageRecord) -> StageRecord:
    """Re-train the searched architecture from scratch; evaluates on valid / test."""
    cfg = ctx.spec.run_config("retrain", SEARCH_MODEL)
    ah = arch_hash(search)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_retrain

        return run_retrain(data.path, search.path / ARCH_FILE, out, cfg, tracker=t)

    return execute(ctx, "retrain", {"upstream": {"preprocess": data.key, "search": search.key}, "arch": ah,
                                    "config": cfg.to_dict()}, compute, name=f"retrain:{SEARCH_MODEL}",
                   model=SEARCH_MODEL, params=_model_params(cfg, SEARCH_MODEL),
                   tags={tr.TAG_DATA_HASH: data.key, tr.TAG_ARCH_HASH: ah}, reuse=ctx.reused.get("retrain"))


def step_train(ctx: Context, data: StageRecord, model: str) -> StageRecord:
    """Train one baseline model on the same encoded data."""
    cfg = ctx.spec.run_config("baselines", model)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_train

        return run_train(data.path, model, out, cfg, tracker=t)

    return execute(ctx, "train", {"upstream": {"preprocess": data.key}, "model": model, "config": cfg.to_dict()},
                   compute, name=f"train:{model}", model=model, params=_model_params(cfg, model),
                   tags={tr.TAG_DATA_HASH: data.key})


def step_evaluate(ctx: Context, trained: Sequence[StageRecord]) -> StageRecord:
    """The results table of every trained model (test / valid AUC, log loss, #params, arch counts)."""
    names = [r.name for r in trained]

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from .results import build_results

        return build_results([r.path for r in trained], out)

    return execute(ctx, "evaluate", {"trained": {r.name: r.key for r in trained}}, compute,
                   params={"models": ",".join(names)},
                   tags={tr.TAG_DATA_HASH: _data_key(trained)})


def _data_key(records: Sequence[StageRecord]) -> str | None:
    for r in records:
        up = r.inputs.get("upstream", {})
        if "preprocess" in up:
            return up["preprocess"]
    return None


def step_analyze(ctx: Context, data: StageRecord, search: StageRecord | None, synth: StageRecord | None = None,
                 trained: Sequence[StageRecord] = ()) -> StageRecord:
    """Mutual information of every pair vs the selected method; figures and the HTML report."""
    ah = arch_hash(search) if search is not None else None
    truth = synth.path / "truth.json" if synth is not None and (synth.path / "truth.json").exists() else None
    metrics = [r.path / METRICS_FILE for r in trained if (r.path / METRICS_FILE).exists()]
    inputs = {"upstream": {"preprocess": data.key, **({"search": search.key} if search else {})}, "arch": ah,
              "truth": file_fingerprint(truth) if truth else None,
              # the trained stages' keys, not their metrics.json bytes (timings differ between reruns)
              "trained": {r.name: r.key for r in trained if (r.path / METRICS_FILE).exists()}}

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.analysis import run_analyze

        return run_analyze(data.path, out, arch_path=search.path / ARCH_FILE if search else None, tracker=t,
                           truth_path=truth, metrics_paths=metrics or None,
                           title=f"OptInter on {ctx.spec.dataset_name}")

    return execute(ctx, "analyze", inputs, compute, params={"dataset": ctx.spec.dataset_name},
                   tags={tr.TAG_DATA_HASH: data.key, tr.TAG_ARCH_HASH: ah}, reuse=ctx.reused.get("analyze"))


def compare_config(ctx: Context) -> Any:
    """The ``CompareConfig``: the ``compare`` parameter, the run's overrides, a cache kept across runs."""
    from optinter.experiments import CompareConfig


    kw = dict(ctx.spec.compare or {})
    kw.setdefault("overrides", tuple(ctx.spec.overrides_for("compare", "")))
    kw.setdefault("dataset", ctx.spec.dataset_name)
    kw.setdefault("cache_dir", str(ctx.store.work_dir / "compare" / "_jobs_cache"))
    cc = CompareConfig(**kw)
    cc.validate()
    return cc


def step_compare(ctx: Context, data: StageRecord) -> StageRecord:
    """The paper's comparison tables / figures (``optinter.experiments.run_compare``); one nested
    MLflow run per trained job under the compare stage's run."""
    import dataclasses

    cc = compare_config(ctx)
    settings = {k: v for k, v in dataclasses.asdict(cc).items() if k not in ("cache_dir", "keep_models")}

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.experiments import run_compare

        return run_compare(data.path, out, cc, tracker=t)

    return execute(ctx, "compare", {"upstream": {"preprocess": data.key}, "config": settings}, compute,
                   params={f"compare.{k}": v for k, v in settings.items()}, tags={tr.TAG_DATA_HASH: data.key})


def step_register(ctx: Context, trained: Sequence[StageRecord]) -> dict[str, str]:
    """Register the models named by ``spec.register_as`` (model → name) from this run's training runs;
    returns model → ``models:/<name>/<version>`` (also tagged on the model's run)."""
    from optinter.pyfunc import register

    by_model = {(r.name.split(":", 1)[-1]): r for r in trained}
    out: dict[str, str] = {}
    for model, name in ctx.spec.register_as.items():
        rec = by_model.get(model)
        if rec is None:
            raise ValueError(f"register: model {model!r} was not trained in this run")
        run_id = ctx.stage_runs[rec.name]
        out[model] = register(run_id, name, ctx.tracking_uri)
        ctx.tracker(run_id).set_tags({"optinter.registered_model": out[model]})
        log.info("%s: registered as %s", rec.name, out[model])
    return out


def _score_model(ctx: Context, retrain: StageRecord | None) -> tuple[Path, dict[str, Any]]:
    """The local bundle the score stage uses and its key material (the bundle's content, not its name)."""
    from optinter.predict import resolve_model

    ref = (ctx.spec.score or {}).get("model")
    if ref is None:
        if retrain is None:
            raise ValueError("score: no score.model given and no re-trained model in this run")
        return retrain.path, {"upstream": {"retrain": retrain.key}}
    dst = ctx.store.work_dir / "score" / "_models" / stable_hash(str(ref), 12)
    if dst.exists():
        import shutil

        shutil.rmtree(dst)  # a registry alias or "latest" may point elsewhere now: fetch again
    bundle = resolve_model(str(ref), ctx.tracking_uri, dst=dst)
    return bundle, {"model": dir_fingerprint(bundle)}


def step_score(ctx: Context, retrain: StageRecord | None = None) -> StageRecord:
    """Score raw files with a trained model (``score.model``, default this run's re-trained OptInter)
    → ``scores.parquet`` + ``summary.json`` + ``histogram.png``; logs rows scored, rows/s, the score
    histogram (``optinter.scoring.run_score``)."""
    from .spec import SCORE_RUNTIME_OPTIONS

    sc = dict(ctx.spec.score or {})
    bundle, model_key = _score_model(ctx, retrain)
    options = {k: v for k, v in sc.items() if k not in ("model", "raw")}
    settings = {k: v for k, v in options.items() if k not in SCORE_RUNTIME_OPTIONS}

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.scoring import run_score

        summary = run_score(bundle, sc["raw"], out, tracker=t, tracking_uri=ctx.tracking_uri, **options)
        return {k: v for k, v in summary.items() if k not in ("histogram", "inputs")}

    return execute(ctx, "score", {**model_key, "raw": paths_fingerprint(sc["raw"]), "settings": settings}, compute,
                   params={"model_ref": str(sc["model"]) if sc.get("model") else getattr(retrain, "uri", ""),
                           "files": len(sc["raw"])})


# ---- whole pipeline (plain, in order; the Prefect flow mirrors it task by task) ----------------------------

def summarize(ctx: Context, records: Mapping[str, StageRecord], evaluate: StageRecord | None) -> dict[str, Any]:
    """What the flow returns: parent run id, every stage's folder and run, the results table."""
    results: list[dict[str, Any]] = []
    artifacts: list[str] = []
    if evaluate is not None:
        results = json.loads((evaluate.path / "results.json").read_text())["rows"]
        artifacts = [str(evaluate.path / f) for f in ("results.md", "results.csv") if (evaluate.path / f).exists()]
    tags = {}
    if "preprocess" in records:
        tags[tr.TAG_DATA_HASH] = records["preprocess"].key
    if "search" in records:
        tags[tr.TAG_ARCH_HASH] = arch_hash(records["search"])
    return {
        "parent_run_id": ctx.parent_run_id,
        "experiment_id": ctx.experiment_id,
        "tracking_uri": ctx.tracking_uri,
        "ui_command": tr.ui_command(ctx.tracking_uri),
        "artifact_root": ctx.store.root,
        "stages": {n: {"stage": r.stage, "key": r.key, "uri": r.uri, "local_dir": r.local_dir, "cached": r.cached,
                       "source_run_id": r.run_id, "run_id": ctx.stage_runs.get(n)} for n, r in records.items()},
        "results": results,
        "tags": tags,
        "artifacts": artifacts,
    }


__all__ = [
    "Context", "open_context", "close_context", "resolve_reference", "execute", "step_synth", "step_preprocess",
    "step_search", "step_retrain", "step_train", "step_evaluate", "step_analyze", "step_compare", "step_register",
    "step_score", "summarize",
    "final_metrics", "MARKER",
]
