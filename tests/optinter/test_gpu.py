"""CUDA path (skipped without a GPU): the same stages run on the device, with and without bf16
autocast, and give metrics close to the CPU run's."""

from __future__ import annotations

import pytest
import torch

from optinter.config import RunConfig, apply_overrides
from optinter.stages import run_retrain, run_search, run_train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMALL = ["model.embed_dim=8", "model.cross_embed_dim=8", "model.mlp_dims=32", "train.batch_size=256",
         "train.epochs=3", "train.lr_o=3e-3", "train.lr_c=3e-3", "train.lr_a=0.05"]


def _cfg(device: str, *extra: str) -> RunConfig:
    return apply_overrides(RunConfig(), SMALL + [f"train.device={device}", *extra])


def test_search_and_retrain_on_cuda_match_cpu(tiny_data, tmp_path):
    data, _ = tiny_data
    out = {}
    for dev in ("cpu", "cuda"):
        s = run_search(data, tmp_path / f"search-{dev}", _cfg(dev))
        r = run_retrain(data, tmp_path / f"search-{dev}" / "architecture.json", tmp_path / f"retrain-{dev}", _cfg(dev))
        out[dev] = (s, r)
    for dev, (s, r) in out.items():
        assert 0.5 < r["test_auc"] <= 1.0 and r["samples_per_s"] > 0, dev
    # not bit-identical (different kernels), but the same model quality
    assert abs(out["cuda"][1]["test_auc"] - out["cpu"][1]["test_auc"]) < 0.03


@pytest.mark.parametrize("model", ["deepfm", "optinter_m"])
def test_bf16_autocast_trains(tiny_data, tmp_path, model):
    data, _ = tiny_data
    m = run_train(data, model, tmp_path / model, _cfg("cuda", "train.amp=true"))
    assert 0.5 < m["test_auc"] <= 1.0
    assert m["test_logloss"] == m["test_logloss"]  # not NaN
