"""A deterministic fake trainer for the compare tables (no torch): metrics from (model, config, seed)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from optinter.config import RunConfig
from optinter.experiments import Job

BASE_AUC = {"lr": 0.700, "fm": 0.720, "fnn": 0.730, "deepfm": 0.735, "optinter_m": 0.750, "optinter": 0.760}
N_PAIRS = 6


def fake_params(model: str, embed_dim: int, cross_dim: int) -> int:
    """Quadratic in embed_dim (like OPNN); memorizing models add cross embeddings."""
    p = 50 * embed_dim * embed_dim + 1000 * embed_dim + 7
    if model == "optinter":
        p += 3 * 40 * cross_dim
    if model == "optinter_m":
        p += N_PAIRS * 40 * cross_dim
    return int(p)


class FakeTrainer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, job: Job, data_dir: Path, job_dir: Path, cfg: RunConfig, tracker: Any) -> dict[str, Any]:
        assert job_dir.is_dir()
        self.calls.append((job.label, cfg.train.seed))
        rng = np.random.default_rng([zlib.crc32(job.model.encode()), cfg.train.seed, job.arch_seed or 0,
                                     cfg.model.embed_dim, cfg.model.cross_embed_dim, int(cfg.train.bilevel)])
        auc = BASE_AUC.get(job.model, 0.71) + rng.normal(0, 0.003) + 0.0005 * np.log(cfg.model.cross_embed_dim)
        if job.variant == "random":
            auc -= 0.01
        if cfg.train.bilevel:
            auc -= 0.004
        m: dict[str, Any] = {"model": job.model, "test_auc": float(auc), "test_logloss": float(0.9 - auc),
                             "valid_auc": float(auc), "valid_logloss": float(0.9 - auc),
                             "params": fake_params(job.model, cfg.model.embed_dim, cfg.model.cross_embed_dim)}
        (job_dir / "model.pt").write_bytes(b"weights")
        if job.model == "optinter":
            c = rng.multinomial(N_PAIRS, [0.4, 0.3, 0.3])
            m.update({"n_memorize": int(c[0]), "n_factorize": int(c[1]), "n_naive": int(c[2])})
            if job.variant == "train":
                m["search"] = {"test_auc": float(auc - 0.02 + rng.normal(0, 0.002)), "test_logloss": float(0.95 - auc)}
        return m
