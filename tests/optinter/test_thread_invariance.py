"""Training must not depend on the number of CPU threads: one gradient step of every model, at
realistic batch and field counts, gives bit-identical gradients with 1 and with 2 torch threads.

Jobs run with different thread budgets (one process with every core, or Dask workers with one
thread each) and must give the same metrics. Two kernels broke this and are replaced:
``nn.LayerNorm``'s gain / shift gradients (per-thread partial sums; :mod:`optinter.layers.norm`) and
the accumulating backward of advanced indexing in ``PairGather.pair_major`` (``index_select`` now).
"""

from __future__ import annotations

import pytest
import torch

from optinter.architecture import random_architecture
from optinter.config import ModelConfig
from optinter.layers.norm import LayerNorm
from optinter.models.base import Batch
from optinter.registry import available_models, available_search_models, build_model, build_search_model, needs_architecture
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo

N_CAT, N_CONT, ROWS = 14, 2, 2048


def wide_map() -> FeatureMap:
    """14 categorical + 2 continuous fields, a cross column for every categorical pair (91)."""
    fields = [FieldSpec(f"c{k}", "categorical", f"c{k}", f"c{k}", vocab_size=50 + 13 * k) for k in range(N_CAT)]
    fields += [FieldSpec(f"n{k}", "continuous", f"n{k}", f"n{k}", min=0.0, max=1.0) for k in range(N_CONT)]
    pairs = [PairSpec(f"c{i}|c{j}", (f"c{i}", f"c{j}"), f"c{i}|c{j}", 200, 1)
             for i in range(N_CAT) for j in range(i + 1, N_CAT)]
    return FeatureMap("wide", "label", fields, pairs, {"train": SplitInfo(ROWS, 1, "train")})


def batch(fmap: FeatureMap, read: list[str]) -> Batch:
    """ROWS random rows with the pair columns ``read`` (what the model reads, in that order)."""
    g = torch.Generator().manual_seed(0)
    cat = torch.stack([torch.randint(1, f.vocab_size, (ROWS,), generator=g) for f in fmap.categorical], 1)
    cont = torch.rand(ROWS, len(fmap.continuous), generator=g)
    pairs = torch.stack([torch.randint(1, p.vocab_size, (ROWS,), generator=g) for p in fmap.pairs], 1)
    pos = {p.name: k for k, p in enumerate(fmap.pairs)}
    pairs = pairs[:, [pos[n] for n in read]] if read else pairs[:, :0]
    return Batch(cat, cont, pairs, torch.randint(0, 2, (ROWS,), generator=g).float())


def gradients(build, threads: int) -> dict[str, torch.Tensor]:
    """Every parameter's gradient (dense) after one forward / backward with ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = build()
        model.train()
        b = batch(model.feature_map, model.required_pairs())
        torch.manual_seed(1)  # the same dropout masks in both runs
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b), b.label)
        loss.backward()
        return {n: (p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad.clone())
                for n, p in model.named_parameters() if p.grad is not None}
    finally:
        torch.set_num_threads(before)


def cfg() -> ModelConfig:
    return ModelConfig(embed_dim=8, cross_embed_dim=4, mlp_dims=(256, 128), layer_norm=True, dropout=0.2,
                       pin_subnet=(16, 4))


def _builders() -> list[tuple[str, object]]:
    fmap = wide_map()
    out = []
    for name in available_models():
        arch = None
        if needs_architecture(name):
            arch = random_architecture(fmap, 0, model=name)
            if name == "autofis":  # AutoFIS chooses factorize / naive only
                arch.choices = ["naive" if c == "memorize" else c for c in arch.choices]
        out.append((name, lambda name=name, arch=arch: build_model(name, fmap, cfg(), arch=arch)))
    for name in available_search_models():
        out.append((f"{name}_search", lambda name=name: build_search_model(name, fmap, cfg())))
    return out


@pytest.mark.skipif(torch.get_num_threads() < 2 and (__import__("os").cpu_count() or 1) < 2,
                    reason="needs 2 CPU cores")
@pytest.mark.parametrize("name,build", _builders(), ids=[n for n, _ in _builders()])
def test_gradients_do_not_depend_on_thread_count(name: str, build) -> None:
    one, two = gradients(build, 1), gradients(build, 2)
    assert one.keys() == two.keys() and one
    differ = [n for n in one if not torch.equal(one[n], two[n])]
    assert not differ, f"{name}: gradients differ between 1 and 2 threads: {differ}"


def test_layer_norm_matches_torch_and_is_thread_invariant() -> None:
    torch.manual_seed(0)
    x = torch.randn(ROWS, 300) * 3 + 1
    w = torch.randn(ROWS, 300)
    ref, mine = torch.nn.LayerNorm(300), LayerNorm(300)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    mine.load_state_dict(ref.state_dict())
    assert torch.equal(mine(x), ref(x))  # the forward is bit-identical

    def grads(m: torch.nn.Module, threads: int) -> list[torch.Tensor]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            m.zero_grad()
            xx = x.clone().requires_grad_()
            (m(xx) * w).sum().backward()
            return [xx.grad, m.weight.grad.clone(), m.bias.grad.clone()]
        finally:
            torch.set_num_threads(before)

    g_ref, g1, g2 = grads(ref, 2), grads(mine, 1), grads(mine, 2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    for a, b in zip(g1, g_ref):  # the same gradients as torch's up to summation order
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_autofis_batch_norm_matches_torch() -> None:
    """AutoFIS's gate BN written with column reductions = ``F.batch_norm`` (outputs, running stats)."""
    from optinter.models.autofis import BN_EPS, BN_MOMENTUM, GatedInnerProducts

    torch.manual_seed(0)
    gip = GatedInnerProducts([(0, 1), (0, 2), (1, 2), (2, 3)])
    e = torch.randn(ROWS, 4, 8) * 2 + 0.5
    ip = gip.product(e)
    rm, rv = gip.running_mean.clone(), gip.running_var.clone()
    ref = torch.nn.functional.batch_norm(ip, rm, rv, None, None, True, BN_MOMENTUM, BN_EPS)
    torch.testing.assert_close(gip.normalized(e), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gip.running_mean, rm, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gip.running_var, rv, rtol=1e-6, atol=1e-7)
    gip.eval()
    ref_eval = torch.nn.functional.batch_norm(ip, rm, rv, None, None, False, BN_MOMENTUM, BN_EPS)
    torch.testing.assert_close(gip.normalized(e), ref_eval, rtol=1e-5, atol=1e-5)
