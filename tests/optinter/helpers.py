"""A tiny encoded dataset written directly as parquet + feature_map.json (no preprocessing stage).

Fields: ``c0..c{Fc-1}`` categorical, ``n0..`` continuous; every pair of categorical fields is a
cross column ``"ci|cj"`` with dense ids 2.. (no OOV). The label follows a logistic model with
main effects, one or more *memorize* pairs (an arbitrary table over the pair's values), a
*factorize* pair (a low-rank dot product) and no interaction for the other pairs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo, pair_column


def make_encoded_dataset(
    out: str | Path,
    rows: tuple[int, int, int] = (4000, 1000, 1000),
    vocab: tuple[int, ...] = (8, 10, 12, 6, 9),
    n_cont: int = 2,
    memorize: tuple[tuple[int, int], ...] = ((0, 1),),
    factorize: tuple[tuple[int, int], ...] = ((2, 3),),
    strength: float = 2.0,
    seed: int = 0,
    row_group_size: int = 700,
    files: int = 2,
) -> dict[str, Any]:
    """Write ``out/{train,valid,test}/part-*.parquet`` and ``out/feature_map.json``; return truth."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    fc = len(vocab)
    n_total = sum(rows)
    # raw values 0..v-1 (Zipf-ish), encoded ids 2..v+1
    raw = np.stack([rng.choice(v, size=n_total, p=_zipf(v)) for v in vocab], axis=1)
    cont = rng.random((n_total, n_cont)).astype(np.float32)
    logit = -0.5 + sum(rng.normal(0, 0.5, v)[raw[:, k]] for k, v in enumerate(vocab))
    logit = logit + (cont @ rng.normal(0, 0.5, n_cont) if n_cont else 0.0)
    kinds = {}
    for a, b in itertools.combinations(range(fc), 2):
        kinds[(a, b)] = "naive"
    for a, b in memorize:
        table = rng.normal(0, strength, (vocab[a], vocab[b]))
        logit = logit + table[raw[:, a], raw[:, b]]
        kinds[(a, b)] = "memorize"
    for a, b in factorize:
        ua, ub = rng.normal(0, 1, (vocab[a], 2)), rng.normal(0, 1, (vocab[b], 2))
        logit = logit + strength * 0.5 * (ua[raw[:, a]] * ub[raw[:, b]]).sum(1)
        kinds[(a, b)] = "factorize"
    p_true = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n_total) < p_true).astype(np.float32)

    cat_ids = (raw + 2).astype(np.int32)
    fields = [FieldSpec(name=f"c{k}", kind="categorical", column=f"c{k}", source=f"c{k}", vocab_size=v + 2)
              for k, v in enumerate(vocab)]
    fields += [FieldSpec(name=f"n{k}", kind="continuous", column=f"n{k}", source=f"n{k}", min=0.0, max=1.0)
               for k in range(n_cont)]
    cols: dict[str, np.ndarray] = {f"c{k}": cat_ids[:, k] for k in range(fc)}
    cols.update({f"n{k}": cont[:, k] for k in range(n_cont)})
    pairs = []
    for a, b in itertools.combinations(range(fc), 2):
        key = cat_ids[:, a].astype(np.int64) * (vocab[b] + 2) + cat_ids[:, b]
        train_keys = np.unique(key[: rows[0]])
        ids = np.searchsorted(train_keys, key) + 2
        seen = np.isin(key, train_keys)
        ids = np.where(seen, ids, 1).astype(np.int32)
        name = pair_column(f"c{a}", f"c{b}")
        cols[name] = ids
        pairs.append(PairSpec(name=name, fields=(f"c{a}", f"c{b}"), column=name,
                              vocab_size=len(train_keys) + 2, threshold=1))
    cols["label"] = label
    bounds = np.cumsum((0,) + tuple(rows))
    splits = {}
    for s, name in enumerate(("train", "valid", "test")):
        lo, hi = bounds[s], bounds[s + 1]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        edges = np.linspace(lo, hi, files + 1).astype(int)
        for f in range(files):
            table = pa.table({k: v[edges[f]: edges[f + 1]] for k, v in cols.items()})
            pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=row_group_size)
        splits[name] = SplitInfo(rows=int(hi - lo), positives=int(label[lo:hi].sum()), path=name)
    fmap = FeatureMap(dataset="tiny", label="label", fields=fields, pairs=pairs, splits=splits,
                      content_hash=f"tiny-{seed}")
    fmap.save(out)
    truth = {f"c{a}|c{b}": k for (a, b), k in kinds.items()}
    return {"pairs": truth, "p_true": p_true, "label": label, "bounds": bounds}


def _zipf(v: int) -> np.ndarray:
    w = 1.0 / np.arange(1, v + 1) ** 0.8
    return w / w.sum()
