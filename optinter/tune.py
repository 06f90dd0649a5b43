"""Hyper-parameter tuning on the validation split: Optuna's TPE sampler, pruning on the per-epoch
validation AUC, a budget in trials and/or minutes, every trial a nested tracker run.

Each trial trains one model (any registered model; OptInter's re-train model with a searched
``architecture.json``) on the **train** split and scores it on the **valid** split after every
epoch — the test split is never opened (:func:`run_tune` builds no loader for it and checks only
the train / valid parquet). The best trial's settings are written to ``tuned.yaml``, which
``optinter search|retrain|train|run --config tuned.yaml`` (and the pipeline's ``tune`` stage)
apply over the data-derived defaults, under ``--set``.

Search spaces are lists of ``KEY=KIND:ARGS`` strings (:class:`ParamSpec`)::

    train.lr_o=log:1e-4:1e-2        # log-uniform float
    model.dropout=float:0:0.5       # uniform float
    model.embed_dim=int:4:16        # integer (inclusive)
    model.mlp_dims=choice:64|128,128 # one of the listed values

:data:`DEFAULT_SPACES` gives one per model family, centred on the defaults. Parallel trials:
with ``parallel`` > 1, that many jobs (:class:`~optinter.cluster.JobPool`: a LocalCluster of
``parallel`` workers, or the cluster at ``scheduler`` / ``$DASK_SCHEDULER_ADDRESS``) each run trials of
the same study, which lives in a journal file beside the output (so every worker must see that
folder, as on a LocalCluster or a shared volume); with ``parallel = 1``, trials run one after the
other in this process (deterministic for a seed). A trial's result depends only on its settings
(training is thread-count invariant), but which settings TPE proposes depends on which trials have
finished when it asks: parallel studies are not identical to serial ones.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from preprocess.atomic import atomic_output_dir

from .cluster import JobPool, JobsConfig
from .config import RunConfig, apply_overrides
from .tracking import Tracker, as_tracker

log = logging.getLogger(__name__)

TUNED_FILE = "tuned.yaml"
TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "tune.json"
KINDS = ("log", "float", "int", "choice")

_DEEP = ("train.lr_o=log:1e-4:3e-3", "model.dropout=float:0:0.5", "train.emb_l2_o=log:1e-5:3e-2")
#: Default search spaces (by model name; "*" = any other model).
DEFAULT_SPACES: dict[str, tuple[str, ...]] = {
    "lr": ("train.lr_o=log:3e-4:3e-2", "train.emb_l2_o=log:1e-6:1e-1"),
    "poly2": ("train.lr_o=log:3e-4:3e-2", "train.emb_l2_c=log:1e-4:1e-1"),
    "optinter": _DEEP + ("train.lr_c=log:1e-5:1e-3", "train.lr_first=log:3e-4:3e-2"),
    "optinter_f": _DEEP + ("train.lr_first=log:3e-4:3e-2",),
    "optinter_m": _DEEP + ("train.lr_c=log:1e-5:1e-3", "train.lr_first=log:3e-4:3e-2"),
    "*": _DEEP,
}


@dataclass(frozen=True)
class ParamSpec:
    """One tuned setting: ``key`` (``model.*`` / ``train.*``), ``kind`` and its range or choices."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ParamSpec":
        """``"train.lr_o=log:1e-4:1e-2"`` → ParamSpec; a clear ``ValueError`` naming ``text``."""
        key, sep, rest = text.partition("=")
        kind, _, args = rest.partition(":")
        key, kind = key.strip(), kind.strip()
        if not sep or kind not in KINDS or not args:
            raise ValueError(f"tune space {text!r}: expected KEY=KIND:ARGS with KIND one of {KINDS}, "
                             f"e.g. train.lr_o=log:1e-4:1e-2")
        sec, _, name = key.partition(".")
        if sec not in ("model", "train") or not name or not hasattr(getattr(RunConfig(), sec), name):
            raise ValueError(f"tune space {text!r}: unknown setting {key!r} (keys look like train.lr_o, model.dropout)")
        if kind == "choice":
            choices = tuple(c.strip() for c in args.split("|") if c.strip())
            if not choices:
                raise ValueError(f"tune space {text!r}: no choices")
            for c in choices:
                apply_overrides(RunConfig(), [f"{key}={c}"])  # each choice must be a valid value
            return cls(key, kind, choices=choices)
        lo_s, _, hi_s = args.partition(":")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise ValueError(f"tune space {text!r}: bounds must be numbers LOW:HIGH") from None
        if not lo < hi or (kind == "log" and lo <= 0):
            raise ValueError(f"tune space {text!r}: need LOW < HIGH{' and LOW > 0' if kind == 'log' else ''}")
        return cls(key, kind, lo, hi)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "log":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(math.ceil(self.low)), int(math.floor(self.high)))
        return trial.suggest_categorical(self.key, list(self.choices))


@dataclass
class TuneConfig:
    """What ``optinter tune`` (and the pipeline's ``tune`` stage) runs."""

    model: str = "optinter"  # the model whose settings are tuned (optinter: its re-train, needs an architecture)
    trials: int = 8  # budget in trials (0 = only the time budget)
    minutes: float = 0.0  # budget in minutes (0 = only the trial budget)
    space: tuple[str, ...] | None = None  # KEY=KIND:ARGS; None = DEFAULT_SPACES[model]
    seed: int = 2026  # sampler seed
    max_epochs: int = 0  # epochs per trial (0 = the model's train.epochs)
    startup_trials: int = 3  # trials before TPE and pruning start (random sampling)
    parallel: int = 1  # trials at once on a Dask cluster (a LocalCluster unless a scheduler is given)

    def __post_init__(self) -> None:
        if isinstance(self.space, str):
            self.space = tuple(s for s in self.space.split(";") if s.strip())
        if self.space is not None:
            self.space = tuple(self.space)

    def validate(self) -> None:
        for name in ("trials", "minutes", "max_epochs", "startup_trials"):
            if getattr(self, name) < 0:
                raise ValueError(f"tune: {name} must be >= 0, got {getattr(self, name)}")
        if self.trials <= 0 and self.minutes <= 0:
            raise ValueError("tune: the budget is empty: give trials > 0 and/or minutes > 0")
        if self.parallel < 1:
            raise ValueError(f"tune: parallel must be >= 1, got {self.parallel}")
        specs = self.param_specs()
        if not specs:
            raise ValueError("tune: the search space is empty (give at least one KEY=KIND:ARGS)")
        keys = [p.key for p in specs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"tune: a setting appears twice in the search space: {keys}")

    def param_specs(self) -> list[ParamSpec]:
        return [ParamSpec.parse(s) for s in self.space_strings()]

    def space_strings(self) -> tuple[str, ...]:
        return self.space if self.space is not None else DEFAULT_SPACES.get(self.model, DEFAULT_SPACES["*"])


# ---- one trial -------------------------------------------------------------------------------------
def _check_splits(data_dir: str | Path, fmap: Any, model: Any) -> None:
    """Schema and rows of the train and valid splits only (tuning never opens test)."""
    from .data import check_split_schema

    for split in ("train", "valid"):
        if split not in fmap.splits:
            raise ValueError(f"{data_dir}/feature_map.json: no {split!r} split")
        if check_split_schema(data_dir, fmap, split, model.required_pairs()) == 0:
            raise ValueError(f"{fmap.split_dir(data_dir, split)}: split {split!r} is empty")


def train_trial(data_dir: str | Path, model_name: str, cfg: RunConfig, arch_path: str | Path | None = None,
                tracker: Tracker | None = None, report: Any = None) -> tuple[float, int]:
    """Train ``model_name`` with ``cfg`` on train, score valid after every epoch (``report(epoch,
    valid_auc)`` may raise to prune); returns (best valid AUC, epochs). Never reads the test split."""
    from preprocess.feature_map import FeatureMap

    from .architecture import Architecture
    from .data import ParquetBatches
    from .registry import build_model, needs_architecture
    from .train import fit, resolve_device, seed_everything
    from .warmstart import wants_warm_start, warm_start_first_order

    fmap = FeatureMap.load(data_dir)
    arch = None
    if needs_architecture(model_name):
        if arch_path is None:
            raise ValueError(f"tune: model {model_name!r} needs an architecture (--arch architecture.json)")
        arch = Architecture.load(arch_path)
    seed_everything(cfg.train.seed)
    model = build_model(model_name, fmap, cfg.model, arch=arch)
    _check_splits(data_dir, fmap, model)

    def loaders(m: Any, c: RunConfig) -> dict[str, ParquetBatches]:
        """Train (shuffled) and valid batches of what model ``m`` reads; never the test split."""
        ps = m.required_pairs()
        return {"train": ParquetBatches(data_dir, fmap, "train", c.train.batch_size, ps, shuffle=True,
                                        seed=c.train.seed),
                "valid": ParquetBatches(data_dir, fmap, "valid", c.train.eval_batch_size, ps)}

    data = loaders(model, cfg)
    train, valid = data["train"], data["valid"]

    def on_epoch_end(rec: Any) -> None:
        if report is not None:
            report(rec.epoch, rec.valid_auc)

    ws = None
    if wants_warm_start(model, cfg):  # as the re-train does: start from the fitted LR, keep it if better
        ws = warm_start_first_order(model, fmap, cfg, loaders, resolve_device(cfg.train.device), valid,
                                    cache_key=str(Path(data_dir).resolve()), snapshot=False)
    res = fit(model, train, valid, cfg, None, tracker, on_epoch_end=on_epoch_end)
    best = max(res.best_valid_auc, ws.valid_auc) if ws is not None else res.best_valid_auc
    return best, res.epochs


def _objective(data_dir: str, tc: TuneConfig, base: RunConfig, arch_path: str | None, tracker: Tracker) -> Any:
    import optuna

    specs = tc.param_specs()

    def objective(trial: optuna.Trial) -> float:
        params = {p.key: p.suggest(trial) for p in specs}
        over = dict(params)
        over["train.checkpoint"] = False
        if tc.max_epochs:
            over["train.epochs"] = tc.max_epochs
        cfg = apply_overrides(base, over)
        child = tracker.child(f"tune:{tc.model}:trial-{trial.number}",
                              {"stage": "tune-trial", "model": tc.model, "optuna.trial": trial.number})
        child.log_params({**params, "trial": trial.number})
        t0 = time.perf_counter()
        status, auc, epochs = "FAILED", None, 0

        def report(epoch: int, valid_auc: float) -> None:
            trial.report(valid_auc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: valid AUC {valid_auc:.5f}")

        try:
            auc, epochs = train_trial(data_dir, tc.model, cfg, arch_path, child, report)
            status = "FINISHED"
            return auc
        except optuna.TrialPruned:
            status = "KILLED"
            child.set_tags({"optuna.state": "pruned"})
            raise
        finally:
            secs = time.perf_counter() - t0
            if auc is not None:
                child.log_metrics({"best_valid_auc": auc, "epochs": epochs, "seconds": secs})
            child.end(status)
            log.info("tune %s trial %d: %s%s (%.0f s) %s", tc.model, trial.number, status.lower(),
                     f", valid AUC {auc:.5f}" if auc is not None else "", secs, params)

    return objective


def _study(tc: TuneConfig, storage: Any = None, name: str = "optinter-tune") -> Any:
    import optuna

    sampler = optuna.samplers.TPESampler(seed=tc.seed, n_startup_trials=tc.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tc.startup_trials, n_warmup_steps=1)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, storage=storage,
                               study_name=name, load_if_exists=True)


def _run_dask_worker(data_dir: str, tc_dict: dict[str, Any], base_dict: dict[str, Any], arch_path: str | None,
                     journal: str, trials: int, timeout: float | None, tracking_uri: str | None,
                     parent_run_id: str | None, worker_seed: int) -> int:
    """One Dask task: load the shared study and run ``trials`` of it (``timeout`` seconds at most);
    returns how many trials the study holds afterwards."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from .tracking import MlflowTracker, NullTracker

    tc = TuneConfig(**{**tc_dict, "seed": worker_seed})
    base = RunConfig.from_dict(base_dict)
    storage = JournalStorage(JournalFileBackend(journal))
    study = _study(tc, storage)
    tracker: Tracker = MlflowTracker(parent_run_id, tracking_uri) if parent_run_id else NullTracker()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(_objective(data_dir, tc, base, arch_path, tracker), n_trials=trials or None,
                   timeout=timeout, catch=())
    return len(study.trials)


def trial_pool(pool: JobPool | None, parallel: int, scheduler: str | None = None) -> tuple[JobPool, bool]:
    """The pool ``parallel`` concurrent trial groups run on and whether it is new (the caller closes it):
    ``pool`` when it would send a round of ``parallel`` jobs to its cluster, else a pool of ``parallel``
    LocalCluster workers or the cluster at ``scheduler`` / ``$DASK_SCHEDULER_ADDRESS``."""
    if pool is not None and pool.use_cluster(parallel):
        return pool, False
    return JobPool(JobsConfig.from_env(workers=parallel, scheduler=scheduler)), True


def run_tune(data_dir: str | Path, out_dir: str | Path, tc: TuneConfig, base: RunConfig,
             arch_path: str | Path | None = None, tracker: Tracker | None = None,
             scheduler: str | None = None, pool: JobPool | None = None) -> dict[str, Any]:
    """Tune ``tc.model``'s settings over ``base`` (the defaults) on the validation split; writes
    ``tuned.yaml`` (the best trial's settings), ``trials.csv`` and ``tune.json`` into ``out_dir``
    and returns the summary. Bad settings (budget, space, model) fail before any training.
    ``tc.parallel`` > 1 runs trials on ``pool`` when it would send a round of ``parallel`` jobs to its
    cluster (an auto pool keeps small rounds in process, where the trials would run one after the
    other); else on a pool of ``parallel`` LocalCluster workers, or the cluster at ``scheduler`` /
    ``$DASK_SCHEDULER_ADDRESS``."""
    import optuna
    import pandas as pd
    import yaml

    from .registry import available_models, needs_architecture

    tc.validate()
    if tc.model not in available_models():
        raise ValueError(f"tune: unknown model {tc.model!r}; known models: {', '.join(available_models())}")
    if needs_architecture(tc.model) and arch_path is None:
        raise ValueError(f"tune: model {tc.model!r} needs an architecture (--arch architecture.json)")
    for spec in tc.param_specs():  # every sampled value must fit the config (checked once, cheaply)
        probe = spec.choices[0] if spec.kind == "choice" else spec.low if spec.kind != "int" else int(spec.low)
        apply_overrides(base, {spec.key: probe} if spec.kind != "choice" else [f"{spec.key}={probe}"])
    tr = as_tracker(tracker)
    tr.log_params({"tune.model": tc.model, "tune.trials": tc.trials, "tune.minutes": tc.minutes,
                   "tune.space": ";".join(tc.space_strings()),
                   "tune.seed": tc.seed, "tune.parallel": tc.parallel})
    t0 = time.perf_counter()
    timeout = tc.minutes * 60 if tc.minutes > 0 else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with atomic_output_dir(out_dir) as tmp:
        if tc.parallel > 1:
            jobs, own = trial_pool(pool, tc.parallel, scheduler)
            try:
                study = _tune_on_dask(str(data_dir), tc, base, arch_path, tr, jobs, timeout, tmp)
            finally:
                if own:
                    jobs.close()
        else:
            study = _study(tc)
            _enqueue_defaults(study, tc, base)
            study.optimize(_objective(str(data_dir), tc, base, None if arch_path is None else str(arch_path), tr),
                           n_trials=tc.trials or None, timeout=timeout, catch=())
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise RuntimeError(f"tune: no trial of {tc.model!r} completed within the budget "
                               f"({tc.trials} trials, {tc.minutes} minutes)")
        best = study.best_trial
        rows = [{"trial": t.number, "state": t.state.name.lower(), "valid_auc": t.value,
                 "epochs": max(t.intermediate_values, default=0), **t.params} for t in study.trials]
        pd.DataFrame(rows).sort_values("trial").to_csv(tmp / TRIALS_FILE, index=False)
        first = study.trials[0] if study.trials else None
        default_auc = (float(first.value) if first is not None and first.user_attrs.get("defaults") == "exact"
                       and first.state == optuna.trial.TrialState.COMPLETE else None)
        summary = {
            "model": tc.model, "best_trial": best.number, "best_valid_auc": float(best.value),
            "best_params": dict(best.params), "trials": len(study.trials), "complete": len(done),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "seconds": time.perf_counter() - t0, "config": asdict(tc), "default_valid_auc": default_auc,
        }
        tuned = {"tuned": {"model": tc.model, "best_valid_auc": float(best.value), "trials": len(study.trials),
                           "selected_on": "valid"}}
        tuned.update(dict(sorted(best.params.items())))
        (tmp / TUNED_FILE).write_text(yaml.safe_dump(tuned, sort_keys=False))
        import json

        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    tr.log_metrics({"best_valid_auc": summary["best_valid_auc"], "trials": summary["trials"],
                    "pruned_trials": summary["pruned"], "tune_seconds": summary["seconds"]})
    for f in (TUNED_FILE, SUMMARY_FILE, TRIALS_FILE):
        tr.log_artifact(Path(out_dir) / f)
    log.info("tune %s: best valid AUC %.5f (trial %d of %d, %d pruned) %s -> %s", tc.model,
             summary["best_valid_auc"], best.number, summary["trials"], summary["pruned"], best.params,
             Path(out_dir) / TUNED_FILE)
    return summary


def _enqueue_defaults(study: Any, tc: TuneConfig, base: RunConfig) -> None:
    """Trial 0 = the defaults, so the tuned settings are never worse on valid than the defaults
    they replace. A default outside its range (e.g. an L2 of 0 under a log range) is clamped into
    it; trial 0 then counts as near-defaults only (``user_attrs["defaults"] == "clamped"``)."""
    flat = base.flat()
    params: dict[str, Any] = {}
    exact = True
    for spec in tc.param_specs():
        v = flat[spec.key]
        if spec.kind == "choice":
            text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)
            if text not in spec.choices:
                return  # the defaults are not in the space
            params[spec.key] = text
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return
        c = min(max(float(v), spec.low), spec.high)
        exact = exact and c == float(v)
        params[spec.key] = int(round(c)) if spec.kind == "int" else c
    study.enqueue_trial(params, user_attrs={"defaults": "exact" if exact else "clamped"})


def _tune_on_dask(data_dir: str, tc: TuneConfig, base: RunConfig, arch_path: str | Path | None, tracker: Tracker,
                  pool: JobPool, timeout: float | None, tmp: Path) -> Any:
    """``tc.parallel`` jobs on ``pool`` share one journal-file study; each runs its share of the trials."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = str(Path(tempfile.mkdtemp(prefix="optinter-tune-", dir=tmp.parent)) / "study.journal")
    storage = JournalStorage(JournalFileBackend(journal))
    study = _study(tc, storage)  # created once, before the workers load it
    _enqueue_defaults(study, tc, base)
    share = [tc.trials // tc.parallel + (1 if i < tc.trials % tc.parallel else 0) for i in range(tc.parallel)]
    uri = getattr(tracker, "tracking_uri", None)
    parent = getattr(tracker, "run_id", None)
    arch = None if arch_path is None else str(arch_path)
    try:
        workers = [(i, n) for i, n in enumerate(share) if n > 0 or tc.trials == 0]
        pool.run_jobs(workers, lambda w: pool.call(_run_dask_worker, data_dir, asdict(tc), base.to_dict(), arch,
                                                   journal, w[1], timeout, uri, parent, tc.seed + w[0],
                                                   name=f"tune-{tc.model}-{w[0]}"))
        import optuna

        done = optuna.create_study(direction="maximize")  # an in-memory copy outlives the journal
        done.add_trials(study.get_trials(deepcopy=True))
        return done
    finally:
        shutil.rmtree(Path(journal).parent, ignore_errors=True)
