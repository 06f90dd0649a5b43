"""The paper's tables (V–IX) and Fig. 4 as registered units: what training jobs each needs, and
how it builds its table from their metrics. :func:`optinter.experiments.run_compare` runs the
jobs (through the one stage cache) and writes what the tables build.

A :class:`Table` has ``jobs(ctx, runs)`` — the requests (:class:`Request`) it needs given the
runs done so far (asked again after every round of jobs, until no table asks for a new one:
Table VII sizes its enlarged baselines from OptInter's #params, so it asks in two rounds) — and
``build(ctx, runs)`` — its :class:`TableOutput` (CSV frame, Markdown frame, title, headline
figures, plots). :data:`TABLES` is the registry, in output order; :func:`register` adds one.

* **V** — every chosen model over N seeds: mean ± std of test AUC and log loss, #params, and the
  two-tailed paired t-test p-value of OptInter against the best baseline (highest mean AUC);
* **VI** — method-selection counts ``[memorize, factorize, naive]`` per model;
* **VII** — naive / factorized baselines with their embedding size enlarged until their #params
  reaches OptInter's (``model.embed_dim`` solved from a fitted quadratic in the size);
* **VIII** — OptInter vs bi-level search vs the mean of ``n_random`` random architectures;
* **IX** — OptInter with vs without the re-train stage (the search-stage model's metrics);
* **fig4** — AUC against #params of OptInter and OptInter-M at several memorized embedding sizes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from preprocess.feature_map import FeatureMap

from .config import RunConfig
from .stats import fmt_mean_std, fmt_p, fmt_params, mean_std, paired_ttest

if TYPE_CHECKING:
    from .experiments import CompareConfig

log = logging.getLogger(__name__)

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

#: ``param_count_fn(model, feature_map, run_config) -> #params`` (Table VII sizing).
ParamCountFn = Callable[[str, FeatureMap, RunConfig], int]
Metrics = dict[str, Any]


# ---- jobs -----------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Request:
    """A job a table needs; ``table`` labels it in ``runs.csv`` (the first table that asked)."""

    job: Job
    table: str


def seeds(job: Job, n: int, table: str) -> list[Request]:
    """``job`` at seed indices 0..n-1."""
    return [Request(dataclasses.replace(job, seed_index=i), table) for i in range(n)]


class Runs:
    """The metrics of the jobs run so far, by job (jobs with the same cache key share them)."""

    def __init__(self) -> None:
        self._by_job: dict[Job, Metrics] = {}

    def __contains__(self, job: object) -> bool:
        return job in self._by_job

    def __getitem__(self, job: Job) -> Metrics:
        return self._by_job[job]

    def add(self, job: Job, metrics: Metrics) -> None:
        self._by_job[job] = metrics

    def have(self, requests: Iterable[Request]) -> bool:
        return all(r.job in self._by_job for r in requests)

    def seeds(self, job: Job, n: int) -> list[Metrics]:
        """The metrics of ``job`` at seed indices 0..n-1."""
        return [self._by_job[dataclasses.replace(job, seed_index=i)] for i in range(n)]


@dataclass
class TableContext:
    """What the tables plan and build from: the data, the compare settings, the Table V models,
    a job's resolved config, and the #params counter (Table VII)."""

    fm: FeatureMap
    cc: "CompareConfig"
    models: list[str]
    dataset: str
    config: Callable[[Job], RunConfig]
    param_count_fn: ParamCountFn
    _dims: dict[tuple[str, float], tuple[int, int]] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return self.cc.seeds

    @property
    def n_ablation(self) -> int:
        return self.cc.n_ablation

    def enlarged_dim(self, model: str, target: float) -> tuple[int, int]:
        """Table VII's embedding size of ``model`` for #params ``target`` (computed once)."""
        memo = (model, float(target))
        if memo not in self._dims:
            dim, predicted = enlarged_embed_dim(model, self.fm, self.config(Job(model, 0)), target,
                                                self.param_count_fn, self.cc.max_enlarge)
            log.info("compare [VII]: %s embed_dim %d → %s params (OptInter: %s)", model, dim, fmt_params(predicted),
                     fmt_params(target))
            self._dims[memo] = (dim, predicted)
        return self._dims[memo]


@dataclass
class Figure:
    """A plot a table draws: ``draw(path)`` writes ``file``."""

    caption: str
    file: str
    alt: str
    draw: Callable[[Path], Path]


@dataclass
class TableOutput:
    """What a table builds: ``df`` (CSV), ``md`` (Markdown), ``title``, headline figures for the
    stage's summary, and plots."""

    df: pd.DataFrame
    md: pd.DataFrame
    title: str
    summary: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)


@dataclass(frozen=True)
class Table:
    """One registered table: its name, file stem, the jobs it needs and how it builds itself;
    ``log_metrics``: its rows' mean AUC / log loss go to the tracker as ``<name>.<row>.auc``."""

    name: str
    stem: str
    jobs: Callable[[TableContext, Runs], list[Request]]
    build: Callable[[TableContext, Runs], TableOutput]
    log_metrics: bool = True


#: The registered tables, in output order.
TABLES: dict[str, Table] = {}


def register(table: Table) -> Table:
    """Add ``table`` to :data:`TABLES` (replacing a namesake)."""
    TABLES[table.name] = table
    return table


def default_models() -> list[str]:
    """Every registered model (Table V's default set), in the paper's row order."""
    from .registry import available_models

    return order_models(available_models())


def order_models(models: Iterable[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(dict.fromkeys(models), key=lambda m: (rank.get(m, len(rank)), m))


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


# ---- table building -------------------------------------------------------------------------------
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


# ---- the registered tables -------------------------------------------------------------------------
def _main_jobs(ctx: TableContext, runs: Runs) -> list[Request]:
    """Tables V and VI: every chosen model at every seed."""
    return [r for m in ctx.models for r in seeds(Job(m, 0), ctx.n_seeds, "V")]


def _main_runs(ctx: TableContext, runs: Runs) -> dict[str, list[Metrics]]:
    return {m: runs.seeds(Job(m, 0), ctx.n_seeds) for m in ctx.models}


def _optinter_jobs(ctx: TableContext) -> list[Request]:
    """The OptInter runs the ablations compare against: the first ``n_ablation`` seeds of Table V's."""
    return seeds(Job(OPTINTER, 0), ctx.n_ablation, "V")


def _optinter_runs(ctx: TableContext, runs: Runs) -> list[Metrics]:
    return runs.seeds(Job(OPTINTER, 0), ctx.n_ablation)


def _build_v(ctx: TableContext, runs: Runs) -> TableOutput:
    main = _main_runs(ctx, runs)
    df, md = table_v(main, ctx.cc.alpha)
    summary: dict[str, Any] = {}
    if OPTINTER in main:
        r = df[df["model"] == OPTINTER].iloc[0]
        summary = {"optinter_auc": r["auc_mean"], "optinter_logloss": r["logloss_mean"], "best_baseline": r["vs"],
                   "p_auc": r["p_auc"], "p_logloss": r["p_logloss"]}
    return TableOutput(df, md, "Table V — overall performance (test set; mean ± std over seeds; "
                               "p: two-tailed paired t-test of OptInter vs the best baseline)", summary)


def _build_vi(ctx: TableContext, runs: Runs) -> TableOutput:
    df, md = table_vi(_main_runs(ctx, runs), ctx.fm.num_pairs)
    return TableOutput(df, md, "Table VI — method selection [memorize, factorize, naive] per model (mean over seeds)")


def _enlarged(ctx: TableContext, runs: Runs) -> list[tuple[str, int]]:
    target = summarize(_optinter_runs(ctx, runs))["params"]
    return [(m, ctx.enlarged_dim(m, target)[0]) for m in order_models(ctx.cc.enlarge_models)]


def _enlarged_job(model: str, dim: int) -> Job:
    return Job(model, 0, extra=(f"model.embed_dim={dim}",))


def _jobs_vii(ctx: TableContext, runs: Runs) -> list[Request]:
    need = _optinter_jobs(ctx)
    if not runs.have(need):  # the enlarged sizes follow OptInter's #params: ask for them next round
        return need
    return need + [r for m, dim in _enlarged(ctx, runs) for r in seeds(_enlarged_job(m, dim), ctx.n_ablation, "VII")]


def _build_vii(ctx: TableContext, runs: Runs) -> TableOutput:
    na = ctx.n_ablation
    named: list[tuple[str, Sequence[Mapping[str, Any]], Mapping[str, Any]]] = [
        (m, runs.seeds(_enlarged_job(m, dim), na), {"orig_embed": dim, "cross_embed": 0})
        for m, dim in _enlarged(ctx, runs)]
    ocfg = ctx.config(Job(OPTINTER, 0))
    named.append((OPTINTER, _optinter_runs(ctx, runs),
                  {"orig_embed": ocfg.model.embed_dim, "cross_embed": ocfg.model.cross_embed_dim}))
    df, md = _rows_table(named, OPTINTER, ctx.cc.alpha)
    return TableOutput(df, md, "Table VII — naive / factorized models with the embedding size enlarged to "
                               "OptInter's #params (p: paired t-test of OptInter vs each row)")


_BILEVEL = Job(OPTINTER, 0, extra=("train.bilevel=true",))


def _random_job(k: int) -> Job:
    return Job(OPTINTER, 0, variant="random", arch_seed=k)


def _jobs_viii(ctx: TableContext, runs: Runs) -> list[Request]:
    return (_optinter_jobs(ctx) + seeds(_BILEVEL, ctx.n_ablation, "VIII")
            + [Request(_random_job(k), "VIII") for k in range(ctx.cc.n_random)])


def _build_viii(ctx: TableContext, runs: Runs) -> TableOutput:
    n_pairs = ctx.fm.num_pairs
    opt = _optinter_runs(ctx, runs)
    bil = runs.seeds(_BILEVEL, ctx.n_ablation)
    rnd = [runs[_random_job(k)] for k in range(ctx.cc.n_random)]
    named: list[tuple[str, Sequence[Mapping[str, Any]], Mapping[str, Any]]] = [
        ("random", rnd, {"arch": _fmt_counts(arch_counts(OPTINTER, rnd, n_pairs))}),
        ("bi-level", bil, {"arch": _fmt_counts(arch_counts(OPTINTER, bil, n_pairs))}),
        (OPTINTER, opt, {"arch": _fmt_counts(arch_counts(OPTINTER, opt, n_pairs))})]
    df, md = _rows_table(named, OPTINTER, ctx.cc.alpha)
    df.loc[df["model"] == "random", ["p_auc", "p_logloss"]] = np.nan  # random archs are not paired by seed
    md.loc[md["Model"] == "random", [c for c in md.columns if c.startswith("p vs")]] = "–"
    return TableOutput(df, md, f"Table VIII — search algorithms: OptInter (joint) vs bi-level vs the mean "
                               f"of {ctx.cc.n_random} random architectures")


def _build_ix(ctx: TableContext, runs: Runs) -> TableOutput:
    opt = _optinter_runs(ctx, runs)
    without = [dict(r["search"], params=r["search"].get("params", r.get("params"))) for r in opt if "search" in r]
    if len(without) != len(opt):
        log.warning("compare [IX]: %d of %d OptInter runs report no search-stage metrics; Table IX uses the rest",
                    len(opt) - len(without), len(opt))
    with_rt = [r for r in opt if "search" in r]
    df, md = _rows_table([("with re-train", with_rt, {}), ("without re-train", without, {})], "with re-train",
                         ctx.cc.alpha)
    return TableOutput(df, md, "Table IX — OptInter with vs without the re-train stage")


def _fig4_job(model: str, s2: int) -> Job:
    return Job(model, 0, extra=(f"model.cross_embed_dim={s2}",))


def _jobs_fig4(ctx: TableContext, runs: Runs) -> list[Request]:
    return [r for m in ctx.cc.fig4_models for s2 in ctx.cc.fig4_cross_dims
            for r in seeds(_fig4_job(m, s2), ctx.n_ablation, "fig4")]


def _build_fig4(ctx: TableContext, runs: Runs) -> TableOutput:
    pts = [{"model": m, "cross_embed": s2, **summarize(runs.seeds(_fig4_job(m, s2), ctx.n_ablation))}
           for m in ctx.cc.fig4_models for s2 in ctx.cc.fig4_cross_dims]
    points = pd.DataFrame(pts)
    md = pd.DataFrame({"Model": [f"{m}({s})" for m, s in zip(points["model"], points["cross_embed"])],
                       "AUC": [fmt_mean_std(a, b) for a, b in zip(points["auc_mean"], points["auc_std"])],
                       "Param.": [fmt_params(p) for p in points["params"]],
                       "Seeds": points["n_seeds"]})
    figures = [Figure("Figure 4 — AUC vs #params", "fig4.png", "Figure 4",
                      lambda path: plot_fig4(points, path, ctx.dataset))] if len(points) else []
    return TableOutput(points, md, "Figure 4 — AUC against #params at several memorized embedding sizes",
                       figures=figures)


register(Table("V", "table_V", _main_jobs, _build_v))
register(Table("VI", "table_VI", _main_jobs, _build_vi, log_metrics=False))
register(Table("VII", "table_VII", _jobs_vii, _build_vii))
register(Table("VIII", "table_VIII", _jobs_viii, _build_viii))
register(Table("IX", "table_IX", lambda ctx, runs: _optinter_jobs(ctx), _build_ix))
register(Table("fig4", "fig4", _jobs_fig4, _build_fig4, log_metrics=False))
