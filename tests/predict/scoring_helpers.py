"""Shared pieces of the scoring tests (a unique module name: the test folders share sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BASELINES = ("lr", "fm", "deepfm")
MODELS = ("optinter",) + BASELINES


@dataclass
class Model:
    name: str
    dir: Path
    run_id: str
    metrics: dict


@dataclass
class Trained:
    root: Path
    tracking_uri: str
    data_dir: Path
    raw_dir: Path
    parent_run_id: str
    models: dict[str, Model]

    @property
    def test_csv(self) -> Path:
        return self.raw_dir / "test.csv"

    def test_frame(self) -> pd.DataFrame:
        return pd.read_csv(self.test_csv)

    def labels(self) -> np.ndarray:
        return pd.read_csv(self.test_csv)["label"].to_numpy()


def assert_reproduces(y: np.ndarray, p: np.ndarray, metrics: dict, tol: float = 1e-6) -> None:
    """Test AUC and log loss of ``p`` (sklearn) equal the run's ``metrics.json`` to ``tol``."""
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.asarray(p, dtype=np.float64)
    assert p.shape == y.shape and np.isfinite(p).all()
    assert abs(roc_auc_score(y, p) - metrics["test_auc"]) <= tol
    assert abs(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)) - metrics["test_logloss"]) <= tol
