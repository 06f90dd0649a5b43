"""The paper's experiments (section III, Tables V–IX and Fig. 4) as one ``compare`` stage.

:func:`run_compare` plans a list of training *jobs* (model × seed × config variant), trains each
one through a trainer (default :func:`stages_trainer`: ``optinter.stages``), and builds:

* **Table V** — every chosen model (default: all registered models; ``optinter`` runs search →
  re-train) over N seeds: mean ± std of test AUC and log loss, #params, and the two-tailed paired
  t-test p-value of OptInter against the best baseline (highest mean AUC), paired by seed;
* **Table VI** — method-selection counts ``[memorize, factorize, naive]`` per model;
* **Table VII** — naive / factorized baselines with their embedding size enlarged until their
  #params reaches OptInter's (``model.embed_dim`` solved from a fitted quadratic in the size);
* **Table VIII** — OptInter vs bi-level search (``train.bilevel=true``) vs the mean of
  ``n_random`` random architectures re-trained;
* **Table IX** — OptInter with vs without the re-train stage (the search-stage model's metrics);
* **Fig. 4** — AUC against #params of OptInter and OptInter-M at several memorized embedding
  sizes (``model.cross_embed_dim``).

Every job's metrics are cached under ``cache_dir/<key>/metrics.json`` where the key hashes the
data's content hash, the model, the job variant, the fully resolved config (seed included) and
the random-architecture seed: re-running with more seeds or more tables trains only what is new.
Tables are written as CSV and Markdown, figures as PNG, atomically into ``out_dir``, and logged to
the (parent) tracker; each trained job is logged to a child tracker when one can be made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from preprocess.atomic import atomic_output_dir
from preprocess.feature_map import FeatureMap, fingerprint

from .config import RunConfig, default_config, merged_config, paper_config
from .report import REPORT_FILE, write_report
from .stats import fmt_mean_std, fmt_p, fmt_params, mean_std, paired_ttest
from .tracking import TAG_STEP, Tracker, as_tracker

log = logging.getLogger(__name__)

ALL_TABLES = ("V", "VI", "VII", "VIII", "IX", "fig4")
CACHE_ENV = "OPTINTER_COMPARE_CACHE"
OPTINTER = "optinter"
METHODS = ("memorize", "factorize", "naive")

#: Table III categories (how each model treats the feature interactions).
CATEGORY: dict[str, str] = {
    "lr": "naive", "fnn": "naive",
    "fm": "factorized", "fwfm": "factorized", "fmfm": "factorized", "ipnn": "factorized", "opnn": "factorized",
    "deepfm": "factorized", "pin": "factorized", "optinter_f": "factorized",
    "poly2": "memorized", "wide_deep": "memorized", "optinter_m": "memorized",
    "autofis": "hybrid", "optinter": "hybrid",
}
#: Row order of Table V (paper order; unknown models go last, alphabetically).
MODEL_ORDER = ("lr", "fnn", "fm", "fwfm", "fmfm", "ipnn", "opnn", "deepfm", "pin", "optinter_f",
               "poly2", "wide_deep", "optinter_m", "autofis", "optinter")
_FIXED_METHOD = {"naive": "naive", "factorized": "factorize", "memorized": "memorize"}


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
    if up not in ALL_TABLES:
        raise ValueError(f"compare: unknown table {t!r}; choose from {', '.join(ALL_TABLES)}")
    return up


# ---- jobs and the trainer -------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One training run. ``variant``: ``"train"`` (``stages.run_train``; OptInter = search → re-train),
    ``"random"`` (re-train of ``random_architecture(seed=arch_seed)``). ``extra`` are overrides on
    top of the global ones (e.g. ``model.embed_dim=200``, ``train.bilevel=true``)."""

    model: str
    seed_index: int
    variant: str = "train"
    extra: tuple[str, ...] = ()
    arch_seed: int | None = None

    @property
    def label(self) -> str:
        bits = [self.model, self.variant if self.variant != "train" else "", *self.extra,
                f"arch{self.arch_seed}" if self.arch_seed is not None else "", f"seed{self.seed_index}"]
        return "/".join(b for b in bits if b)


#: ``train_fn(job, data_dir, job_dir, cfg, tracker) -> metrics dict`` (metrics.json keys; for
#: search → re-train models optionally ``"search": {metrics of the search-stage model}``).
TrainFn = Callable[[Job, Path, Path, RunConfig, "Tracker | None"], Mapping[str, Any]]
#: ``param_count_fn(model, feature_map, run_config) -> #params`` (Table VII sizing).
ParamCountFn = Callable[[str, FeatureMap, RunConfig], int]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def stages_trainer(job: Job, data_dir: Path, job_dir: Path, cfg: RunConfig, tracker: Tracker | None) -> dict[str, Any]:
    """The real trainer: ``optinter.stages`` (``run_train``; random architectures via ``run_retrain``)."""
    from . import stages

    if job.variant == "random":
        from .architecture import random_architecture

        fm = FeatureMap.load(data_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        arch_path = random_architecture(fm, int(job.arch_seed or 0), model=job.model).save(job_dir / "architecture.json")
        stages.run_retrain(data_dir, arch_path, job_dir / "retrain", cfg, tracker=tracker)
        return _read_json(job_dir / "retrain" / "metrics.json")
    out = job_dir / "train"
    stages.run_train(data_dir, job.model, out, cfg, tracker=tracker)
    metrics = _read_json(out / "metrics.json")
    for cand in (out / "search" / "metrics.json", out / "search_metrics.json"):
        if cand.exists() and "search" not in metrics:
            metrics["search"] = _read_json(cand)
    return metrics


def count_params(model: str, fm: FeatureMap, cfg: RunConfig) -> int:
    """#parameters of ``model`` built (on CPU) from ``fm`` and ``cfg.model``."""
    import torch

    from .registry import build_model, needs_architecture

    arch = None
    if needs_architecture(model):
        from .architecture import Architecture

        arch = Architecture.uniform(fm, "memorize", model=model)
    with torch.no_grad():
        return int(build_model(model, fm, cfg.model, arch=arch).num_params())


def enlarged_embed_dim(model: str, fm: FeatureMap, cfg: RunConfig, target: float,
                       param_count_fn: ParamCountFn = count_params, max_dim: int = 2048) -> tuple[int, int]:
    """Embedding size whose #params is closest to ``target`` (never below ``cfg.model.embed_dim``).

    #params is a polynomial of degree ≤ 2 in the embedding size for every baseline (tables,
    linear layers fed by F·D inputs, D×D kernels), so it is fitted exactly from sizes 1, 2, 3
    (checked at 4; otherwise a bisection over built models). Returns ``(dim, #params at dim)``.
    """
    def count(d: int) -> int:
        c = RunConfig.from_dict(cfg.to_dict())
        c.model.embed_dim = int(d)
        return int(param_count_fn(model, fm, c))

    base = cfg.model.embed_dim
    xs = np.array([1.0, 2.0, 3.0])
    ys = np.array([count(1), count(2), count(3)], dtype=np.float64)
    coef = np.polyfit(xs, ys, 2)
    exact = abs(np.polyval(coef, 4.0) - count(4)) < 0.5
    if exact:
        def predict(d: int) -> float:
            return float(np.polyval(coef, d))
    else:
        log.info("compare: #params of %s is not quadratic in embed_dim; bisecting", model)
        predict = count  # type: ignore[assignment]
    lo, hi = base, base
    while predict(hi) < target and hi < max_dim:
        lo, hi = hi, min(hi * 2, max_dim)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predict(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda d: abs(predict(d) - target))
    return int(best), int(round(predict(best)))


class JobCache:
    """``cache_dir/<key>/metrics.json`` per job; the key hashes data, model, variant, config and seeds."""

    def __init__(self, cache_dir: Path, data_hash: str, keep_models: bool = False) -> None:
        self.dir = Path(cache_dir)
        self.data_hash = data_hash
        self.keep_models = keep_models

    def key(self, job: Job, cfg: RunConfig) -> str:
        return fingerprint([self.data_hash, job.model, job.variant, job.arch_seed, cfg.to_dict()])[:20]

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.dir / key / "metrics.json"
        return _read_json(p) if p.exists() else None

    def run(self, job: Job, cfg: RunConfig, data_dir: Path, train_fn: TrainFn,
            tracker: Tracker | None) -> tuple[dict[str, Any], bool]:
        """Cached metrics of ``job``, training it first when absent. Returns ``(metrics, cached)``."""
        key = self.key(job, cfg)
        hit = self.get(key)
        if hit is not None:
            return hit, True
        job_dir = self.dir / key
        if job_dir.exists():  # an interrupted earlier attempt: start clean
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        (job_dir / "job.json").write_text(json.dumps({"job": dataclasses.asdict(job), "config": cfg.to_dict(),
                                                      "data_hash": self.data_hash}, indent=2, default=str))
        t0 = time.time()
        metrics = dict(train_fn(job, data_dir, job_dir, cfg, tracker))
        metrics.setdefault("model", job.model)
        metrics.setdefault("seconds", time.time() - t0)
        if getattr(tracker, "run_id", None):
            metrics["compare_run_id"] = tracker.run_id  # type: ignore[union-attr]
        if not self.keep_models:
            for p in list(job_dir.rglob("*.pt")):
                p.unlink()
        tmp = job_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
        os.replace(tmp, job_dir / "metrics.json")
        return metrics, False


# ---- planning ------------------------------------------------------------------------------------------
def default_models() -> list[str]:
    """Every registered model (Table V's default set), in the paper's row order."""
    from .registry import available_models

    return order_models(available_models())


def order_models(models: Iterable[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(dict.fromkeys(models), key=lambda m: (rank.get(m, len(rank)), m))


class _Runner:
    """Resolves configs, runs jobs through the cache and remembers every run for ``runs.csv``."""

    def __init__(self, data_dir: Path, fm: FeatureMap, cc: CompareConfig, cache: JobCache, train_fn: TrainFn,
                 children: "_ChildRuns") -> None:
        self.data_dir, self.fm, self.cc, self.cache = data_dir, fm, cc, cache
        self.train_fn, self.children = train_fn, children
        self.dataset = cc.dataset or fm.dataset
        self.rows: list[dict[str, Any]] = []
        self.n_trained = 0
        self.n_cached = 0
        self._done: dict[str, dict[str, Any]] = {}

    def config(self, job: Job) -> RunConfig:
        base = paper_config(self.cc.paper, job.model) if self.cc.paper else default_config(self.fm, job.model)
        cfg = merged_config(base, self.cc.config_file, list(self.cc.overrides) + list(job.extra))
        cfg.train.seed = cfg.train.seed + job.seed_index
        return cfg

    def run(self, job: Job, table: str) -> dict[str, Any]:
        cfg = self.config(job)
        key = self.cache.key(job, cfg)
        if key in self._done:
            return self._done[key]
        tr = None
        if self.cache.get(key) is None:
            # named by job and short key: jobs of other settings read apart across compare runs
            tr = self.children.open(f"{job.label} {key[:8]}", {
                TAG_STEP: job.label, "optinter.model": job.model, "optinter.compare_table": table,
                "optinter.seed": cfg.train.seed, "optinter.compare_key": key})
        log.info("compare [%s]: %s (key %s)", table, job.label, key)
        ok = False
        try:
            metrics, cached = self.cache.run(job, cfg, self.data_dir, self.train_fn, tr)
            ok = True
        finally:
            self.children.close(tr, ok)
        if cached:
            self.n_cached += 1
        else:
            self.n_trained += 1
            log.info("compare [%s]: %s → test AUC %.4f, log loss %.4f, %s params", table, job.label,
                     metrics.get("test_auc", float("nan")), metrics.get("test_logloss", float("nan")),
                     fmt_params(float(metrics.get("params", float("nan")))))
        self._done[key] = metrics
        self.rows.append({"table": table, "job": job.label, "model": job.model, "variant": job.variant,
                          "seed": cfg.train.seed, "arch_seed": job.arch_seed, "extra": " ".join(job.extra),
                          "key": key, "cached": cached, "test_auc": metrics.get("test_auc"),
                          "test_logloss": metrics.get("test_logloss"), "params": metrics.get("params"),
                          "seconds": metrics.get("seconds"), "run_id": metrics.get("compare_run_id")})
        return metrics

    def seeds(self, job: Job, n: int, table: str) -> list[dict[str, Any]]:
        return [self.run(dataclasses.replace(job, seed_index=i), table) for i in range(n)]


# ---- table building -------------------------------------------------------------------------------------
def _col(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) is not None else float("nan") for r in runs]


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean / std over seeds of test AUC, test log loss and #params."""
    auc_m, auc_s = mean_std(_col(runs, "test_auc"))
    ll_m, ll_s = mean_std(_col(runs, "test_logloss"))
    p_m, _ = mean_std(_col(runs, "params"))
    return {"auc_mean": auc_m, "auc_std": auc_s, "logloss_mean": ll_m, "logloss_std": ll_s,
            "params": p_m, "n_seeds": len(runs)}


def arch_counts(model: str, runs: Sequence[Mapping[str, Any]], n_pairs: int) -> list[float] | None:
    """Mean ``[memorize, factorize, naive]`` over seeds: from metrics, else from the model's category."""
    got = [r for r in runs if all(f"n_{m}" in r for m in METHODS)]
    if got:
        return [float(np.mean([r[f"n_{m}"] for r in got])) for m in METHODS]
    kind = _FIXED_METHOD.get(CATEGORY.get(model, ""))
    if kind is None:
        return None
    return [float(n_pairs) if m == kind else 0.0 for m in METHODS]


def _fmt_counts(c: Sequence[float] | None) -> str:
    if c is None:
        return "–"
    return "[" + ",".join(f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}" for x in c) + "]"


def _pvals(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    n = min(len(a), len(b))
    _, p_auc = paired_ttest(_col(a[:n], "test_auc"), _col(b[:n], "test_auc"))
    _, p_ll = paired_ttest(_col(a[:n], "test_logloss"), _col(b[:n], "test_logloss"))
    return p_auc, p_ll


def table_v(results: Mapping[str, Sequence[Mapping[str, Any]]], alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table V: one row per model; p-values (OptInter row) vs the best baseline by mean AUC."""
    rows = []
    for model, runs in results.items():
        rows.append({"model": model, "category": CATEGORY.get(model, "other"), **summarize(runs)})
    df = pd.DataFrame(rows)
    df["p_auc"] = np.nan
    df["p_logloss"] = np.nan
    df["vs"] = ""
    baselines = df[df["model"] != OPTINTER]
    if OPTINTER in results and len(baselines):
        best = baselines.sort_values("auc_mean", ascending=False).iloc[0]["model"]
        p_auc, p_ll = _pvals(results[OPTINTER], results[best])
        i = df.index[df["model"] == OPTINTER][0]
        df.loc[i, ["p_auc", "p_logloss"]] = [p_auc, p_ll]
        df.loc[i, "vs"] = best
        df["best_baseline"] = df["model"] == best
        b = df[df["model"] == best].iloc[0]
        df["better_auc"] = np.where(df["model"] == OPTINTER, df["auc_mean"] > b["auc_mean"], np.nan)
        df["better_logloss"] = np.where(df["model"] == OPTINTER, df["logloss_mean"] < b["logloss_mean"], np.nan)
    better_auc = df["better_auc"] if "better_auc" in df else pd.Series(np.nan, index=df.index)
    better_ll = df["better_logloss"] if "better_logloss" in df else pd.Series(np.nan, index=df.index)
    md = pd.DataFrame({
        "Model": df["model"], "Category": df["category"],
        "AUC": [fmt_mean_std(m, s) + _star(p, alpha, up) for m, s, p, up in
                zip(df["auc_mean"], df["auc_std"], df["p_auc"], better_auc)],
        "Log loss": [fmt_mean_std(m, s) + _star(p, alpha, up)
                     for m, s, p, up in zip(df["logloss_mean"], df["logloss_std"], df["p_logloss"], better_ll)],
        "Param.": [fmt_params(p) for p in df["params"]],
        "Seeds": df["n_seeds"],
        "p (AUC)": [fmt_p(p) for p in df["p_auc"]],
        "p (log loss)": [fmt_p(p) for p in df["p_logloss"]],
    })
    return df, md


def _star(p: float, alpha: float, improved: Any = True) -> str:
    """``*`` marks a significant *improvement* (p < alpha and better), as in the paper's tables."""
    return "*" if p == p and p < alpha and improved == 1 else ""


def table_vi(results: Mapping[str, Sequence[Mapping[str, Any]]], n_pairs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table VI: mean [memorize, factorize, naive] per model over seeds."""
    rows = []
    for model, runs in results.items():
        c = arch_counts(model, runs, n_pairs)
        rows.append({"model": model, "n_memorize": c[0] if c else np.nan, "n_factorize": c[1] if c else np.nan,
                     "n_naive": c[2] if c else np.nan, "n_pairs": n_pairs})
    df = pd.DataFrame(rows)
    md = pd.DataFrame({"Method": df["model"],
                       "[memorize, factorize, naive]": [_fmt_counts(arch_counts(m, results[m], n_pairs))
                                                        for m in df["model"]]})
    return df, md


def _rows_table(named: Sequence[tuple[str, Sequence[Mapping[str, Any]], Mapping[str, Any]]],
                ref: str | None, alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generic table: rows (name, runs, extra columns); p-values of ``ref`` against each other row."""
    by = {n: r for n, r, _ in named}
    rows = []
    for name, runs, extra in named:
        row = {"model": name, **summarize(runs), **extra}
        if ref is not None and name != ref and ref in by:
            row["p_auc"], row["p_logloss"] = _pvals(by[ref], runs)
        else:
            row["p_auc"], row["p_logloss"] = np.nan, np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    md = pd.DataFrame({"Model": df["model"],
                       "AUC": [fmt_mean_std(m, s) for m, s in zip(df["auc_mean"], df["auc_std"])],
                       "Log loss": [fmt_mean_std(m, s) for m, s in zip(df["logloss_mean"], df["logloss_std"])]})
    for col in df.columns:
        if col in ("orig_embed", "cross_embed"):
            md["Orig.E." if col == "orig_embed" else "Cross.E."] = df[col].astype("Int64").astype(str)
        elif col == "arch":
            md["Arch"] = df[col]
    md["Param."] = [fmt_params(p) for p in df["params"]]
    md["Seeds"] = df["n_seeds"]
    if ref is not None:
        md[f"p vs {ref} (AUC)"] = [fmt_p(p) for p in df["p_auc"]]
        md[f"p vs {ref} (log loss)"] = [fmt_p(p) for p in df["p_logloss"]]
    return df, md


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if (isinstance(v, float) and v != v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def plot_fig4(points: pd.DataFrame, out_png: Path, dataset: str) -> Path:
    """Fig. 4: test AUC (mean ± std over seeds) against #params, one line per model, labelled by s2."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    markers = {"optinter": "o", "optinter_m": "s"}
    for k, (model, g) in enumerate(points.groupby("model", sort=False)):
        g = g.sort_values("params")
        ax.errorbar(g["params"], g["auc_mean"], yerr=g["auc_std"].fillna(0), marker=markers.get(model, "^"),
                    capsize=3, label=model)
        for row in g.itertuples():
            ax.annotate(f"{model}({row.cross_embed})", (row.params, row.auc_mean), textcoords="offset points",
                        xytext=(4, 4 - 12 * (k % 2)), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("#parameters")
    ax.set_ylabel("test AUC")
    ax.set_title(f"{dataset}: AUC vs #params at several memorized embedding sizes", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


class _ChildRuns:
    """Makes one child tracker (nested MLflow run) per newly trained job, and closes it.

    ``factory(name, tags) -> Tracker`` when given; else ``tracker.child`` (a nested MLflow run for
    an :class:`~optinter.tracking.MlflowTracker`); else none (jobs are then only summarized on the
    parent).
    """

    def __init__(self, tracker: Tracker | None,
                 factory: Callable[[str, Mapping[str, Any]], Tracker | None] | None = None) -> None:
        self._factory = factory
        if factory is None and tracker is not None and callable(getattr(tracker, "child", None)):
            from .tracking import TAG_STAGE

            parent = tracker
            self._factory = lambda name, tags: parent.child(name, {**tags, TAG_STAGE: "compare-job"})

    def open(self, name: str, tags: Mapping[str, Any]) -> Tracker | None:
        if self._factory is not None:
            return self._factory(name, tags)
        return None

    def close(self, tracker: Tracker | None, ok: bool) -> None:
        if tracker is None:
            return
        if callable(getattr(tracker, "end", None)):
            tracker.end("FINISHED" if ok else "FAILED")  # type: ignore[attr-defined]


# ---- the stage ------------------------------------------------------------------------------------------------
def run_compare(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], cc: CompareConfig | None = None,
                tracker: Tracker | None = None, *, train_fn: TrainFn | None = None,
                param_count_fn: ParamCountFn | None = None,
                child_tracker: Callable[[str, Mapping[str, Any]], Tracker | None] | None = None) -> dict[str, Any]:
    """The ``compare`` stage: train what the chosen tables need (cached) and write the tables.

    Writes into ``out_dir`` (atomically): ``table_<name>.csv`` / ``.md`` for each table,
    ``fig4.csv`` / ``fig4.png``, ``runs.csv`` (every job: key, cached?, metrics), ``tables.md``
    (all tables) and ``report.html``. ``train_fn`` defaults to :func:`stages_trainer`;
    ``child_tracker(name, tags)`` (default: ``tracker.child`` when it exists) gives the tracker of
    each newly trained job (default: a nested MLflow run under an ``MlflowTracker``). The job cache is
    ``cc.cache_dir``, else ``$OPTINTER_COMPARE_CACHE``, else ``compare_cache`` beside ``out_dir``.
    Returns paths and headline numbers.
    """
    t0 = time.time()
    cc = cc or CompareConfig()
    cc.validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    fm = FeatureMap.load(data_dir)
    tr = as_tracker(tracker)
    train_fn = train_fn or stages_trainer
    param_count_fn = param_count_fn or count_params
    cache_dir = Path(cc.cache_dir or os.environ.get(CACHE_ENV) or out_dir.parent / "compare_cache")
    cache = JobCache(cache_dir, fm.content_hash or fingerprint([str(data_dir.resolve())]), cc.keep_models)
    runner = _Runner(data_dir, fm, cc, cache, train_fn, _ChildRuns(tracker, child_tracker))
    models = order_models(cc.models) if cc.models else default_models()
    if not models:
        raise ValueError("compare: no models to train (none registered and none given with --models)")
    n, na = cc.seeds, cc.n_ablation
    tables = set(cc.tables)
    tr.log_params({f"compare.{k}": (",".join(map(str, v)) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(cc).items() if k != "cache_dir"})
    tr.set_tags({"compare.cache_dir": str(cache_dir)})  # a machine path: a tag, not a param
    log.info("compare: tables %s; models %s; %d seeds (%d for ablations); cache %s",
             ",".join(cc.tables), ",".join(models), n, na, cache_dir)

    outputs: dict[str, tuple[pd.DataFrame, pd.DataFrame, str]] = {}
    summary: dict[str, Any] = {}
    # Tables V / VI: the chosen models × seeds.
    main: dict[str, list[dict[str, Any]]] = {}
    if tables & {"V", "VI"}:
        for m in models:
            main[m] = runner.seeds(Job(m, 0), n, "V")
    needs_opt = bool(tables & {"VII", "VIII", "IX"})
    opt_runs = main.get(OPTINTER)
    if needs_opt:
        opt_runs = [runner.run(Job(OPTINTER, i), "V") for i in range(max(na, len(opt_runs or [])))]
    if "V" in tables:
        df, md = table_v(main, cc.alpha)
        outputs["V"] = (df, md, "Table V — overall performance (test set; mean ± std over seeds; "
                                "p: two-tailed paired t-test of OptInter vs the best baseline)")
        if OPTINTER in main:
            r = df[df["model"] == OPTINTER].iloc[0]
            summary.update({"optinter_auc": r["auc_mean"], "optinter_logloss": r["logloss_mean"],
                            "best_baseline": r["vs"], "p_auc": r["p_auc"], "p_logloss": r["p_logloss"]})
    if "VI" in tables:
        df, md = table_vi(main, fm.num_pairs)
        outputs["VI"] = (df, md, "Table VI — method selection [memorize, factorize, naive] per model (mean over seeds)")
    if "VII" in tables:
        opt = (opt_runs or [])[:na]
        target = summarize(opt)["params"]
        named: list[tuple[str, Sequence[Mapping[str, Any]], Mapping[str, Any]]] = []
        for m in order_models(cc.enlarge_models):
            cfg0 = runner.config(Job(m, 0))
            dim, predicted = enlarged_embed_dim(m, fm, cfg0, target, param_count_fn, cc.max_enlarge)
            log.info("compare [VII]: %s embed_dim %d → %s params (OptInter: %s)", m, dim, fmt_params(predicted),
                     fmt_params(target))
            runs = runner.seeds(Job(m, 0, extra=(f"model.embed_dim={dim}",)), na, "VII")
            named.append((m, runs, {"orig_embed": dim, "cross_embed": 0}))
        ocfg = runner.config(Job(OPTINTER, 0))
        named.append((OPTINTER, opt, {"orig_embed": ocfg.model.embed_dim, "cross_embed": ocfg.model.cross_embed_dim}))
        df, md = _rows_table(named, OPTINTER, cc.alpha)
        outputs["VII"] = (df, md, "Table VII — naive / factorized models with the embedding size enlarged to "
                                  "OptInter's #params (p: paired t-test of OptInter vs each row)")
    if "VIII" in tables:
        opt = (opt_runs or [])[:na]
        bil = runner.seeds(Job(OPTINTER, 0, extra=("train.bilevel=true",)), na, "VIII")
        rnd = [runner.run(Job(OPTINTER, 0, variant="random", arch_seed=k), "VIII") for k in range(cc.n_random)]
        named = [("random", rnd, {"arch": _fmt_counts(arch_counts(OPTINTER, rnd, fm.num_pairs))}),
                 ("bi-level", bil, {"arch": _fmt_counts(arch_counts(OPTINTER, bil, fm.num_pairs))}),
                 (OPTINTER, opt, {"arch": _fmt_counts(arch_counts(OPTINTER, opt, fm.num_pairs))})]
        df, md = _rows_table(named, OPTINTER, cc.alpha)
        df.loc[df["model"] == "random", ["p_auc", "p_logloss"]] = np.nan  # random archs are not paired by seed
        md.loc[md["Model"] == "random", [c for c in md.columns if c.startswith("p vs")]] = "–"
        outputs["VIII"] = (df, md, f"Table VIII — search algorithms: OptInter (joint) vs bi-level vs the mean "
                                   f"of {cc.n_random} random architectures")
    if "IX" in tables:
        opt = (opt_runs or [])[:na]
        without = [dict(r["search"], params=r["search"].get("params", r.get("params"))) for r in opt if "search" in r]
        if len(without) != len(opt):
            log.warning("compare [IX]: %d of %d OptInter runs report no search-stage metrics; Table IX uses the rest",
                        len(opt) - len(without), len(opt))
        with_rt = [r for r in opt if "search" in r]
        df, md = _rows_table([("with re-train", with_rt, {}), ("without re-train", without, {})],
                             "with re-train", cc.alpha)
        outputs["IX"] = (df, md, "Table IX — OptInter with vs without the re-train stage")
    fig4_points = None
    if "fig4" in tables:
        pts = []
        for m in cc.fig4_models:
            for s2 in cc.fig4_cross_dims:
                runs = runner.seeds(Job(m, 0, extra=(f"model.cross_embed_dim={s2}",)), na, "fig4")
                pts.append({"model": m, "cross_embed": s2, **summarize(runs)})
        fig4_points = pd.DataFrame(pts)
        md = pd.DataFrame({"Model": [f"{m}({s})" for m, s in zip(fig4_points["model"], fig4_points["cross_embed"])],
                           "AUC": [fmt_mean_std(a, b) for a, b in zip(fig4_points["auc_mean"], fig4_points["auc_std"])],
                           "Param.": [fmt_params(p) for p in fig4_points["params"]],
                           "Seeds": fig4_points["n_seeds"]})
        outputs["fig4"] = (fig4_points, md, "Figure 4 — AUC against #params at several memorized embedding sizes")

    files: list[str] = []
    with atomic_output_dir(out_dir, merge=True) as tmp:
        md_all = [f"# Compare — {runner.dataset}\n",
                  f"{n} seed(s) per model ({na} for Tables VII–IX and Fig. 4); test-set metrics.\n"]
        for name, (df, md, title) in outputs.items():
            stem = "fig4" if name == "fig4" else f"table_{name}"
            df.to_csv(tmp / f"{stem}.csv", index=False, float_format="%.10g")
            (tmp / f"{stem}.md").write_text(f"**{title}**\n\n" + to_markdown(md))
            files += [f"{stem}.csv", f"{stem}.md"]
            md_all.append(f"## {title}\n\n{to_markdown(md)}")
        figures: list[tuple[str, Path]] = []
        if fig4_points is not None and len(fig4_points):
            plot_fig4(fig4_points, tmp / "fig4.png", runner.dataset)
            files.append("fig4.png")
            figures.append(("Figure 4 — AUC vs #params", tmp / "fig4.png"))
            md_all.append("![Figure 4](fig4.png)\n")
        pd.DataFrame(runner.rows).to_csv(tmp / "runs.csv", index=False, float_format="%.10g")
        (tmp / "tables.md").write_text("\n".join(md_all))
        files += ["runs.csv", "tables.md"]
        write_report(tmp / REPORT_FILE, f"OptInter compare — {runner.dataset}", data_dir=data_dir,
                     tables=[(title, md.to_dict("records")) for _, (_, md, title) in outputs.items()],
                     figures=figures,
                     notes=[f"{n} seed(s) per model; {runner.n_trained} job(s) trained, {runner.n_cached} from the "
                            f"cache ({cache_dir})."])
        files.append(REPORT_FILE)
    metrics: dict[str, float] = {"compare.jobs_trained": runner.n_trained, "compare.jobs_cached": runner.n_cached}
    for name, (df, _, _) in outputs.items():
        if name in ("V", "VII", "VIII", "IX") and "auc_mean" in df:
            for row in df.itertuples():
                key = str(row.model).replace(" ", "_")
                metrics[f"{name}.{key}.auc"] = row.auc_mean
                metrics[f"{name}.{key}.logloss"] = row.logloss_mean
    tr.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))})
    for f in files:
        tr.log_artifact(out_dir / f, "compare")
    summary.update({"out_dir": str(out_dir), "cache_dir": str(cache_dir), "tables": sorted(outputs),
                    "files": [str(out_dir / f) for f in files], "jobs_trained": runner.n_trained,
                    "jobs_cached": runner.n_cached, "seconds": time.time() - t0})
    log.info("compare: %d job(s) trained, %d cached; wrote %s in %.1f s", runner.n_trained, runner.n_cached,
             out_dir, summary["seconds"])
    return summary
