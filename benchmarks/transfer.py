"""Do the defaults transfer? Every dataset we have, every model with its data-derived defaults.

    python benchmarks/transfer.py [--work /tmp/transfer] [--datasets all | criteo_sample,avazu_head,...]
                                  [--models sklearn_lr,lr,deepfm,optinter_f,optinter] [--seeds 1]
                                  [--threads 2] [--set key=value ...]

For each dataset (the shipped Criteo sample and its head / misc files, the Avazu head, synthetic
variants that differ in what matters: click rate, number of fields, rows, generator seed) it
encodes the data with the dataset's schema defaults (``preprocess.pipeline.run_preprocess``) and
trains every model with ``optinter.config.default_config(feature_map, model)`` — nothing is chosen
per dataset — through ``optinter.stages.run_train``: early stopping and model selection on the
validation split, one look at the test split. ``sklearn_lr`` is the reference: scikit-learn's
``LogisticRegression`` on the one-hot encoding of the same encoded ids (continuous fields as
values), C picked on the validation AUC.

It prints a JSON line per (dataset, model, seed) and then a Markdown table: test AUC and log loss
(mean ± std over seeds), and for OptInter how decided its search was (share of pairs whose
searched probability is clear, see ``optinter.architecture.Architecture.decision``) and the
architecture counts [m, f, n]. Results are cached in ``<work>/results.jsonl`` (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/preprocess.py shadows preprocess

REPO = Path(_HERE).parent
SHARED = REPO / ".." / "shared" / "data"
MODELS = ("sklearn_lr", "lr", "deepfm", "optinter_f", "optinter")
C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


@dataclass
class Dataset:
    """How to build one encoded dataset: a schema and raw / pre-split files, or a synthetic config."""

    name: str
    schema: str = "synthetic"
    raw: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)
    synth: dict[str, Any] | None = None
    note: str = ""

    def available(self) -> bool:
        return self.synth is not None or all(Path(p).exists() for p in [*self.raw, *self.splits.values()])


def _criteo(name: str, *files: str, note: str) -> Dataset:
    return Dataset(name, "criteo", raw=[str(SHARED / "criteo" / f) for f in files], note=note)


def datasets() -> list[Dataset]:
    split = SHARED / "criteo" / "split"
    wide = tuple(6 + (i * 7) % 35 for i in range(30))  # 30 fields, cardinalities 6..40, 435 pairs
    return [
        Dataset("criteo_sample", "criteo", splits={s: str(split / f"{s}.tsv.gz") for s in ("train", "valid", "test")},
                note="Criteo DAC random sample, 110k train rows, 325 pairs"),
        _criteo("criteo_head", "criteo_dac_head_of_train.tsv", note="first 10k rows of DAC (day 1), split 8:1:1"),
        _criteo("criteo_misc", "criteo_dac_misc_small_samples.tsv", note="4.7k random DAC rows, split 8:1:1"),
        Dataset("avazu_head", "avazu", raw=[str(SHARED / "avazu" / "avazu_head_of_train.csv")],
                note="first hour of Avazu, 7.5k rows, split 8:1:1"),
        Dataset("synth", synth={}, note="generator defaults: 8 fields, 200k rows, CTR 0.22, seed 2026"),
        Dataset("synth_seed7", synth={"seed": 7}, note="another generator seed"),
        Dataset("synth_seed11", synth={"seed": 11}, note="another generator seed"),
        Dataset("synth_ctr1", synth={"target_ctr": 0.01, "n_train": 400_000}, note="1% click rate, 400k rows"),
        Dataset("synth_f30", synth={"cardinalities": wide, "n_train": 200_000,
                                    "memorize_pairs": ((0, 1), (2, 3), (4, 5), (0, 5), (10, 15)),
                                    "factorize_pairs": ((6, 7), (20, 25))}, note="30 fields, 435 pairs"),
        Dataset("synth_10k", synth={"n_train": 10_000, "n_valid": 5_000, "n_test": 5_000}, note="10k train rows"),
        Dataset("synth_1m", synth={"n_train": 1_000_000, "n_valid": 50_000, "n_test": 50_000}, note="1M train rows"),
    ]


def encode(ds: Dataset, work: Path) -> Path:
    """``<work>/<name>/enc`` (built once)."""
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    out = work / ds.name / "enc"
    if (out / "feature_map.json").exists():
        return out
    kw: dict[str, Any] = {}
    if ds.synth is not None:
        from preprocess.synthetic import SynthConfig, generate

        raw = work / ds.name / "raw"
        if not (raw / "truth.json").exists():
            generate(SynthConfig(**ds.synth), raw)
        kw = {s: [str(raw / f"{s}.csv")] for s in ("train", "valid", "test")}
    elif ds.splits:
        kw = {s: [p] for s, p in ds.splits.items()}
    else:
        kw = {"raw": ds.raw}
    run_preprocess(PreprocessConfig(dataset=ds.schema, out=str(out), **kw))
    return out


# ---- the scikit-learn reference -------------------------------------------------------------------
def _one_hot(data: Path, split: str) -> tuple[Any, Any]:
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from optinter.data import split_files
    from preprocess.feature_map import FeatureMap

    fmap = FeatureMap.load(data)
    tables = [pq.read_table(f) for f in split_files(data, fmap, split)]
    import pyarrow as pa

    tab = pa.concat_tables(tables)
    y = tab.column(fmap.label).to_numpy().astype(np.float64)
    n = len(y)
    cols, offset = [], 0
    for f in fmap.categorical:
        ids = tab.column(f.column).to_numpy().astype(np.int64)
        cols.append(ids + offset)
        offset += int(f.vocab_size)
    rows = np.repeat(np.arange(n), len(cols))
    ind = np.stack(cols, 1).ravel() if cols else np.zeros(0, np.int64)
    x = sp.csr_matrix((np.ones(len(ind)), (rows, ind)), shape=(n, offset))
    cont = [tab.column(f.column).to_numpy().astype(np.float64) for f in fmap.continuous]
    if cont:
        x = sp.hstack([x, sp.csr_matrix(np.stack(cont, 1))], format="csr")
    return x, y


def sklearn_lr(data: Path, seed: int) -> dict[str, Any]:
    """scikit-learn ``LogisticRegression`` on one-hot ids, C picked on the validation AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score

    xs = {s: _one_hot(data, s) for s in ("train", "valid", "test")}
    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        m = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(*xs["train"])
        v = roc_auc_score(xs["valid"][1], m.predict_proba(xs["valid"][0])[:, 1])
        if best is None or v > best[0]:
            best = (v, c, m)
    assert best is not None
    v, c, m = best
    p = m.predict_proba(xs["test"][0])[:, 1]
    return {"valid_auc": v, "test_auc": roc_auc_score(xs["test"][1], p), "test_logloss": log_loss(xs["test"][1], p),
            "C": c, "params": int(m.coef_.size + 1)}


def recovery(arch: Any, truth_file: Path) -> dict[str, Any]:
    """Planted-pair recovery of a searched architecture against the generator's ``truth.json``."""
    truth = json.loads(truth_file.read_text())
    kinds = truth["pairs"]
    mem = [p for p, k in kinds.items() if k == "memorize"]
    none = [p for p, k in kinds.items() if k == "naive"]
    return {"memorize_recall": sum(arch.choice(p) == "memorize" for p in mem) / max(len(mem), 1),
            "naive_share": sum(arch.choice(p) == "naive" for p in none) / max(len(none), 1),
            "naive_memorized": sum(arch.choice(p) == "memorize" for p in none),
            "bayes_test_auc": truth["bayes"]["test"]["auc"]}


def train_model(data: Path, name: str, seed: int, out: Path, overrides: list[str]) -> dict[str, Any]:
    from optinter.config import apply_overrides, default_config
    from optinter.stages import load_feature_map, run_train

    cfg = apply_overrides(default_config(load_feature_map(data), name), [*overrides, f"train.seed={2026 + seed}"])
    m = run_train(data, name, out, cfg)
    arch_file = out / "architecture.json"
    if arch_file.exists():
        from optinter.architecture import Architecture

        arch = Architecture.load(arch_file)
        m["decision"] = arch.decision()
        truth = data.parent / "raw" / "truth.json"
        if truth.exists():
            m["recovery"] = recovery(arch, truth)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/transfer")
    ap.add_argument("--datasets", default="all")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--tag", default="", help="a label stored with the results (separates variants in the cache)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache_file = work / "results.jsonl"
    cache: dict[str, dict[str, Any]] = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            r = json.loads(line)
            cache[r["key"]] = r
    wanted = [d.strip() for d in args.datasets.split(",")] if args.datasets != "all" else None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows: list[dict[str, Any]] = []
    for ds in datasets():
        if wanted is not None and ds.name not in wanted:
            continue
        if not ds.available():
            print(f"# {ds.name}: data not found, skipped", flush=True)
            continue
        data = encode(ds, work)
        for name in models:
            for seed in range(args.seeds if name != "sklearn_lr" else 1):
                key = json.dumps([ds.name, name, seed, args.tag, args.overrides])
                if key not in cache:
                    t0 = time.perf_counter()
                    run: Callable[[], dict[str, Any]] = (
                        (lambda: sklearn_lr(data, seed)) if name == "sklearn_lr" else
                        (lambda: train_model(data, name, seed, work / ds.name / args.tag / f"{name}-{seed}", args.overrides)))
                    m = run()
                    keep = {k: m[k] for k in ("valid_auc", "test_auc", "test_logloss", "params", "C", "best_epoch",
                                              "n_memorize", "n_factorize", "n_naive", "decision", "recovery") if k in m}
                    r = {"key": key, "dataset": ds.name, "model": name, "seed": seed, "tag": args.tag,
                         "seconds": round(time.perf_counter() - t0, 1), **keep}
                    with cache_file.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    cache[key] = r
                r = cache[key]
                rows.append(r)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "key"}),
                      flush=True)
    print(table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per dataset, test AUC (± std over seeds) per model, OptInter's decision."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["model"]), []).append(r)
    models = list(dict.fromkeys(r["model"] for r in rows))
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    head = "| dataset | " + " | ".join(models) + " | OptInter decided | [m, f, n] |"
    out = [head, "|" + "---|" * (len(models) + 3)]

    def cell(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return ""
        a = [r["test_auc"] for r in rs]
        ll = statistics.mean(r["test_logloss"] for r in rs)
        sd = f" ± {statistics.stdev(a):.4f}" if len(a) > 1 else ""
        return f"{statistics.mean(a):.4f}{sd} ({ll:.4f})"

    for d in names:
        opt = by.get((d, "optinter"), [])
        dec = ", ".join(f"{r['decision']['clear_share']:.2f}" for r in opt if "decision" in r)
        arch = ", ".join(f"[{r['n_memorize']}, {r['n_factorize']}, {r['n_naive']}]" for r in opt if "n_memorize" in r)
        out.append(f"| {d} | " + " | ".join(cell(by.get((d, m), [])) for m in models) + f" | {dec} | {arch} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
