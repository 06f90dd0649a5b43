"""Every baseline (and AutoFIS search → re-train) through the real stage function ``run_train``
on the tiny encoded parquet dataset: outputs, parameter counts, and the reported test AUC
recomputed from ``model.pt`` with pandas + sklearn."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from optinter.architecture import Architecture
from optinter.config import ModelConfig, RunConfig, TrainConfig
from optinter.models.base import Batch
from optinter.registry import build_model
from optinter.stages import run_train
from preprocess.feature_map import FeatureMap

MODELS = ["lr", "poly2", "fm", "fwfm", "fmfm", "fnn", "ipnn", "opnn", "deepfm", "pin", "wide_deep", "autofis"]


def _cfg() -> RunConfig:
    return RunConfig(
        model=ModelConfig(embed_dim=4, mlp_dims=(16, 16), pin_subnet=(8, 2), grda_c=0.01),
        train=TrainConfig(epochs=3, batch_size=250, lr_o=0.01, lr_c=0.01, device="cpu", seed=0),
    )


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    data_dir, _ = tiny_data
    root = tmp_path_factory.mktemp("baselines")
    return {name: (root / name, run_train(data_dir, name, root / name, _cfg())) for name in MODELS}


def _test_batch(data_dir: Path, fmap: FeatureMap) -> Batch:
    df = pd.concat([pd.read_parquet(f) for f in sorted((data_dir / "test").glob("*.parquet"))], ignore_index=True)
    return Batch(
        torch.tensor(df[[f.column for f in fmap.categorical]].to_numpy(), dtype=torch.long),
        torch.tensor(df[[f.column for f in fmap.continuous]].to_numpy(), dtype=torch.float32),
        torch.tensor(df[[p.column for p in fmap.pairs]].to_numpy(), dtype=torch.long),
        torch.tensor(df[fmap.label].to_numpy(), dtype=torch.float32),
    )


@pytest.mark.parametrize("name", MODELS)
def test_run_train_outputs_and_test_auc(name: str, trained, tiny_data) -> None:
    data_dir, _ = tiny_data
    out, metrics = trained[name]
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    fmap = FeatureMap.load(data_dir)
    saved = torch.load(out / "model.pt", weights_only=False)
    arch = Architecture.from_dict(saved["architecture"]) if saved["architecture"] else None
    if name == "autofis":
        assert Architecture.load(out / "architecture.json").model == "autofis"
        assert arch is not None and arch.counts()[0] == 0
        assert metrics["n_factorize"] == arch.counts()[1]
    model = build_model(name, fmap, _cfg().model, arch=arch)
    model.load_state_dict(saved["state_dict"])
    assert metrics["params"] == model.num_params()
    model.eval()
    batch = _test_batch(data_dir, fmap)
    with torch.no_grad():
        scores = model(batch).numpy()
    auc = roc_auc_score(batch.label.numpy(), scores)
    assert metrics["test_auc"] == pytest.approx(auc, abs=1e-6)
    assert auc > 0.6  # main effects alone give LR ≈ 0.74 here


def test_memorized_models_beat_lr_on_the_planted_memorize_pair(trained) -> None:
    # the dataset plants an arbitrary table over c0|c1: only a per-value weight can fit it
    lr = trained["lr"][1]["test_auc"]
    assert trained["poly2"][1]["test_auc"] > lr + 0.03
    assert trained["wide_deep"][1]["test_auc"] > lr + 0.03
