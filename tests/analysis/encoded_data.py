"""Tiny encoded datasets (parquet + feature_map.json) written directly, for the analysis tests."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo, fingerprint, pair_column


def write_encoded(root: Path, *, n_rows: int = 3000, cards: tuple[int, ...] = (3, 5, 4, 7), n_files: int = 1,
                  seed: int = 0, row_group_size: int | None = None, signal_pair: tuple[int, int] = (0, 1)
                  ) -> tuple[FeatureMap, pd.DataFrame]:
    """Write ``root/feature_map.json`` and ``root/{train,valid,test}/part-*.parquet``.

    Field ids are 2.. (plus some OOV=1); the label depends on ``signal_pair`` strongly and on
    field 2 weakly. Returns the feature map and the full train frame (for independent checks).
    """
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(len(cards))]
    frames = {}
    for split, n in (("train", n_rows), ("valid", n_rows // 4), ("test", n_rows // 4)):
        cols = {nm: rng.integers(1, c + 2, size=n).astype(np.int32) for nm, c in zip(names, cards)}
        table = rng.normal(0, 1.5, size=(cards[signal_pair[0]] + 2, cards[signal_pair[1]] + 2))
        logit = table[cols[names[signal_pair[0]]], cols[names[signal_pair[1]]]] + 0.3 * (cols[names[2 % len(cards)]] % 2)
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        frames[split] = pd.DataFrame({**cols, "label": y})
    pairs = []
    for a, b in combinations(range(len(cards)), 2):
        col = pair_column(names[a], names[b])
        vb = cards[b] + 2
        keys = {s: f[names[a]].astype(np.int64) * vb + f[names[b]] for s, f in frames.items()}
        kept = np.unique(keys["train"])
        for s, f in frames.items():
            pos = np.searchsorted(kept, keys[s])
            pos = np.minimum(pos, len(kept) - 1)
            found = kept[pos] == keys[s]
            f[col] = np.where(found, pos + 2, 1).astype(np.int32)
        pairs.append(PairSpec(name=col, fields=(names[a], names[b]), column=col, vocab_size=len(kept) + 2,
                              threshold=1, distinct_train=len(kept)))
    fields = [FieldSpec(name=nm, kind="categorical", column=nm, source=nm, vocab_size=c + 2, oov_threshold=1)
              for nm, c in zip(names, cards)]
    splits = {}
    for s, f in frames.items():
        d = root / s
        d.mkdir(parents=True, exist_ok=True)
        bounds = np.linspace(0, len(f), n_files + 1).astype(int)
        for k in range(n_files):
            f.iloc[bounds[k]:bounds[k + 1]].to_parquet(d / f"part-{k:05d}.parquet", index=False,
                                                       row_group_size=row_group_size)
        splits[s] = SplitInfo(rows=len(f), positives=int(f["label"].sum()), path=s)
    fm = FeatureMap(dataset="tiny", label="label", fields=fields, pairs=pairs, splits=splits,
                    content_hash=fingerprint([seed, n_rows, list(cards)]))
    fm.save(root)
    return fm, frames["train"]
