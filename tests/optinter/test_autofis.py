"""AutoFIS: the GRDA optimizer against hand computations, the gated model, search → re-train."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import torch

from optinter.architecture import Architecture
from optinter.config import ModelConfig, RunConfig, TrainConfig
from optinter.models.autofis import AutoFISNet, AutoFISSearch
from optinter.models.base import Batch
from optinter.optim import GRDA
from optinter.registry import available_search_models, build_model, build_search_model
from optinter.train import make_optimizers
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo

CAT_VOCAB = [4, 5, 3]
PAIR_VOCAB = {"a|b": 6, "a|c": 7, "b|c": 8}
D = 3
MLP = (8, 4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_map() -> FeatureMap:
    fields = [
        FieldSpec("n0", "continuous", "n0", "n0", min=0.0, max=1.0),
        FieldSpec("a", "categorical", "a", "a", vocab_size=CAT_VOCAB[0]),
        FieldSpec("b", "categorical", "b", "b", vocab_size=CAT_VOCAB[1]),
        FieldSpec("c", "categorical", "c", "c", vocab_size=CAT_VOCAB[2]),
    ]
    pairs = [PairSpec(k, tuple(k.split("|")), k, v, 1) for k, v in PAIR_VOCAB.items()]
    return FeatureMap("tiny", "label", fields, pairs, {"train": SplitInfo(10, 3, "train")})


def tiny_cfg() -> ModelConfig:
    return ModelConfig(embed_dim=D, mlp_dims=MLP, grda_c=0.01, grda_mu=0.7)


def tiny_batch(fmap: FeatureMap, n: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(1, f.vocab_size, (n,), generator=g) for f in fmap.categorical], 1)
    cont = torch.rand(n, len(fmap.continuous), generator=g)
    return Batch(cat, cont, torch.zeros(n, 0, dtype=torch.long), torch.randint(0, 2, (n,), generator=g).float())


# ---- GRDA ------------------------------------------------------------------------------------------
def test_grda_matches_hand_computed_steps() -> None:
    lr, c, mu = 0.1, 0.1, 0.6
    w0 = np.array([0.5, -0.2, 0.01, 0.3])
    grads = [np.array([0.4, -1.0, 0.0, -0.2]), np.array([-0.3, 0.5, 0.0, -0.1]), np.array([0.2, 0.2, 0.0, 0.1])]
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = GRDA([w], lr=lr, c=c, mu=mu)
    for n, g in enumerate(grads, start=1):
        w.grad = torch.tensor(g)
        opt.step()
        acc = w0 - lr * np.sum(grads[:n], axis=0)
        thresh = c * np.sqrt(lr) * (n * lr) ** mu  # c γ^{1/2} (nγ)^μ
        expected = np.sign(acc) * np.maximum(np.abs(acc) - thresh, 0.0)
        np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-15)
    # the third weight (no gradient, |w0| = 0.01 below the threshold) is exactly zero
    assert w[2].item() == 0.0 and w[0].item() != 0.0


def test_grda_first_step_by_hand() -> None:
    # w0 = 1, g = 2, γ = 0.25, c = 0.5, μ = 0.5: a = 1 − 0.5 = 0.5, ℓ = 0.5 · 0.25^1 · 1 = 0.125 → 0.375
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = GRDA([w], lr=0.25, c=0.5, mu=0.5)
    w.grad = torch.tensor([2.0, 2.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.375, -1.375]))


def test_grda_state_dict_resumes_identically() -> None:
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=g) for _ in range(6)]
    w_a = torch.nn.Parameter(torch.linspace(-0.5, 0.5, 5))
    opt_a = GRDA([w_a], lr=0.05, c=0.2, mu=0.7)
    for gr in grads:
        w_a.grad = gr.clone()
        opt_a.step()
    w_b = torch.nn.Parameter(torch.linspace(-0.5, 0.5, 5))
    opt_b = GRDA([w_b], lr=0.05, c=0.2, mu=0.7)
    for gr in grads[:3]:
        w_b.grad = gr.clone()
        opt_b.step()
    state = opt_b.state_dict()
    w_c = torch.nn.Parameter(w_b.detach().clone())
    opt_c = GRDA([w_c], lr=0.05, c=0.2, mu=0.7)
    opt_c.load_state_dict(state)
    for gr in grads[3:]:
        w_c.grad = gr.clone()
        opt_c.step()
    torch.testing.assert_close(w_c.detach(), w_a.detach())


@pytest.mark.parametrize("kw", [{"lr": 0.0}, {"c": -1.0}, {"mu": 1.0}])
def test_grda_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="GRDA"):
        GRDA([torch.nn.Parameter(torch.zeros(1))], **kw)


# ---- model -----------------------------------------------------------------------------------------
def test_autofis_is_registered_as_search_and_retrain_model() -> None:
    assert "autofis" in available_search_models()
    with pytest.raises(ValueError, match="needs an architecture"):
        build_model("autofis", tiny_map(), tiny_cfg())


def test_search_model_shapes_gradients_and_groups() -> None:
    torch.manual_seed(0)
    fmap = tiny_map()
    model = build_search_model("autofis", fmap, tiny_cfg())
    assert isinstance(model, AutoFISSearch) and model.is_search_model
    batch = tiny_batch(fmap)
    logits = model(batch)
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    groups = model.named_param_groups()
    assert groups["arch"] == [model.gates.alpha]
    assert model.gates.alpha.numel() == len(PAIR_VOCAB)
    assert {id(p) for p in groups["orig"]} | {id(model.gates.alpha)} == {id(p) for p in model.parameters()}
    opts = make_optimizers(model, TrainConfig())
    assert isinstance(opts["arch"], GRDA)
    assert opts["arch"].defaults == {"lr": 1.0, "c": 0.01, "mu": 0.7}
    assert not model.uses_pairs


def test_gated_term_against_numpy() -> None:
    torch.manual_seed(0)
    fmap = tiny_map()
    model = build_search_model("autofis", fmap, tiny_cfg()).double()
    with torch.no_grad():
        model.gates.alpha.copy_(torch.tensor([0.7, -0.4, 1.3], dtype=torch.float64))
    batch = tiny_batch(fmap, n=12, seed=4)
    batch = Batch(batch.cat, batch.cont.double(), batch.pairs, batch.label)
    e = model.embedding(batch.cat, batch.cont).detach().numpy()  # categoricals a, b, c then n0
    ip = np.stack([(e[:, i] * e[:, j]).sum(1) for i, j in [(0, 1), (0, 2), (1, 2)]], 1)
    alpha = model.gates.alpha.detach().numpy()
    model.train()
    bn = (ip - ip.mean(0)) / np.sqrt(ip.var(0) + 1e-3)
    np.testing.assert_allclose(model.gates(torch.from_numpy(e)).detach().numpy(), bn @ alpha, rtol=1e-9)
    # running statistics moved by momentum 0.01 from (0, 1), with the unbiased variance
    np.testing.assert_allclose(model.gates.running_mean.numpy(), 0.01 * ip.mean(0), rtol=1e-9)
    np.testing.assert_allclose(model.gates.running_var.numpy(), 0.99 + 0.01 * ip.var(0, ddof=1), rtol=1e-9)
    model.eval()
    rm, rv = model.gates.running_mean.numpy(), model.gates.running_var.numpy()
    np.testing.assert_allclose(
        model.gates(torch.from_numpy(e)).detach().numpy(), ((ip - rm) / np.sqrt(rv + 1e-3)) @ alpha, rtol=1e-9
    )
    # a one-row training batch falls back to the running statistics instead of failing
    model.train()
    one = model.gates(torch.from_numpy(e[:1]))
    assert one.shape == (1,) and torch.isfinite(one).all()


def test_derive_architecture_and_retrain_model() -> None:
    torch.manual_seed(0)
    fmap = tiny_map()
    search = build_search_model("autofis", fmap, tiny_cfg())
    with torch.no_grad():
        search.gates.alpha.copy_(torch.tensor([0.5, 0.0, -0.2]))
    arch = search.derive_architecture()
    assert arch.model == "autofis"
    assert arch.pairs == list(PAIR_VOCAB)
    assert arch.choices == ["factorize", "naive", "factorize"]
    assert arch.meta["alpha"] == pytest.approx([0.5, 0.0, -0.2])
    assert search.extra_metrics() == {"n_memorize": 0, "n_factorize": 2, "n_naive": 1}
    arch = Architecture.from_dict(arch.to_dict())  # survives architecture.json

    net = build_model("autofis", fmap, tiny_cfg(), arch=arch)
    assert isinstance(net, AutoFISNet) and not net.is_search_model
    assert net.gates.num_pairs == 2 and net.gated == [0, 2]
    assert "arch" not in net.named_param_groups()
    lin = sum(CAT_VOCAB) + 1 + 1
    emb = (sum(CAT_VOCAB) + 1) * D
    f_d = (len(CAT_VOCAB) + 1) * D
    mlp = f_d * MLP[0] + 3 * MLP[0] + MLP[0] * MLP[1] + 3 * MLP[1] + MLP[1] + 1
    assert net.num_params() == lin + emb + 2 + mlp  # 2 gates: the kept pairs only
    assert search.num_params() == lin + emb + 3 + mlp
    batch = tiny_batch(fmap)
    out = net(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out, batch.label).backward()
    assert net.gates.alpha.grad is not None and net.gates.alpha.grad.abs().sum() > 0
    assert net.extra_metrics()["n_factorize"] == 2


def test_retrain_rejects_foreign_architectures() -> None:
    fmap = tiny_map()
    with pytest.raises(ValueError, match="memorize"):
        build_model("autofis", fmap, tiny_cfg(), arch=Architecture.uniform(fmap, "memorize"))
    other = Architecture(pairs=["a|b", "a|c"], choices=["factorize", "naive"], model="autofis")
    with pytest.raises(ValueError, match="does not match"):
        build_model("autofis", fmap, tiny_cfg(), arch=other)
    no_pairs = tiny_map()
    no_pairs.pairs = []
    with pytest.raises(ValueError, match="pairs"):
        build_search_model("autofis", no_pairs, tiny_cfg())


# ---- search → re-train on a planted interaction -----------------------------------------------------
V = 12


def _planted(n: int, seed: int) -> Batch:
    """Four fields; the logit is 2·s_a·s_b (balanced signs) + main effects of c and d:
    only the pair a|b interacts."""
    rng = np.random.default_rng(seed)
    sign = np.zeros((2, V))
    for k, r in enumerate(np.random.default_rng(99).spawn(2)):
        sign[k, 2:] = r.permutation([-1.0, 1.0] * 5)
    main = np.random.default_rng(98).normal(0, 0.5, size=(2, V))
    ids = rng.integers(2, V, size=(n, 4))
    logit = 2.0 * sign[0, ids[:, 0]] * sign[1, ids[:, 1]] + main[0, ids[:, 2]] + main[1, ids[:, 3]]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return Batch(torch.from_numpy(ids), torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.long), torch.from_numpy(y))


def _chunks(b: Batch, size: int) -> list[Batch]:
    return [Batch(b.cat[s : s + size], b.cont[s : s + size], b.pairs[s : s + size], b.label[s : s + size])
            for s in range(0, len(b), size)]


def test_search_keeps_the_planted_pair_and_prunes_the_rest() -> None:
    """Over three seeds: the interacting pair a|b keeps the largest gate in at least two (GRDA can
    prune it when the MLP absorbs the interaction first: seen for 1 of 6 seeds), and at least 60%
    of the gates of the five non-interacting pairs end at exactly 0 (13 of 15 seen)."""
    from optinter.search import search
    from optinter.train import fit

    fields = [FieldSpec(c, "categorical", c, c, vocab_size=V) for c in "abcd"]
    pairs = [PairSpec(f"{x}|{y}", (x, y), f"{x}|{y}", V * V, 1) for i, x in enumerate("abcd") for y in "abcd"[i + 1 :]]
    full = _planted(8000, 1)
    # the train split's real row and click counts: models start from its log-odds
    fmap = FeatureMap("planted", "label", fields, pairs,
                      {"train": SplitInfo(len(full), int(full.label.sum()), "train")})
    # GRDA threshold after n steps (γ = 1): c·n^μ = 0.01 · 120^0.8 ≈ 0.46 at the end of the search
    cfg = RunConfig(
        model=ModelConfig(embed_dim=4, mlp_dims=(16,), grda_c=0.01, grda_mu=0.8),
        train=TrainConfig(epochs=2, search_epochs=3, lr_o=0.01, device="cpu", checkpoint=False),
    )
    train, valid = _chunks(full, 200), _chunks(_planted(2000, 2), 1000)
    kept_planted, noise_pruned, archs = 0, 0, []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_search_model("autofis", fmap, cfg.model)
        arch, _ = search(model, train, valid, cfg)
        gates = model.gate_values()
        assert arch.counts()[0] == 0
        if arch.choice("a|b") == "factorize" and max(gates, key=lambda k: abs(gates[k])) == "a|b":
            kept_planted += 1
            archs.append(arch)
        noise_pruned += sum(arch.choice(p) == "naive" for p in gates if p != "a|b")
    assert kept_planted >= 2, kept_planted
    assert noise_pruned >= 9, noise_pruned

    torch.manual_seed(0)
    net = build_model("autofis", fmap, cfg.model, arch=archs[0])
    out = fit(net, train, valid, cfg)
    assert net.gates.num_pairs == archs[0].counts()[1]
    assert out.best_valid_auc > 0.85  # Bayes AUC of this validation set: 0.907


def test_retrain_with_every_gate_pruned_is_deepfm_without_fm() -> None:
    torch.manual_seed(0)
    fmap = tiny_map()
    net = build_model("autofis", fmap, tiny_cfg(), arch=Architecture.uniform(fmap, "naive", model="autofis"))
    assert net.gates.num_pairs == 0 and net.gates.alpha.numel() == 0
    batch = tiny_batch(fmap)
    e = net.embedding(batch.cat, batch.cont)
    expected = net.linear(batch.cat, batch.cont) + net.mlp(e.flatten(1))
    torch.testing.assert_close(net(batch), expected)
