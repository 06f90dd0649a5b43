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
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from optinter import tracking as tr
from optinter.cluster import JobPool
from optinter.tracking import MlflowTracker, Tracker

from .cache import (MARKER, ArtifactStore, StageRecord, code_fingerprint, dir_fingerprint, file_fingerprint,
                    paths_fingerprint, stable_hash, stage_key)
from .spec import FULL_PIPELINE, SEARCH_MODEL, PipelineSpec, check_run_configs

log = logging.getLogger(__name__)

#: Output files logged as MLflow artifacts (small, human-readable); parquet and checkpoints stay
#: in the artifact root (the run's ``optinter.output_uri`` tag points there).
ARTIFACT_SUFFIXES = (".json", ".csv", ".md", ".html", ".png", ".svg", ".txt", ".yaml")
MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
#: Output files that are data read by later stages: never uploaded to MLflow; the stage run's
#: ``optinter.output_uri`` points at them and the runs that read them log them as dataset inputs.
DATA_FILES: dict[str, tuple[str, ...]] = {"synth": ("train.csv", "valid.csv", "test.csv")}
#: Why a stage was recomputed although its key had not changed (``--force``, or an input recomputed).
TAG_RECOMPUTED = "optinter.recomputed"
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
    stage_runs: dict[str, str] = field(default_factory=dict)  # step name → MLflow run id (this pipeline run)
    #: keys of the stage folders this pipeline run computed (their dependents recompute too)
    fresh: set[str] = field(default_factory=set)
    #: where independent training jobs run (``spec.jobs``; a LocalCluster starts on the first job that needs it)
    jobs: JobPool = field(default_factory=JobPool)

    def tracker(self, run_id: str) -> MlflowTracker:
        return MlflowTracker(run_id, tracking_uri=self.tracking_uri)


# ---- parent run ---------------------------------------------------------------------------------------

def open_context(spec: PipelineSpec, run_name: str | None = None, extra_tags: Mapping[str, str] | None = None
                 ) -> Context:
    """Resolve ``from_run`` (inheriting its overrides), create the experiment and the pipeline's parent
    run, and mark ``KILLED`` the runs that dead processes left ``RUNNING``."""
    store = ArtifactStore(spec.artifact_root)
    reused: dict[str, StageRecord] = {}
    if spec.from_run:
        reused, inherited = resolve_reference(spec.from_run, store, spec.tracking_uri)
        if inherited:
            spec.inherited_overrides = list(inherited)
            check_run_configs(spec)
            log.info("from_run %s: inheriting its overrides %s (this run's own come after them)", spec.from_run,
                     inherited)
    exp_id = tr.ensure_experiment(spec.experiment, spec.tracking_uri)
    tags = {tr.TAG_STAGE: "pipeline", tr.TAG_DATASET: spec.dataset_name, "optinter.targets": ",".join(spec.targets),
            tr.TAG_OVERRIDES: json.dumps(spec.user_overrides), TAG_ARTIFACT_ROOT: spec.artifact_root}
    if spec.from_run:
        tags["optinter.from_run"] = spec.from_run
    if spec.raw:
        tags["optinter.raw"] = ";".join(spec.raw)
    if spec.splits:
        tags["optinter.splits"] = json.dumps(spec.splits)
    tags.update(extra_tags or {})
    parent = tr.start_run(exp_id, run_name or pipeline_run_name(spec), tags, tracking_uri=spec.tracking_uri)
    tr.mark_stale_runs(exp_id, spec.tracking_uri, found_by=parent)
    ctx = Context(spec, store, spec.tracking_uri, exp_id, parent, reused, jobs=JobPool(spec.jobs_config()))
    # machine paths (artifact root, raw files, a from_run folder) are tags above, not params
    ctx.tracker(parent).log_params({
        "dataset": Path(spec.dataset).name, "seed": spec.seed, "oov_threshold": spec.oov_threshold,
        "cross_threshold": spec.cross_threshold,
        "overrides": ";".join(spec.base_overrides + spec.user_overrides),
        "inherited_overrides": ";".join(spec.inherited_overrides) or None,
        "baselines": ",".join(spec.baselines), "stages": ",".join(spec.targets),
        "force": ",".join(spec.force), "from_run": _portable_ref(spec.from_run, store),
        "raw": ";".join(Path(p).name for p in spec.raw),
        "splits": json.dumps({k: Path(v).name for k, v in spec.splits.items()}) if spec.splits else None,
        "synth": json.dumps(spec.synth, sort_keys=True) if spec.synth else None,
        "preprocess": json.dumps(spec.preprocess, sort_keys=True) if spec.preprocess else None,
    })
    log.info("MLflow parent run %s (experiment %r, %s)", parent, spec.experiment, spec.tracking_uri)
    return ctx


#: Tag naming the artifact root of a pipeline run (a machine path: not a param).
TAG_ARTIFACT_ROOT = "optinter.artifact_root"


def spec_key(spec: PipelineSpec) -> str:
    """A hash of what a pipeline run computes (data, settings, stages): equal for reruns of the same."""
    d = spec.to_dict()
    for k in ("artifact_root", "force", "experiment", "tracking_uri", "needed", "jobs"):
        d.pop(k, None)
    return stable_hash(d)


def pipeline_run_name(spec: PipelineSpec) -> str:
    """The parent run's name: dataset, what was run and a short key, e.g. ``synthetic full-pipeline 3f9a2c1d``
    or ``criteo retrain 0b7e4d22 from 5d1c9a0e`` (the same for reruns of the same settings)."""
    what = "full-pipeline" if list(spec.targets) == list(FULL_PIPELINE) else "+".join(spec.targets)
    name = f"{spec.dataset_name} {what} {spec_key(spec)[:8]}"
    if spec.from_run:
        name += f" from {Path(spec.from_run.rstrip('/')).name[:8]}"
    if spec.force:
        name += f" force={','.join(spec.force)}"
    return name


def _portable_ref(ref: str | None, store: ArtifactStore) -> str | None:
    """A ``from_run`` reference as a param: run ids as they are, folders relative to the artifact root
    (``None`` for a folder elsewhere: the ``optinter.from_run`` tag has it)."""
    if not ref or not _looks_like_path(ref):
        return ref
    if "://" not in ref and store.local:
        p = Path(ref).expanduser().resolve()
        if p.is_relative_to(store.root):
            return p.relative_to(store.root).as_posix()
        return None
    return ref[len(store.root) + 1:] if ref.startswith(store.root + "/") else None


def _one_error(error: BaseException) -> str:
    msg = str(error)
    sig = getattr(error, "signal", None)  # Prefect's TerminationSignal has no message, only its signal
    if isinstance(sig, int) and msg in ("", str(sig)):
        msg = f"terminated by {signal.Signals(sig).name}"
    return f"{type(error).__name__}: {msg}" if msg else type(error).__name__


def error_text(error: BaseException) -> str:
    """``Type: message``, then each cause not already in the text (``; caused by Type: message``)."""
    text = _one_error(error)
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    seen = {id(error)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if str(cause) not in text:
            text += f"; caused by {_one_error(cause)}"
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return text


def _end_with_error(t: MlflowTracker, run_id: str, error: BaseException, tracking_uri: str) -> None:
    """Tag the error (``KILLED`` runs also say why) and end the run ``FAILED`` or ``KILLED``."""
    status = tr.terminal_status(error)
    tags = {tr.TAG_ERROR: error_text(error)[:5000]}
    if status == "KILLED":
        tags[tr.TAG_KILLED] = f"interrupted: {error_text(error)}"[:5000]
    t.set_tags(tags)
    tr.end_run(run_id, status, tracking_uri=tracking_uri)


def close_context(ctx: Context, error: BaseException | None = None, summary: Mapping[str, Any] | None = None) -> None:
    """Finish the parent run: final metrics of the results table; ``FAILED`` (or ``KILLED`` when
    interrupted) with the error if any; stops the training jobs' LocalCluster if one was started."""
    ctx.jobs.close()
    t = ctx.tracker(ctx.parent_run_id)
    if summary:
        t.set_tags({k: v for k, v in summary.get("tags", {}).items()})
        for row in summary.get("results", []):
            prefix = "" if row.get("model") == SEARCH_MODEL else f"{row.get('model')}."
            t.log_metrics({prefix + k: v for k, v in row.items() if _is_number(v)})
        for path in summary.get("artifacts", []):
            t.log_artifact(path)
    if error is not None:
        _end_with_error(t, ctx.parent_run_id, error, ctx.tracking_uri)
    else:
        tr.end_run(ctx.parent_run_id, "FINISHED", tracking_uri=ctx.tracking_uri)


# ---- references to earlier results ----------------------------------------------------------------------

def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith(".") or Path(ref).exists()


def resolve_reference(ref: str, store: ArtifactStore, tracking_uri: str
                      ) -> tuple[dict[str, StageRecord], list[str] | None]:
    """Stage folders to reuse from ``ref`` (an MLflow run id or a stage output folder / URL), and
    the overrides of the run that made it (``None`` when unknown).

    Returns the referenced stage and every stage upstream of it, by stage name. A pipeline
    (parent) run id means its ``search`` stage (or ``preprocess`` when it had no search). The
    overrides come from the referenced run's ``optinter.overrides`` tag, or for a folder from its
    marker (those of the run that computed it).
    """
    overrides: list[str] | None = None
    if _looks_like_path(ref):
        rec = store.load(ref)
        overrides = rec.meta.get("overrides")
    else:
        run = tr.get_run(ref, tracking_uri)  # ValueError naming the run id when missing
        tags = run.data.tags
        if tr.TAG_OVERRIDES in tags:
            overrides = json.loads(tags[tr.TAG_OVERRIDES])
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
        if overrides is None:
            overrides = rec.meta.get("overrides")
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
    return found, overrides


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


def _artifact_infos(t: MlflowTracker, run_id: str, path: str | None = None) -> list[Any]:
    """Every artifact file of a run (recursively), as MLflow ``FileInfo``s."""
    out: list[Any] = []
    for f in t.client.list_artifacts(run_id, path):
        out += _artifact_infos(t, run_id, f.path) if f.is_dir else [f]
    return out


def _logged_artifacts(t: MlflowTracker) -> set[str]:
    """Base names of every artifact already in the run (recursively)."""
    return {f.path.rsplit("/", 1)[-1] for f in _artifact_infos(t, t.run_id)}


def _is_artifact(stage: str, name: str, size: int) -> bool:
    """Whether an output file is logged as an MLflow artifact: small and human-readable, not data."""
    return Path(name).suffix in ARTIFACT_SUFFIXES and size <= MAX_ARTIFACT_BYTES and name not in DATA_FILES.get(stage, ())


def log_outputs(t: MlflowTracker, rec: StageRecord) -> None:
    """Final metrics and the small output files of ``rec``.

    A stage that logged metrics itself (or whose run copied them from the run that computed it)
    keeps its own: only ``stage_seconds`` is added, as the numbers of its result are the same
    figures under other keys. Data files are not uploaded (see :data:`DATA_FILES`).
    """
    have = set(t.client.get_run(t.run_id).data.metrics)
    m = final_metrics(rec) if not have else {"stage_seconds": float(rec.seconds)}
    t.log_metrics({k: v for k, v in m.items() if k not in have})
    logged = _logged_artifacts(t)
    for p in sorted(rec.path.rglob("*")):
        if p.is_file() and _is_artifact(rec.stage, p.name, p.stat().st_size) and p.name not in logged:
            rel = p.parent.relative_to(rec.path)
            t.log_artifact(p, None if str(rel) == "." else rel.as_posix())


def _copy_source_run(t: MlflowTracker, rec: StageRecord) -> None:
    """Params, metric history, small artifacts and the MLflow model of the run that computed a reused
    stage (when reachable)."""
    if not rec.run_id:
        return
    try:
        src = t.client.get_run(rec.run_id)
    except Exception:  # noqa: BLE001 — another tracking store: nothing to copy
        return
    t.log_params(dict(src.data.params))
    from mlflow.entities import Metric

    for key in src.data.metrics:
        hist = t.client.get_metric_history(rec.run_id, key)
        ms = [Metric(m.key, m.value, m.timestamp, m.step) for m in hist]
        for i in range(0, len(ms), 500):
            t.client.log_batch(t.run_id, metrics=ms[i:i + 500])
    import tempfile

    with tempfile.TemporaryDirectory(prefix="optinter-artifacts-") as tmp:
        try:
            files = [f for f in _artifact_infos(t, rec.run_id)
                     if _is_artifact(rec.stage, f.path.rsplit("/", 1)[-1], f.file_size or 0)
                     or f.path.startswith(f"{tr.MODEL_ARTIFACT}/")]  # the logged MLflow model, whole
            for f in files:
                t.client.download_artifacts(rec.run_id, f.path, tmp)
        except Exception as e:  # noqa: BLE001 — artifacts gone: the local files are logged instead
            log.warning("could not copy artifacts of run %s: %s", rec.run_id, e)
            return
        if any(Path(tmp).iterdir()):
            t.client.log_artifacts(t.run_id, tmp)


def _upstream_keys(inputs: Mapping[str, Any]) -> dict[str, str]:
    """The stage folders a stage reads, by name → key: its key material's ``upstream`` and ``trained``."""
    return {**inputs.get("upstream", {}), **inputs.get("trained", {})}


def run_name(name: str, key: str) -> str:
    """A stage run's MLflow name: the step and a short key (``retrain:optinter 3f9a2c1d``), so runs of
    different settings read apart in the compare view across pipeline runs; the step alone is the
    ``optinter.step`` tag."""
    return f"{name} {key[:8]}"


def execute(ctx: Context, stage: str, inputs: Mapping[str, Any], compute: Callable[[Path, Tracker], Mapping[str, Any]],
            *, name: str | None = None, model: str | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None, reuse: StageRecord | None = None,
            datasets: Sequence[tr.DatasetRef] = ()) -> StageRecord:
    """Reuse or compute one stage folder, with its nested MLflow run (see the module docstring).

    The stage is recomputed, even with an unchanged key, when it is forced or when a stage folder it
    reads was computed in this pipeline run (so ``--force search`` also recomputes what follows).
    ``datasets`` are logged as the run's dataset inputs (references, nothing is copied).
    """
    spec = ctx.spec
    name = name or stage
    inputs = {**inputs, "code": code_fingerprint(compute)}
    key = stage_key(stage, inputs)
    after = sorted(n for n, k in _upstream_keys(inputs).items() if k in ctx.fresh)
    forced = spec.forced(stage, model)
    rec = None
    if not forced and not after:
        rec = reuse if reuse is not None else ctx.store.lookup(stage, key)
    run_tags = {tr.TAG_STAGE: stage, tr.TAG_STEP: name, tr.TAG_DATASET: spec.dataset_name,
                tr.TAG_CACHED: str(rec is not None).lower(), tr.TAG_OVERRIDES: json.dumps(spec.user_overrides)}
    if model:
        run_tags[tr.TAG_MODEL] = model
    run_tags.update({k: v for k, v in (tags or {}).items() if v is not None})
    if rec is not None:
        run_tags.update({tr.TAG_KEY: rec.key, tr.TAG_OUTPUT: rec.uri, tr.TAG_SOURCE_RUN: rec.run_id or ""})
        run_id = tr.start_run(ctx.experiment_id, run_name(name, rec.key), run_tags, ctx.parent_run_id,
                              ctx.tracking_uri)
        t = ctx.tracker(run_id)
        try:
            _copy_source_run(t, rec)
            t.log_params(dict(params or {}))
            tr.log_datasets(run_id, datasets, ctx.tracking_uri)
            log_outputs(t, rec)
        finally:
            tr.end_run(run_id, "FINISHED", ctx.tracking_uri)
        log.info("%s: reused %s (computed by MLflow run %s)", name, rec.uri, rec.run_id)
        ctx.stage_runs[name] = run_id
        return rec

    why = ""  # why a finished folder of this key is recomputed
    if forced:
        why = "forced"
    elif after and (reuse is not None or ctx.store.exists(stage, key)):
        why = f"recomputed because {', '.join(after)} was recomputed in this run"
    run_tags.update({tr.TAG_KEY: key, tr.TAG_OUTPUT: ctx.store.uri(stage, key)})
    if why:
        run_tags[TAG_RECOMPUTED] = why
    run_id = tr.start_run(ctx.experiment_id, run_name(name, key), run_tags, ctx.parent_run_id, ctx.tracking_uri)
    ctx.stage_runs[name] = run_id
    t = ctx.tracker(run_id)
    t.log_params(dict(params or {}))
    tr.log_datasets(run_id, datasets, ctx.tracking_uri)
    log.info("%s: computing %s%s", name, ctx.store.uri(stage, key), f" ({why})" if why else "")
    try:
        rec = ctx.store.run(stage, key, inputs, lambda out: compute(out, t), force=True, run_id=run_id, name=name,
                            meta={"overrides": spec.user_overrides})
        log_outputs(t, rec)
    except BaseException as e:
        _end_with_error(t, run_id, e, ctx.tracking_uri)
        if isinstance(e, Exception) and not isinstance(e, StageFailed):
            raise StageFailed(f"stage {name} failed: {type(e).__name__}: {e}") from e
        raise
    tr.end_run(run_id, "FINISHED", ctx.tracking_uri)
    ctx.fresh.add(key)
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


def source_datasets(ctx: Context, synth: StageRecord | None) -> list[tr.DatasetRef]:
    """The files the preprocessing reads, as dataset inputs of its run (by reference: content hash
    and location; MLflow keeps one record per content however many runs read it)."""
    spec = ctx.spec
    if synth is not None:
        files = [(s, f"{spec.dataset_name}/{s}.csv", synth.path / f"{s}.csv", f"{synth.uri}/{s}.csv")
                 for s in ("train", "valid", "test")]
    elif spec.splits:
        files = [(s, Path(p).name, Path(p), p) for s, p in spec.splits.items()]
    else:
        files = [("raw", Path(p).name, Path(p), p) for p in spec.raw]
    return [tr.DatasetRef(name, file_fingerprint(path), source, context, {"bytes": path.stat().st_size})
            for context, name, path, source in files]


def data_dataset(ctx: Context, data: StageRecord) -> tr.DatasetRef:
    """The encoded data (a preprocess stage folder) as a dataset input of the runs that read it."""
    return tr.DatasetRef(f"{ctx.spec.dataset_name}-encoded", data.key, data.uri, "training")


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
                   reuse=ctx.reused.get("preprocess"), datasets=source_datasets(ctx, synth))


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
    cfg = ctx.spec.run_config("search", SEARCH_MODEL, data.path)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_search

        return run_search(data.path, out, cfg, tracker=t, model=SEARCH_MODEL)

    rec = execute(ctx, "search", {"upstream": {"preprocess": data.key}, "config": cfg.to_dict()}, compute,
                  model=SEARCH_MODEL, params=_model_params(cfg, SEARCH_MODEL),
                  tags={tr.TAG_DATA_HASH: data.key}, reuse=ctx.reused.get("search"), datasets=[data_dataset(ctx, data)])
    ctx.tracker(ctx.stage_runs["search"]).set_tags({tr.TAG_ARCH_HASH: arch_hash(rec)})
    return rec


def tune_wanted(ctx: Context, data: StageRecord) -> tuple[bool, str]:
    """(run the ``tune`` stage?, why): ``tune_mode`` "on" / "off", or "auto": only when the train
    split is small (:data:`flows.spec.TUNE_AUTO_MAX_ROWS` rows at most)."""
    from preprocess.feature_map import FeatureMap

    from .spec import TUNE_AUTO_MAX_ROWS

    mode = ctx.spec.tune_mode
    if mode != "auto":
        return mode == "on", f"tune_mode={mode}"
    if "tune" in ctx.spec.targets:
        return True, "stage tune asked for"
    rows = FeatureMap.load(data.path).splits["train"].rows
    if rows > TUNE_AUTO_MAX_ROWS:
        return False, f"tune_mode=auto: {rows:,} train rows > {TUNE_AUTO_MAX_ROWS:,} (give tune_mode=on to tune)"
    return True, f"tune_mode=auto: {rows:,} train rows <= {TUNE_AUTO_MAX_ROWS:,}"


def step_tune(ctx: Context, data: StageRecord, search: StageRecord) -> StageRecord | None:
    """Tune the re-train's settings on the validation split (``optinter.tune.run_tune``) →
    ``tuned.yaml``; None when ``tune_mode`` (or its ``auto`` rule) says no."""
    import dataclasses

    wanted, why = tune_wanted(ctx, data)
    if not wanted:
        log.info("tune: skipped (%s)", why)
        return None
    cfg = ctx.spec.run_config("retrain", SEARCH_MODEL, data.path)
    tc = ctx.spec.tune_config()
    settings = dataclasses.asdict(tc)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.tune import run_tune

        return run_tune(data.path, out, tc, cfg, arch_path=search.path / ARCH_FILE, tracker=t,
                        pool=ctx.jobs)  # parallel trials use the run's cluster when it takes them

    return execute(ctx, "tune", {"upstream": {"preprocess": data.key, "search": search.key},
                                 "config": cfg.to_dict(), "tune": settings}, compute, name=f"tune:{SEARCH_MODEL}",
                   model=SEARCH_MODEL, params={f"tune.{k}": v for k, v in settings.items()},
                   tags={tr.TAG_DATA_HASH: data.key, tr.TAG_ARCH_HASH: arch_hash(search)},
                   reuse=ctx.reused.get("tune"), datasets=[data_dataset(ctx, data)])


def step_retrain(ctx: Context, data: StageRecord, search: StageRecord,
                 tuned: StageRecord | None = None) -> StageRecord:
    """Re-train the searched architecture from scratch (with the ``tune`` stage's settings when
    given); evaluates on valid / test."""
    from optinter.tune import TUNED_FILE

    cfg = ctx.spec.run_config("retrain", SEARCH_MODEL, data.path,
                              tuned=tuned.path / TUNED_FILE if tuned is not None else None)
    ah = arch_hash(search)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_retrain

        return run_retrain(data.path, search.path / ARCH_FILE, out, cfg, tracker=t)

    upstream = {"preprocess": data.key, "search": search.key}
    if tuned is not None:
        upstream["tune"] = tuned.key
    return execute(ctx, "retrain", {"upstream": upstream, "arch": ah,
                                    "config": cfg.to_dict()}, compute, name=f"retrain:{SEARCH_MODEL}",
                   model=SEARCH_MODEL, params=_model_params(cfg, SEARCH_MODEL),
                   tags={tr.TAG_DATA_HASH: data.key, tr.TAG_ARCH_HASH: ah}, reuse=ctx.reused.get("retrain"),
                   datasets=[data_dataset(ctx, data)])


def step_train(ctx: Context, data: StageRecord, model: str) -> StageRecord:
    """Train one baseline model on the same encoded data."""
    cfg = ctx.spec.run_config("baselines", model, data.path)

    def compute(out: Path, t: Tracker) -> Mapping[str, Any]:
        from optinter.stages import run_train

        return ctx.jobs.call(run_train, data.path, model, out, cfg, tracker=t, name=f"train-{model}")

    return execute(ctx, "train", {"upstream": {"preprocess": data.key}, "model": model, "config": cfg.to_dict()},
                   compute, name=f"train:{model}", model=model, params=_model_params(cfg, model),
                   tags={tr.TAG_DATA_HASH: data.key}, datasets=[data_dataset(ctx, data)])


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
                   tags={tr.TAG_DATA_HASH: data.key, tr.TAG_ARCH_HASH: ah}, reuse=ctx.reused.get("analyze"),
                   datasets=[data_dataset(ctx, data)])


def compare_config(ctx: Context) -> Any:
    """The ``CompareConfig``: the ``compare`` parameter, the run's overrides, and the jobs kept
    across runs as stage folders ``<artifact root>/compare-job/<key>/`` of the same store."""
    from optinter.experiments import JOB_STAGE, CompareConfig


    kw = dict(ctx.spec.compare or {})
    kw.setdefault("overrides", tuple(ctx.spec.overrides_for("compare", "")))
    kw.setdefault("dataset", ctx.spec.dataset_name)
    kw.setdefault("config_file", ctx.spec.config_file)
    kw.setdefault("cache_dir", f"{ctx.store.root}/{JOB_STAGE}")
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

        return run_compare(data.path, out, cc, tracker=t, pool=ctx.jobs)

    return execute(ctx, "compare", {"upstream": {"preprocess": data.key}, "config": settings}, compute,
                   params={f"compare.{k}": v for k, v in settings.items()}, tags={tr.TAG_DATA_HASH: data.key},
                   datasets=[data_dataset(ctx, data)])


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
        "runs_url": tr.runs_url(ctx.tracking_uri, ctx.experiment_id),
        "run_url": tr.runs_url(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id),
        "artifact_root": ctx.store.root,
        "stages": {n: {"stage": r.stage, "key": r.key, "uri": r.uri, "local_dir": r.local_dir, "cached": r.cached,
                       "source_run_id": r.run_id, "run_id": ctx.stage_runs.get(n)} for n, r in records.items()},
        "results": results,
        "tags": tags,
        "artifacts": artifacts,
    }


def failure_message(ctx: Context, error: BaseException) -> str:
    """The flow's last log line when it fails: the error with its causes and where MLflow shows it."""
    return (f"optinter failed: {error_text(error)}\n"
            f"MLflow parent run {ctx.parent_run_id}: {tr.runs_url(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id)}"
            + ("" if ctx.tracking_uri.startswith(("http://", "https://")) else
               f"\n(serve the UI with: {tr.ui_command(ctx.tracking_uri)})"))


__all__ = [
    "Context", "open_context", "close_context", "resolve_reference", "execute", "step_synth", "step_preprocess",
    "step_search", "step_retrain", "step_train", "step_evaluate", "step_analyze", "step_compare", "step_register",
    "step_score", "summarize", "final_metrics", "failure_message", "error_text", "pipeline_run_name", "MARKER",
]
