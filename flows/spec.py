"""The pipeline's parameters, checked before any heavy work (plain Python: no Prefect).

:func:`resolve_spec` turns the flow's / CLI's parameters into a validated :class:`PipelineSpec`, or
raises :class:`SpecError` (a ``ValueError``) naming the bad parameter: unknown dataset, missing raw
files, bad thresholds, bad overrides, unknown model or stage names, a ``from_run`` reference that
does not exist.

Model-config overrides are ``key=value`` strings (see :func:`optinter.config.apply_overrides`),
optionally scoped to one stage or one model with a prefix: ``retrain:train.lr_o=1e-4`` changes only
the re-train stage, ``fm:model.embed_dim=8`` only baseline ``fm``; unscoped ones apply everywhere.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

#: Every stage the flow knows, in execution order.
STAGES = ("synth", "preprocess", "search", "tune", "retrain", "baselines", "evaluate", "analyze", "compare",
          "score")
#: What ``optinter/full-pipeline`` (and ``optinter run``) computes.
FULL_PIPELINE = ("retrain", "baselines", "evaluate", "analyze")
#: Direct dependencies; ``synth`` is needed by ``preprocess`` only for a synthetic dataset without files.
DEPENDS: dict[str, tuple[str, ...]] = {
    "synth": (),
    "preprocess": ("synth",),
    "search": ("preprocess",),
    "tune": ("search",),
    "retrain": ("search",),  # + "tune" unless tune_mode is "off" (see needed_stages)
    "baselines": ("preprocess",),
    "evaluate": ("retrain", "baselines"),
    "analyze": ("search",),
    "compare": ("preprocess",),
    "score": (),  # + retrain when no score.model is given (see resolve_spec)
}
#: Scopes an override may be prefixed with (besides model names).
OVERRIDE_SCOPES = ("search", "retrain", "baselines", "compare")
#: ``tune_mode``: "auto" tunes the re-train on the validation split when the train split has at most
#: TUNE_AUTO_MAX_ROWS rows (cheap there; optional on large data), "on" always, "off" never.
TUNE_MODES = ("auto", "on", "off")
TUNE_AUTO_MAX_ROWS = 250_000
#: The pipeline's tuning budget unless the ``tune`` parameter says otherwise (TuneConfig fields).
PIPELINE_TUNE: dict[str, Any] = {"trials": 6, "minutes": 4.0, "max_epochs": 8}
SEARCH_MODEL = "optinter"
DEFAULT_BASELINES = ("lr", "fm", "deepfm")
DEFAULT_ARTIFACT_ROOT = "artifacts"
#: Environment variable naming the artifact root (a folder or an fsspec URL).
ARTIFACT_ROOT_ENV = "OPTINTER_ARTIFACT_ROOT"
SPLIT_NAMES = ("train", "valid", "test")
#: ``PreprocessConfig`` fields set by the flow's own parameters (not through ``preprocess``).
PREPROCESS_OWN_KEYS = frozenset({"dataset", "out", "raw", "train", "valid", "test", "oov_threshold",
                                 "cross_threshold", "seed"})

#: Settings laid under the user's for the synthetic quick start (explicit ``synth`` / ``overrides``
#: parameters win over these). Empty: the quick start runs the generator's defaults with the
#: training defaults derived from the data (optinter/defaults.py), as any other dataset would, so
#: ``make run`` shows what a user's data gets; ``--no-quickstart`` is kept for scripts.
SYNTHETIC_QUICKSTART_SYNTH: dict[str, Any] = {}
SYNTHETIC_QUICKSTART_OVERRIDES: tuple[str, ...] = ()


class SpecError(ValueError):
    """A bad pipeline parameter; the message names the parameter."""


@dataclass
class PipelineSpec:
    """Validated parameters of one pipeline run (JSON-safe through :meth:`to_dict`)."""

    dataset: str
    schema: dict[str, Any]
    raw: list[str] = field(default_factory=list)
    splits: dict[str, str] | None = None
    synth: dict[str, Any] | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    oov_threshold: int | None = None
    cross_threshold: int | None = None
    overrides: list[str] = field(default_factory=list)
    #: defaults laid under ``overrides`` (the synthetic quick start's); the user's always win
    base_overrides: list[str] = field(default_factory=list)
    #: the overrides of the ``from_run`` reference, between the base and the user's own layer
    inherited_overrides: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    seed: int = 2026
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    force: list[str] = field(default_factory=list)
    from_run: str | None = None
    targets: list[str] = field(default_factory=lambda: list(FULL_PIPELINE))
    experiment: str = "optinter"
    tracking_uri: str = ""
    compare: dict[str, Any] | None = None
    #: a YAML / JSON settings file (``--config``, e.g. what ``optinter tune`` wrote), under the overrides
    config_file: str | None = None
    tune_mode: str = "auto"
    #: TuneConfig settings of the ``tune`` stage (over :data:`PIPELINE_TUNE`)
    tune: dict[str, Any] = field(default_factory=dict)
    #: ``score`` stage settings (model, raw files, score_files options); ``register_as``: model → registry name
    score: dict[str, Any] | None = None
    register_as: dict[str, str] = field(default_factory=dict)
    #: where independent training jobs (baselines, compare jobs, parallel tuning trials) run:
    #: ``optinter.cluster.JobsConfig`` settings (workers, threads, scheduler); not part of any stage key
    jobs: dict[str, Any] = field(default_factory=dict)
    needed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def dataset_name(self) -> str:
        return str(self.schema.get("name", self.dataset))

    def wants(self, stage: str) -> bool:
        return stage in self.needed

    def forced(self, stage: str, model: str | None = None) -> bool:
        return "all" in self.force or stage in self.force or (model is not None and model in self.force)

    def run_config(self, scope: str, model: str, data: str | Path | None = None, tuned: str | Path | None = None):
        """The ``RunConfig`` of ``model`` in stage ``scope``: the defaults derived from the encoded
        data in ``data`` (its ``feature_map.json``; the library defaults when None, e.g. to check
        overrides before any data exists), the seed, the quick-start ``base_overrides``,
        ``config_file``, the ``tuned`` settings file (the ``tune`` stage's ``tuned.yaml``), the
        overrides inherited from ``from_run``, then the user's overrides (which always win)."""
        from optinter.config import apply_overrides, default_config, load_config_file

        fmap = None
        if data is not None:
            from preprocess.feature_map import FeatureMap

            fmap = FeatureMap.load(data)
        cfg = default_config(fmap, model)
        cfg.train.seed = self.seed
        cfg = apply_overrides(cfg, scoped_overrides(self.base_overrides, scope, model))
        for f in (self.config_file, tuned):
            if f:
                cfg = apply_overrides(cfg, load_config_file(f))
        cfg = apply_overrides(cfg, scoped_overrides(self.inherited_overrides, scope, model))  # from_run's
        return apply_overrides(cfg, scoped_overrides(self.overrides, scope, model))

    def jobs_config(self) -> Any:
        """The ``JobsConfig`` of the ``jobs`` parameter (unset keys from the environment)."""
        from optinter.cluster import JobsConfig

        return JobsConfig.from_env(**self.jobs)

    def tune_config(self) -> Any:
        """The ``TuneConfig`` of the ``tune`` stage (the re-train of OptInter; the keys the user
        overrides for the re-train are left out of the search space: an override always wins)."""
        from optinter.tune import TuneConfig

        kw = {**PIPELINE_TUNE, "seed": self.seed, **self.tune, "model": SEARCH_MODEL}
        tc = TuneConfig(**kw)
        fixed = {kv.split("=", 1)[0].strip() for kv in scoped_overrides(self.overrides, "retrain", SEARCH_MODEL)}
        if fixed:
            tc.space = tuple(s for s in tc.space_strings() if s.split("=", 1)[0].strip() not in fixed)
        return tc

    @property
    def user_overrides(self) -> list[str]:
        """The overrides this run was given, those inherited from ``from_run`` first."""
        return self.inherited_overrides + self.overrides

    def overrides_for(self, scope: str, model: str) -> list[str]:
        """Base (quick-start) overrides, then those inherited from ``from_run``, then the user's:
        each layer unscoped first, then scoped (so a later layer wins)."""
        return [o for layer in (self.base_overrides, self.inherited_overrides, self.overrides)
                for o in scoped_overrides(layer, scope, model)]


def parse_override(item: str) -> tuple[str | None, str]:
    """``"retrain:train.lr_o=1e-4"`` → ``("retrain", "train.lr_o=1e-4")``; unscoped → ``(None, item)``."""
    key = item.split("=", 1)[0]
    if ":" in key:
        scope, rest = item.split(":", 1)
        return scope.strip(), rest.strip()
    return None, item.strip()


def scoped_overrides(overrides: Iterable[str], scope: str, model: str) -> list[str]:
    """The overrides that apply to ``model`` in stage ``scope`` (unscoped first, then scoped)."""
    out_all, out_scoped = [], []
    for item in overrides:
        s, kv = parse_override(item)
        if s is None:
            out_all.append(kv)
        elif s in (scope, model):
            out_scoped.append(kv)
    return out_all + out_scoped


def expand_paths(patterns: Sequence[str], param: str) -> list[str]:
    """Expand globs; every pattern must match at least one existing file."""
    out: list[str] = []
    for pat in patterns:
        pat = os.path.expanduser(str(pat))
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else ([pat] if Path(pat).exists() else [])
        if not hits:
            raise SpecError(f"parameter {param!r}: no file matches {pat!r}")
        for h in hits:
            if Path(h).is_dir():
                raise SpecError(f"parameter {param!r}: {h!r} is a folder, not a file")
            out.append(str(Path(h).resolve()))
    return out


def needed_stages(targets: Iterable[str], synthetic_without_files: bool, has_baselines: bool,
                  tune: bool = False) -> list[str]:
    """``targets`` plus everything they depend on, in execution order (``tune``: re-train reads
    the ``tune`` stage's settings)."""
    need: set[str] = set()
    stack = list(targets)
    while stack:
        s = stack.pop()
        if s in need:
            continue
        if s == "synth" and not synthetic_without_files:
            continue
        if s == "baselines" and not has_baselines:
            continue
        need.add(s)
        stack.extend(DEPENDS[s])
        if s == "retrain" and tune:
            stack.append("tune")
    return [s for s in STAGES if s in need]


def check_run_configs(spec: PipelineSpec) -> None:
    """Every model config the run will build must be valid (unknown keys, bad values): SpecError."""
    models = {("search", SEARCH_MODEL), ("retrain", SEARCH_MODEL)} | {("baselines", m) for m in spec.baselines}
    for scope, model in sorted(models):
        try:
            spec.run_config(scope, model)
        except ValueError as e:
            raise SpecError(f"parameter 'overrides' ({scope}/{model}): {e}") from None


def _check_threshold(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        try:
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                v = int(v)
            else:
                raise ValueError
        except ValueError:
            raise SpecError(f"parameter {name!r}: expected an integer >= 1, got {v!r}") from None
    if v < 1:
        raise SpecError(f"parameter {name!r}: must be an integer >= 1, got {v}")
    return int(v)


def resolve_spec(
    dataset: str = "synthetic",
    raw: Sequence[str] | str | None = None,
    train_path: str | None = None,
    valid_path: str | None = None,
    test_path: str | None = None,
    synth: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    oov_threshold: int | None = None,
    cross_threshold: int | None = None,
    overrides: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
    seed: int = 2026,
    artifact_root: str | None = None,
    force: Sequence[str] | None = None,
    from_run: str | None = None,
    stages: Sequence[str] | None = None,
    experiment: str = "optinter",
    tracking_uri: str | None = None,
    quickstart: bool = True,
    compare: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    tune_mode: str = "auto",
    tune: Mapping[str, Any] | None = None,
    score: Mapping[str, Any] | None = None,
    register_as: str | Sequence[str] | Mapping[str, str] | None = None,
    jobs: Mapping[str, Any] | None = None,
) -> PipelineSpec:
    """Check every parameter and return the :class:`PipelineSpec`; raises :class:`SpecError`.

    ``quickstart`` applies :data:`SYNTHETIC_QUICKSTART_SYNTH` / :data:`SYNTHETIC_QUICKSTART_OVERRIDES`
    to the ``synthetic`` dataset (explicit settings come after them, so they win).
    """
    from optinter.tracking import default_tracking_uri
    from preprocess.errors import PreprocessError
    from preprocess.schema import get_schema

    # dataset / schema
    if not dataset or not isinstance(dataset, str):
        raise SpecError(f"parameter 'dataset': expected a dataset name or a schema .yaml path, got {dataset!r}")
    try:
        schema = get_schema(dataset)
    except PreprocessError as e:
        raise SpecError(f"parameter 'dataset': {e}") from None
    schema_dict = schema.to_dict()
    synthetic = schema.name == "synthetic"

    # stages
    targets = list(stages) if stages else list(FULL_PIPELINE)
    for s in targets:
        if s not in STAGES:
            raise SpecError(f"parameter 'stages': unknown stage {s!r}; stages: {', '.join(STAGES)}")

    # models
    from optinter.registry import available_models

    known = available_models()
    if baselines is None:
        baselines = [m for m in DEFAULT_BASELINES if m in known]
    baselines = [baselines] if isinstance(baselines, str) else list(baselines)
    for m in baselines:
        if m not in known:
            raise SpecError(f"parameter 'baselines': unknown model {m!r}; known models: {', '.join(known)}")
    if len(set(baselines)) != len(baselines):
        raise SpecError(f"parameter 'baselines': {baselines} lists a model twice")

    # force
    force = [force] if isinstance(force, str) else list(force or [])
    for f in force:
        if f not in STAGES and f not in known and f != "all":
            raise SpecError(f"parameter 'force': unknown stage {f!r}; stages: {', '.join(STAGES)}, "
                            f"a model name, or 'all'")

    # thresholds
    oov = _check_threshold("oov_threshold", oov_threshold)
    cross = _check_threshold("cross_threshold", cross_threshold)

    # data files
    raw_list = [raw] if isinstance(raw, str) else list(raw or [])
    split_given = {n: p for n, p in zip(SPLIT_NAMES, (train_path, valid_path, test_path)) if p}
    if raw_list and split_given:
        raise SpecError("parameters 'raw' and 'train_path'/'valid_path'/'test_path' exclude each other: "
                        "give raw files (split by the pipeline) or the three pre-split files")
    splits = None
    if split_given:
        missing = [n for n in SPLIT_NAMES if n not in split_given]
        if missing:
            raise SpecError(f"pre-split data needs all of train_path, valid_path, test_path; "
                            f"missing: {', '.join(p + '_path' for p in missing)}")
        splits = {n: expand_paths([p], f"{n}_path")[0] for n, p in split_given.items()}
    raw_files = expand_paths(raw_list, "raw") if raw_list else []

    # synthetic generator settings
    synth_cfg: dict[str, Any] | None = None
    if synthetic and not raw_files and not splits:
        from preprocess.synthetic import SynthConfig

        synth_cfg = dict(SYNTHETIC_QUICKSTART_SYNTH) if quickstart else {}
        synth_cfg["seed"] = seed
        synth_cfg.update(dict(synth or {}))
        fields = {f.name for f in dataclasses.fields(SynthConfig)}
        unknown = sorted(set(synth_cfg) - fields)
        if unknown:
            raise SpecError(f"parameter 'synth': unknown keys {unknown}; known: {sorted(fields)}")
        try:
            sc = SynthConfig(**synth_cfg)
            for k in ("cardinalities", "memorize_pairs", "factorize_pairs"):  # JSON lists → tuples
                v = getattr(sc, k)
                setattr(sc, k, tuple(tuple(x) if isinstance(x, list) else x for x in v))
            sc.validate()
        except (TypeError, ValueError) as e:
            raise SpecError(f"parameter 'synth': {e}") from None
    elif synth:
        raise SpecError("parameter 'synth' only applies to dataset 'synthetic' without raw or split files")

    # preprocessing options: PreprocessConfig fields the flow does not set itself
    preprocess = dict(preprocess or {})
    if preprocess:
        from preprocess.pipeline import PreprocessConfig

        allowed = sorted({f.name for f in dataclasses.fields(PreprocessConfig)} - PREPROCESS_OWN_KEYS)
        unknown = sorted(set(preprocess) - set(allowed))
        if unknown:
            raise SpecError(f"parameter 'preprocess': unknown keys {unknown}; allowed: {allowed}")

    # settings file
    if config_file:
        from optinter.config import load_config_file

        try:
            load_config_file(config_file)
        except (ValueError, FileNotFoundError) as e:
            raise SpecError(f"parameter 'config_file': {e}") from None
        config_file = str(Path(config_file).resolve())

    # overrides
    base_overrides = list(SYNTHETIC_QUICKSTART_OVERRIDES) if (synthetic and quickstart) else []
    user_overrides = [overrides] if isinstance(overrides, str) else list(overrides or [])
    for item in user_overrides:
        scope, kv = parse_override(item)
        if scope is not None and scope not in OVERRIDE_SCOPES and scope not in known:
            raise SpecError(f"parameter 'overrides': {item!r}: unknown scope {scope!r}; use one of "
                            f"{', '.join(OVERRIDE_SCOPES)} or a model name")
        if "=" not in kv:
            raise SpecError(f"parameter 'overrides': {item!r}: expected key=value")

    spec = PipelineSpec(
        dataset=dataset, schema=schema_dict, raw=raw_files, splits=splits, synth=synth_cfg,
        preprocess=preprocess, oov_threshold=oov, cross_threshold=cross, overrides=user_overrides, base_overrides=base_overrides,
        baselines=baselines, seed=int(seed), artifact_root=str(artifact_root or os.environ.get(
            ARTIFACT_ROOT_ENV, DEFAULT_ARTIFACT_ROOT)),
        force=force, from_run=from_run, targets=targets, experiment=experiment,
        tracking_uri=tracking_uri or default_tracking_uri(), compare=dict(compare) if compare else None,
        config_file=config_file or None, tune_mode=tune_mode, tune=dict(tune or {}),
        score=check_score(score, "score" in targets), register_as=parse_register(register_as, baselines),
        jobs=check_jobs(jobs),
    )
    if tune_mode not in TUNE_MODES:
        raise SpecError(f"parameter 'tune_mode': expected one of {', '.join(TUNE_MODES)}, got {tune_mode!r}")
    if "score" in targets and not spec.score.get("model"):  # type: ignore[union-attr]
        targets = targets + ["retrain"]  # score this run's re-trained OptInter
    spec.needed = needed_stages(targets, synth_cfg is not None, bool(baselines), tune=tune_mode != "off")
    for m in spec.register_as:
        if ("retrain" if m == SEARCH_MODEL else "baselines") not in spec.needed:
            raise SpecError(f"parameter 'register_as': {m!r} is not trained by stages {targets}")
    if spec.wants("tune"):
        import dataclasses as _dc

        from optinter.tune import TuneConfig

        allowed = sorted(f.name for f in _dc.fields(TuneConfig) if f.name != "model")
        unknown = sorted(set(spec.tune) - set(allowed))
        if unknown:
            raise SpecError(f"parameter 'tune': unknown keys {unknown}; allowed: {allowed}")
        try:
            spec.tune_config().validate()
        except (TypeError, ValueError) as e:
            raise SpecError(f"parameter 'tune': {e}") from None
    if not spec.needed:
        raise SpecError(f"nothing to run: stages {targets} with baselines {baselines}")
    if synthetic is False and not raw_files and not splits and not from_run and "preprocess" in spec.needed:
        raise SpecError(f"dataset {schema.name!r} needs data: give 'raw' files or "
                        f"'train_path'/'valid_path'/'test_path' (or 'from_run' with earlier results)")

    check_run_configs(spec)
    if compare and "compare" not in spec.needed:
        raise SpecError("parameter 'compare' is only used with stage 'compare' (stages=['compare'])")
    if "compare" in spec.needed:
        import dataclasses as _dc

        from optinter.experiments import CompareConfig

        allowed = sorted(f.name for f in _dc.fields(CompareConfig))
        unknown = sorted(set(compare or {}) - set(allowed))
        if unknown:
            raise SpecError(f"parameter 'compare': unknown keys {unknown}; allowed: {allowed}")
        try:
            cc = CompareConfig(**dict(compare or {}))
            cc.validate()
        except (TypeError, ValueError) as e:
            raise SpecError(f"parameter 'compare': {e}") from None
        for m in cc.models:
            if m not in known:
                raise SpecError(f"parameter 'compare': unknown model {m!r}; known models: {', '.join(known)}")
    if ("search" in spec.needed or "retrain" in spec.needed) and SEARCH_MODEL not in known:
        raise SpecError(f"model {SEARCH_MODEL!r} is not registered (known: {', '.join(known)})")
    return spec


def check_jobs(jobs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``jobs`` parameter checked: ``optinter.cluster.JobsConfig`` keys (workers, threads, scheduler)."""
    import dataclasses as _dc

    from optinter.cluster import JobsConfig

    kw = {k: v for k, v in dict(jobs or {}).items() if v is not None}
    allowed = sorted(f.name for f in _dc.fields(JobsConfig))
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise SpecError(f"parameter 'jobs': unknown keys {unknown}; allowed: {allowed}")
    try:
        for k in ("workers", "threads"):
            if k in kw:
                kw[k] = int(kw[k])
        JobsConfig.from_env(**kw)
    except (TypeError, ValueError) as e:
        raise SpecError(f"parameter 'jobs': {e}") from None
    return kw


#: ``score`` keys besides the ``optinter.scoring.score_files`` options.
SCORE_KEYS = ("model", "raw")
#: ``score_files`` options that only say where / how fast to compute: not part of the stage key.
SCORE_RUNTIME_OPTIONS = ("scheduler", "n_workers", "threads_per_worker", "processes", "local", "device")


def check_score(score: Mapping[str, Any] | None, wanted: bool) -> dict[str, Any] | None:
    """The ``score`` parameter checked: ``raw`` files (required; globs expanded), an optional ``model``
    (a run folder, MLflow run id or model URI; default: this run's re-trained OptInter) and options
    of :func:`optinter.scoring.score_files` (``on_bad_rows``, ``id_columns``, ``blocksize``, ...)."""
    if not wanted:
        if score:
            raise SpecError("parameter 'score' is only used with stage 'score' (stages=['score'])")
        return None
    import inspect

    from optinter.scoring import score_files

    sc = dict(score or {})
    options = [k for k in inspect.signature(score_files).parameters if k not in ("model", "raw", "out", "tracking_uri")]
    unknown = sorted(set(sc) - set(SCORE_KEYS) - set(options))
    if unknown:
        raise SpecError(f"parameter 'score': unknown keys {unknown}; allowed: {sorted(SCORE_KEYS + tuple(options))}")
    raw = sc.get("raw")
    if not raw:
        raise SpecError("parameter 'score': key 'raw' (the files to score) is required, e.g. "
                        "score={'raw': ['new/*.tsv'], 'model': 'models:/ctr/1'}")
    sc["raw"] = expand_paths([raw] if isinstance(raw, str) else list(raw), "score.raw")
    if sc.get("on_bad_rows", "error") not in ("error", "skip"):
        raise SpecError(f"parameter 'score': on_bad_rows must be 'error' or 'skip', got {sc['on_bad_rows']!r}")
    ids = sc.get("id_columns", [])
    sc["id_columns"] = [ids] if isinstance(ids, str) else list(ids)
    if sc.get("model") is not None and not isinstance(sc["model"], str):
        raise SpecError(f"parameter 'score': model must be a run folder, an MLflow run id or a model URI, "
                        f"got {sc['model']!r}")
    return sc


def parse_register(register: str | Sequence[str] | Mapping[str, str] | None, baselines: Sequence[str]) -> dict[str, str]:
    """``"NAME"`` (the re-trained OptInter), ``"MODEL=NAME"`` items or ``{model: name}`` → ``{model: name}``."""
    if not register:
        return {}
    if isinstance(register, Mapping):
        items = [f"{k}={v}" for k, v in register.items()]
    else:
        items = [register] if isinstance(register, str) else list(register)
    out: dict[str, str] = {}
    for item in items:
        model, _, name = str(item).rpartition("=")
        model, name = model.strip() or SEARCH_MODEL, name.strip()
        if not name:
            raise SpecError(f"parameter 'register_as': {item!r}: expected NAME or MODEL=NAME")
        if model != SEARCH_MODEL and model not in baselines:
            raise SpecError(f"parameter 'register_as': {item!r}: model {model!r} is not trained by this run "
                            f"(optinter, or a baseline: {', '.join(baselines) or 'none'})")
        out[model] = name
    return out
