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


@pytest.mark.parametrize("model", ["deepfm", "optinter_m", "optinter"])
def test_bf16_autocast_trains(tiny_data, tmp_path, model):
    data, _ = tiny_data
    m = run_train(data, model, tmp_path / model, _cfg("cuda", "train.amp=true"))
    assert 0.5 < m["test_auc"] <= 1.0
    assert m["test_logloss"] == m["test_logloss"]  # not NaN


def test_fused_pair_ops_on_cuda_match_cpu():
    """The fused mixing op and the Hadamard products (one chunk on CUDA, cache-sized chunks on
    CPU) give the same values and gradients on both devices, and LazyAdam moves the same rows."""
    from optinter.layers.combination import CombinationBlock
    from optinter.layers.cross import HadamardPairs
    from optinter.train import LazyAdam

    torch.manual_seed(0)
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    had = HadamardPairs(pairs)
    block = CombinationBlock(len(pairs), 4, 8, "softmax", tau=0.5).eval()
    emb = torch.randn(512, 14, 8)
    e_m = torch.randn(512, len(pairs), 4)
    prefix = torch.randn(512, 5)
    g = torch.randn(512, 5 + len(pairs) * 8)
    res = {}
    for dev in ("cpu", "cuda"):
        blk, hp = block.to(dev), had.to(dev)
        x, m, pre = (t.to(dev).requires_grad_(True) for t in (emb, e_m, prefix))
        out = blk.forward_factorized(m, x, hp.left, hp.right, prefix=pre)
        grads = torch.autograd.grad((out * g.to(dev)).sum(), [x, m, pre, blk.alpha])
        h = hp(x)
        res[dev] = [out.detach().cpu(), h.detach().cpu()] + [t.cpu() for t in grads]
    for a, b in zip(res["cpu"], res["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    emb_tables = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(1)
        table = torch.nn.Embedding(100, 4, sparse=True).to(dev)
        opt = LazyAdam([{"params": [table.weight], "lr": 0.1, "weight_decay": 0.01}])
        ids = torch.randint(0, 50, (64, 3), generator=torch.Generator().manual_seed(2)).to(dev)
        for _ in range(3):
            opt.zero_grad()
            table(ids).pow(2).sum().backward()
            opt.step()
        emb_tables[dev] = table.weight.detach().cpu()
    torch.testing.assert_close(emb_tables["cpu"], emb_tables["cuda"], rtol=1e-4, atol=1e-5)
