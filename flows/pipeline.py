"""The ``optinter`` Prefect flow: wiring only, each task is one call of a step in ``flows.steps``.

    validate → [synth] → preprocess → search → retrain ─┐
                                   └→ baselines (train:<model> …) ─┴→ evaluate → analyze
                                   └→ compare (when asked)
    [register the models asked for] → score (when asked: raw files + a model → scores)

Prefect's own result cache is off (``NO_CACHE``): stages are reused through content-keyed folders
under the artifact root (``flows.cache``), which works across processes and machines and still
gives every reused stage an MLflow run (tagged ``optinter.cached=true``). Tasks run on Prefect's
default (thread) task runner, one after the other, except the baselines: when the training jobs'
cluster takes them (``jobs``: ``optinter.cluster.JobPool.use_cluster``; a LocalCluster by default
where the cores fit two jobs and there are two jobs a worker, or ``DASK_SCHEDULER_ADDRESS``) they
are submitted together and each task's training runs on a worker. Compare jobs and parallel tuning
trials use the same cluster. The preprocessing task runs its Dask jobs on its own ``distributed``
client (a LocalCluster, or ``DASK_SCHEDULER_ADDRESS``). Importing this module changes no settings:
the programs that run it set Prefect's environment where they start (``flows.logs``), and the flow
routes the library loggers to its run logs when it starts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import wait
from prefect.cache_policies import NO_CACHE

from . import steps
from .cache import StageRecord
from .logs import library_logs_to_run
from .results import render_summary
from .spec import PipelineSpec, resolve_spec

FLOW_NAME = "optinter"
_TASK = dict(cache_policy=NO_CACHE, persist_result=False, retries=0)


@task(name="validate", **_TASK)
def validate(params: dict[str, Any]) -> PipelineSpec:
    return resolve_spec(**params)


@task(name="synth", **_TASK)
def synth_task(ctx: steps.Context) -> StageRecord:
    return steps.step_synth(ctx)


@task(name="preprocess", **_TASK)
def preprocess_task(ctx: steps.Context, synth: StageRecord | None) -> StageRecord:
    return steps.step_preprocess(ctx, synth)


@task(name="search", **_TASK)
def search_task(ctx: steps.Context, data: StageRecord) -> StageRecord:
    return steps.step_search(ctx, data)


@task(name="tune", **_TASK)
def tune_task(ctx: steps.Context, data: StageRecord, search: StageRecord) -> StageRecord | None:
    return steps.step_tune(ctx, data, search)


@task(name="retrain", **_TASK)
def retrain_task(ctx: steps.Context, data: StageRecord, search: StageRecord,
                 tuned: StageRecord | None = None) -> StageRecord:
    return steps.step_retrain(ctx, data, search, tuned)


@task(name="train", task_run_name="train-{model}", **_TASK)
def train_task(ctx: steps.Context, data: StageRecord, model: str) -> StageRecord:
    return steps.step_train(ctx, data, model)


@task(name="evaluate", **_TASK)
def evaluate_task(ctx: steps.Context, trained: list[StageRecord]) -> StageRecord:
    return steps.step_evaluate(ctx, trained)


@task(name="analyze", **_TASK)
def analyze_task(ctx: steps.Context, data: StageRecord, search: StageRecord | None, synth: StageRecord | None,
                 trained: list[StageRecord]) -> StageRecord:
    return steps.step_analyze(ctx, data, search, synth, trained)


@task(name="compare", **_TASK)
def compare_task(ctx: steps.Context, data: StageRecord) -> StageRecord:
    return steps.step_compare(ctx, data)


@task(name="register", **_TASK)
def register_task(ctx: steps.Context, trained: list[StageRecord]) -> dict[str, str]:
    return steps.step_register(ctx, trained)


@task(name="score", **_TASK)
def score_task(ctx: steps.Context, retrain: StageRecord | None) -> StageRecord:
    return steps.step_score(ctx, retrain)


@flow(name=FLOW_NAME, description="OptInter: preprocess → search → re-train → evaluate → MI analysis, + baselines",
      validate_parameters=True)
def optinter_flow(
    dataset: str = "synthetic",
    raw: list[str] | None = None,
    train_path: str | None = None,
    valid_path: str | None = None,
    test_path: str | None = None,
    synth: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    oov_threshold: int | None = None,
    cross_threshold: int | None = None,
    overrides: list[str] | None = None,
    baselines: list[str] | None = None,
    seed: int = 2026,
    artifact_root: str | None = None,
    force: list[str] | None = None,
    from_run: str | None = None,
    stages: list[str] | None = None,
    experiment: str = "optinter",
    quickstart: bool = True,
    compare: dict[str, Any] | None = None,
    config_file: str | None = None,
    tune_mode: str = "auto",
    tune: dict[str, Any] | None = None,
    score: dict[str, Any] | None = None,
    register_as: list[str] | None = None,
    jobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the pipeline (or the ``stages`` asked for and what they need); returns ``steps.summarize``.

    Args:
        dataset: a built-in dataset name (criteo, avazu, ipinyou, synthetic) or a schema ``.yaml``.
        raw: raw files or globs, split train/valid/test by the pipeline.
        train_path, valid_path, test_path: pre-split files instead of ``raw``.
        synth: ``SynthConfig`` settings (dataset ``synthetic`` without files).
        preprocess: extra ``PreprocessConfig`` settings.
        oov_threshold, cross_threshold: override the schema's thresholds.
        overrides: model config ``key=value`` overrides, optionally ``<stage|model>:key=value``.
        baselines: baseline models trained on the same data (default lr, fm, deepfm).
        seed: the seed of split, synthetic data and training.
        artifact_root: folder or fsspec URL of the stage outputs (``OPTINTER_ARTIFACT_ROOT``,
            default ``./artifacts``).
        force: stages (or model names, or ``all``) to recompute even when cached.
        from_run: reuse an earlier run's results: an MLflow run id (stage or pipeline run) or a
            stage output folder.
        stages: what to compute (default: retrain, baselines, evaluate, analyze).
        experiment: MLflow experiment name.
        quickstart: small default model / data sizes for the synthetic dataset.
        compare: ``CompareConfig`` settings of the ``compare`` stage (models, seeds, tables...).
        config_file: a YAML / JSON settings file (e.g. what ``optinter tune`` wrote) applied over the
            defaults derived from the data, under ``overrides``.
        tune_mode: "auto" (default: tune the re-train on the validation split when the train split
            is small), "on" or "off".
        tune: ``TuneConfig`` settings of the ``tune`` stage (trials, minutes, space, parallel...).
        score: the ``score`` stage: ``raw`` files to score, ``model`` (a run folder, an MLflow run
            id or ``models:/NAME/VERSION``; default this run's re-trained OptInter) and options
            of ``optinter.scoring.score_files`` (``on_bad_rows``, ``id_columns``, ...).
        register_as: register trained models in the MLflow Model Registry: ``NAME`` (the re-trained
            OptInter) or ``MODEL=NAME`` items.
        jobs: where independent training jobs run (baselines, compare jobs, parallel tuning trials):
            ``workers`` (0 = auto: a LocalCluster when two or more jobs fit the cores; 1 = one after the
            other in the flow's process), ``threads`` per job, ``scheduler`` (a Dask scheduler address;
            default ``DASK_SCHEDULER_ADDRESS``). Results and stage keys do not depend on it.
    """
    library_logs_to_run()
    logger = get_run_logger()
    params = dict(dataset=dataset, raw=raw, train_path=train_path, valid_path=valid_path, test_path=test_path,
                  synth=synth, preprocess=preprocess, oov_threshold=oov_threshold, cross_threshold=cross_threshold,
                  overrides=overrides, baselines=baselines, seed=seed, artifact_root=artifact_root, force=force,
                  from_run=from_run, stages=stages, experiment=experiment, quickstart=quickstart,
                  compare=compare, config_file=config_file, tune_mode=tune_mode, tune=tune, score=score,
                  register_as=register_as, jobs=jobs)
    try:
        spec = validate(params)
    except Exception as e:
        logger.error("bad parameters: %s", e)
        raise
    ctx = _open(spec)
    logger.info("stages to run: %s; artifact root %s; MLflow %s (parent run %s)", ", ".join(spec.needed),
                ctx.store.root, ctx.tracking_uri, ctx.parent_run_id)
    records: dict[str, StageRecord] = {}
    try:
        reused = ctx.reused
        synth_rec = reused.get("synth")
        if spec.wants("synth") and "preprocess" not in reused:
            synth_rec = synth_task(ctx)
        if synth_rec is not None:
            records["synth"] = synth_rec
        data = None
        if spec.wants("preprocess"):
            data = records["preprocess"] = preprocess_task(ctx, synth_rec)
        search = None
        if spec.wants("search") or "search" in reused:
            search = records["search"] = search_task(ctx, data)
        tuned = None
        if spec.wants("tune"):
            tuned = tune_task(ctx, data, search)
            if tuned is not None:
                records[tuned.name] = tuned
        trained: list[StageRecord] = []
        retrained = None
        if spec.wants("retrain"):
            r = retrained = retrain_task(ctx, data, search, tuned)
            records[r.name] = r
            trained.append(r)
        if spec.wants("baselines"):
            if ctx.jobs.use_cluster(len(spec.baselines)):  # at once: each task's training on a worker
                futures = [train_task.submit(ctx, data, m) for m in spec.baselines]
                wait(futures)
                done = [f.result() for f in futures]  # the first failure is raised once all have ended
            else:
                with ctx.jobs.inline():
                    done = [train_task(ctx, data, m) for m in spec.baselines]
            for r in done:
                records[r.name] = r
                trained.append(r)
        evaluate = None
        if spec.wants("evaluate") and trained:
            evaluate = records["evaluate"] = evaluate_task(ctx, trained)
        if spec.wants("analyze"):
            records["analyze"] = analyze_task(ctx, data, search, synth_rec, trained)
        if spec.wants("compare"):
            records["compare"] = compare_task(ctx, data)
        if spec.register_as:
            register_task(ctx, trained)
        if spec.wants("score"):
            records["score"] = score_task(ctx, retrained)
        summary = steps.summarize(ctx, records, evaluate)
    except BaseException as e:
        steps.close_context(ctx, error=e)
        logger.error(steps.failure_message(ctx, e))  # the last lines of the run log (UI, --watch)
        raise
    steps.close_context(ctx, summary=summary)
    n_cached = sum(1 for r in records.values() if r.cached)
    logger.info("done: %d stages (%d reused)\n%s", len(records), n_cached, render_summary(summary))
    return summary


def _open(spec: PipelineSpec) -> steps.Context:
    from prefect.context import get_run_context

    tags: dict[str, str] = {}
    try:
        fr = get_run_context().flow_run  # type: ignore[union-attr]
        tags = {"prefect.flow_run_id": str(fr.id), "prefect.flow_run_name": fr.name}
        if fr.deployment_id:
            tags["prefect.deployment_id"] = str(fr.deployment_id)
    except Exception:  # noqa: BLE001 — outside a flow run (direct call of .fn)
        pass
    return steps.open_context(spec, extra_tags=tags)
