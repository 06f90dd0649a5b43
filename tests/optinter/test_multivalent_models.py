"""Multivalent fields from the model side: the loader's padded B × Fm × L ids, mean pooling in
FieldEmbedding / FieldBias (numbers, gradients), every model, and schema → preprocess → train end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from optinter.architecture import Architecture
from optinter.config import ModelConfig, RunConfig, apply_overrides
from optinter.data import ParquetBatches, check_split_schema
from optinter.layers.embedding import FieldBias, FieldEmbedding
from optinter.layers.interactions import embedding_order
from optinter.models.base import Batch
from optinter.registry import (available_models, available_search_models, build_model, build_search_model,
                               needs_architecture)
from optinter.stages import run_train
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo

SMALL = ["model.embed_dim=4", "model.cross_embed_dim=3", "model.mlp_dims=16", "train.batch_size=250",
         "train.epochs=2", "train.search_epochs=1", "train.lr_o=3e-3", "train.lr_c=3e-3", "train.lr_a=3e-3",
         "train.device=cpu", "train.max_steps_per_epoch=6"]
TAGS = [f"t{k}" for k in range(12)]


# ---- a raw file with a planted multivalent effect, preprocessed by the real stage ----------------------
def _write_split(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w_tag = np.linspace(-1.5, 1.5, len(TAGS))
    lines = ["click\ta\ttags\tb\tc\tprice"]
    for _ in range(n):
        k = int(rng.integers(0, 6))
        tags = list(rng.choice(len(TAGS), size=k, replace=False))
        a, b, c = int(rng.integers(0, 5)), int(rng.integers(0, 4)), int(rng.integers(0, 3))
        logit = (float(np.mean(w_tag[tags])) * 2 if tags else 0.0) + 0.4 * (a - 2) + 0.3 * (b == c)
        y = int(rng.random() < 1 / (1 + math.exp(-logit)))
        lines.append(f"{y}\ta{a}\t{','.join(TAGS[t] for t in tags)}\tb{b}\tc{c}\t{rng.normal(5, 2):.2f}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    from preprocess.pipeline import PreprocessConfig, run_preprocess

    d = tmp_path_factory.mktemp("multi_e2e")
    for s, n, seed in (("train", 2000, 1), ("valid", 500, 2), ("test", 500, 3)):
        _write_split(d / f"{s}.tsv", n, seed)
    (d / "schema.yaml").write_text("name: tagged\nlabel: click\nsep: \"\\t\"\ncategorical: [a, b, c]\n"
                                   "continuous: [price]\nmultivalent: {tags: ','}\noov_threshold: 2\n"
                                   "cross_threshold: 1\n")
    out = d / "data"
    run_preprocess(PreprocessConfig(dataset=str(d / "schema.yaml"), out=str(out), train=[str(d / "train.tsv")],
                                    valid=[str(d / "valid.tsv")], test=[str(d / "test.tsv")], n_workers=1,
                                    threads_per_worker=2, processes=False))
    return out


def _padded(lists: list[list[int]], width: int) -> np.ndarray:
    """Pure-Python padding (the reference for the loader)."""
    out = np.zeros((len(lists), width), dtype=np.int64)
    for i, ids in enumerate(lists):
        for j, v in enumerate(ids):
            out[i, j] = v
    return out


def test_loader_gives_padded_lists(encoded) -> None:
    fm = FeatureMap.load(encoded)
    tags = fm.field("tags")
    assert tags.multivalent and [f.name for f in fm.multivalent] == ["tags"] and tags.max_len == 5
    assert [f.name for f in fm.categorical] == ["a", "b", "c"] and [p.name for p in fm.pairs] == ["a|b", "a|c", "b|c"]
    assert embedding_order(fm) == ["a", "b", "c", "tags", "price"]
    assert check_split_schema(encoded, fm, "valid") == fm.splits["valid"].rows
    table = pq.read_table(encoded / "valid")
    dl = ParquetBatches(encoded, fm, "valid", batch_size=128, chunk_rows=100, prefetch=0)
    batches = list(dl)
    assert all(b.multi.shape == (len(b), 1, tags.max_len) and b.multi.dtype == torch.int64 for b in batches)
    multi = torch.cat([b.multi for b in batches]).numpy()
    np.testing.assert_array_equal(multi[:, 0, :], _padded(table["tags"].to_pylist(), tags.max_len))
    np.testing.assert_array_equal(torch.cat([b.cat for b in batches]).numpy(),
                                  np.stack([table[c].to_numpy() for c in ("a", "b", "c")], 1))
    # shuffled: the same rows, each row's list still with its own ids
    shuffled = ParquetBatches(encoded, fm, "valid", batch_size=128, shuffle=True, seed=3, shuffle_buffer=300,
                              chunk_rows=100, prefetch=0)

    def rows(bs: list[Batch]) -> list[tuple[int, ...]]:
        return sorted(tuple(r) for b in bs for r in torch.cat([b.cat, b.multi.flatten(1)], 1).tolist())

    sb = list(shuffled)
    assert rows(sb) == rows(batches) and not torch.equal(sb[0].multi, batches[0].multi)


def _two_field_map(tmp_path: Path, lists_a: list, lists_b: list, vocab=(6, 9), max_len=(2, 4)) -> FeatureMap:
    n = len(lists_a)
    fields = [FieldSpec("u", "categorical", "u", "u", vocab_size=3),
              FieldSpec("ma", "categorical", "ma", "ma", vocab_size=vocab[0], multivalent=True, max_len=max_len[0]),
              FieldSpec("mb", "categorical", "mb", "mb", vocab_size=vocab[1], multivalent=True, max_len=max_len[1])]
    (tmp_path / "train").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"u": pa.array(np.full(n, 2, np.int32)), "ma": pa.array(lists_a, pa.list_(pa.int32())),
                             "mb": pa.array(lists_b, pa.list_(pa.int32())),
                             "label": pa.array(np.zeros(n, np.float32))}),
                   tmp_path / "train" / "part-00000.parquet", row_group_size=3)
    fm = FeatureMap("two", "label", fields, [], {"train": SplitInfo(n, 0, "train")})
    fm.save(tmp_path)
    return fm


def test_loader_several_fields_and_errors(tmp_path) -> None:
    a = [[2, 3], [], [5], [1, 4], [], [2]]
    b = [[8, 2, 3, 4], [1], [], [7, 7], [2, 3, 4], []]
    fm = _two_field_map(tmp_path, a, b)
    check_split_schema(tmp_path, fm, "train")
    got = torch.cat([x.multi for x in ParquetBatches(tmp_path, fm, "train", batch_size=4, prefetch=0)]).numpy()
    assert got.shape == (6, 2, 4)  # L = the largest max_len
    np.testing.assert_array_equal(got[:, 0], _padded(a, 4))
    np.testing.assert_array_equal(got[:, 1], _padded(b, 4))
    # a sliced record batch (list offsets not starting at 0) is padded from its own rows only
    rb = pq.read_table(tmp_path / "train").to_batches()[0].slice(1, 2)
    dl = ParquetBatches(tmp_path, fm, "train", batch_size=4, prefetch=0)
    got = dl._pad_lists(rb, tmp_path)
    np.testing.assert_array_equal(got[:, 0], _padded(a[1:3], 4))
    np.testing.assert_array_equal(got[:, 1], _padded(b[1:3], 4))
    with pytest.raises(ValueError, match="'mb'.*max_len"):
        list(ParquetBatches(tmp_path / "x", _two_field_map(tmp_path / "x", a, b, max_len=(2, 3)), "train", 4,
                            prefetch=0))
    with pytest.raises(ValueError, match="'ma' has ids outside"):
        list(ParquetBatches(tmp_path / "y", _two_field_map(tmp_path / "y", a, b, vocab=(5, 9)), "train", 4,
                            prefetch=0))
    # an int column where the feature map says multivalent is refused by the schema check
    (tmp_path / "z" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"u": pa.array([2], pa.int32()), "ma": pa.array([2], pa.int32()),
                             "mb": pa.array([[2]], pa.list_(pa.int32())), "label": pa.array([0.0], pa.float32())}),
                   tmp_path / "z" / "train" / "part-00000.parquet")
    with pytest.raises(ValueError, match="column 'ma' has type int32, expected list<int>"):
        check_split_schema(tmp_path / "z", fm, "train")


def test_batches_without_multivalent_fields(tiny_data) -> None:
    data_dir, _ = tiny_data
    fm = FeatureMap.load(data_dir)
    b = next(iter(ParquetBatches(data_dir, fm, "valid", batch_size=64, prefetch=0)))
    assert fm.multivalent == [] and b.multi.shape == (64, 0, 0) and b.multi.dtype == torch.int64
    plain = Batch(b.cat, b.cont, b.pairs, b.label)  # positional construction without multi still works
    assert plain.multi.shape == (64, 0, 0)
    moved = Batch(b.cat, b.cont, b.pairs, b.label, torch.ones(64, 2, 3, dtype=torch.long)).to("cpu")
    assert torch.equal(moved.multi, torch.ones(64, 2, 3, dtype=torch.long))


# ---- pooling: numbers and gradients ----------------------------------------------------------------
CAT, MULTI, N_CONT, D = [4, 5], [6, 3], 2, 3


def _ids() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cat = torch.tensor([[1, 2], [3, 4], [2, 1]])
    multi = torch.tensor([[[2, 5, 0], [1, 0, 0]],
                          [[0, 0, 0], [2, 2, 1]],   # an all-PAD list; a repeated id
                          [[3, 0, 0], [0, 0, 0]]])
    cont = torch.tensor([[0.5, 1.0], [0.0, 0.25], [1.0, 0.75]])
    return cat, multi, cont


def _manual(weight: torch.Tensor, cat: torch.Tensor, multi: torch.Tensor, vec: torch.Tensor | None,
            cont: torch.Tensor) -> torch.Tensor:
    """e^o by loops: categorical rows, mean of the non-PAD rows (0 if none), value × vector."""
    offs = [0]
    for v in CAT + MULTI:
        offs.append(offs[-1] + v)
    rows = []
    for b in range(cat.shape[0]):
        fields = [weight[offs[i] + int(cat[b, i])] for i in range(len(CAT))]
        for m in range(len(MULTI)):
            ids = [int(t) for t in multi[b, m] if int(t) != 0]
            base = offs[len(CAT) + m]
            fields.append(torch.stack([weight[base + t] for t in ids]).mean(0) if ids
                          else torch.zeros(weight.shape[1]))
        if vec is not None:
            fields += [cont[b, j] * vec[j] for j in range(cont.shape[1])]
        rows.append(torch.stack(fields))
    return torch.stack(rows)


def test_field_embedding_mean_pooling_and_gradients() -> None:
    torch.manual_seed(0)
    emb = FieldEmbedding(CAT, N_CONT, D, multi_vocab_sizes=MULTI)
    with torch.no_grad():
        emb.cat.table.weight.normal_()  # PAD rows non-zero too: the mask alone must keep them out
    cat, multi, cont = _ids()
    out = emb(cat, cont, multi)
    assert out.shape == (3, len(CAT) + len(MULTI) + N_CONT, D) and emb.num_fields == 6
    exp = _manual(emb.cat.table.weight.detach(), cat, multi, emb.cont.detach(), cont)
    torch.testing.assert_close(out, exp)
    assert torch.all(out[1, len(CAT)] == 0) and torch.all(out[2, len(CAT) + 1] == 0)  # all-PAD → 0
    (out * torch.randn_like(out)).sum().backward()
    grad_rows = set(torch.nonzero(emb.cat.table.weight.grad.abs().sum(1)).flatten().tolist())
    offs = np.cumsum([0] + CAT + MULTI)
    looked_up = {int(offs[i] + cat[b, i]) for b in range(3) for i in range(len(CAT))}
    looked_up |= {int(offs[len(CAT) + m] + t) for b in range(3) for m in range(len(MULTI))
                  for t in multi[b, m].tolist() if t != 0}
    assert grad_rows == looked_up
    with pytest.raises(ValueError, match="B × 2 × L"):
        emb(cat, cont)


def test_field_bias_mean_pools_weights() -> None:
    torch.manual_seed(1)
    fb = FieldBias(CAT, N_CONT, multi_vocab_sizes=MULTI)
    with torch.no_grad():
        fb.cat.table.weight.normal_()
        fb.cont.normal_()
        fb.bias.fill_(0.3)
    cat, multi, cont = _ids()
    exp = _manual(fb.cat.table.weight.detach(), cat, multi, None, cont).sum(dim=(1, 2)) + cont @ fb.cont.detach() + 0.3
    torch.testing.assert_close(fb(cat, cont, multi), exp)


def test_mean_pooled_first_order_learns_a_token_effect() -> None:
    """LR on one multivalent field reaches the Bayes AUC of a planted per-token effect."""
    g = torch.Generator().manual_seed(0)
    n, vocab, length = 4000, 10, 4
    ids = torch.randint(2, vocab, (n, 1, length), generator=g)
    ids[torch.rand(n, 1, length, generator=g) < 0.4] = 0  # variable lengths (PAD after is not required)
    w = torch.linspace(-2, 2, vocab)
    mask = (ids != 0).float()
    p_true = torch.sigmoid((w[ids] * mask).sum(-1).squeeze(1) / mask.sum(-1).squeeze(1).clamp_min(1))
    y = (torch.rand(n, generator=g) < p_true).float()
    fb = FieldBias([], 0, multi_vocab_sizes=[vocab])
    opt = torch.optim.Adam(fb.parameters(), lr=0.1)
    empty = torch.zeros(n, 0, dtype=torch.long)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(fb(empty, torch.zeros(n, 0), ids), y).backward()
        opt.step()
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), fb(empty, torch.zeros(n, 0), ids).numpy())
    assert auc > roc_auc_score(y.numpy(), p_true.numpy()) - 0.01


# ---- every model ---------------------------------------------------------------------------------------
def _multi_map() -> FeatureMap:
    fields = [FieldSpec("a", "categorical", "a", "a", vocab_size=4),
              FieldSpec("t", "categorical", "t", "t", vocab_size=7, multivalent=True, max_len=3),
              FieldSpec("n0", "continuous", "n0", "n0", min=0.0, max=1.0),
              FieldSpec("b", "categorical", "b", "b", vocab_size=5)]
    return FeatureMap("m", "label", fields, [PairSpec("a|b", ("a", "b"), "a|b", 9, 1)],
                      {"train": SplitInfo(10, 3, "train")})


@pytest.mark.parametrize("name", available_models() + [f"{m}_search" for m in available_search_models()])
def test_every_model_embeds_the_multivalent_field(name) -> None:
    fm = _multi_map()
    cfg = ModelConfig(embed_dim=3, cross_embed_dim=2, mlp_dims=(8,), pin_subnet=(4,), first_order=True)
    torch.manual_seed(0)
    if name.endswith("_search"):
        model = build_search_model(name[: -len("_search")], fm, cfg)
    elif needs_architecture(name):
        model = build_model(name, fm, cfg, arch=Architecture.uniform(fm, "factorize", model=name))
    else:
        model = build_model(name, fm, cfg)
    g = torch.Generator().manual_seed(0)
    n = 8
    batch = Batch(torch.stack([torch.randint(1, 4, (n,), generator=g), torch.randint(1, 5, (n,), generator=g)], 1),
                  torch.rand(n, 1, generator=g), torch.randint(1, 9, (n, len(model.required_pairs())), generator=g),
                  torch.randint(0, 2, (n,), generator=g).float(), torch.randint(0, 7, (n, 1, 3), generator=g))
    out = model(batch)
    assert out.shape == (n,) and torch.isfinite(out).all()
    out.sum().backward()
    # the tokens' rows (slot after the 2 categorical fields: offset 4 + 5) get gradients from some table
    tables = [m for m in model.modules() if isinstance(m, FieldEmbedding | FieldBias)]
    assert tables
    used = sorted({9 + t for t in batch.multi.flatten().tolist() if t != 0})
    for m in tables:
        grad = m.cat.table.weight.grad
        assert grad is not None and grad[used].abs().sum() > 0 and grad[9].abs().sum() == 0  # 9 = the PAD row


# ---- schema → preprocess → train, end to end ------------------------------------------------------------
@pytest.mark.parametrize("model", ["lr", "deepfm", "optinter"])
def test_run_train_with_a_multivalent_field(encoded, tmp_path, model) -> None:
    m = run_train(encoded, model, tmp_path / model, apply_overrides(RunConfig(), SMALL))
    for k in ("valid_auc", "valid_logloss", "test_auc", "test_logloss"):
        assert math.isfinite(m[k]), k
    assert 0.0 <= m["test_auc"] <= 1.0 and m["params"] > 0
    fm = FeatureMap.load(encoded)
    if model == "lr":  # Σ vocab of the categorical and multivalent fields, one per continuous field, bias
        assert m["params"] == sum(f.vocab_size for f in fm.categorical + fm.multivalent) + len(fm.continuous) + 1
    if model == "optinter":  # searched, then re-trained
        assert m["n_memorize"] + m["n_factorize"] + m["n_naive"] == len(fm.pairs) == 3
        assert (tmp_path / model / "architecture.json").exists()


def test_analyze_and_report_with_a_multivalent_field(encoded, tmp_path) -> None:
    """Mutual information covers the univalent fields and the pairs; the data summary names the multivalent field."""
    from optinter.analysis import run_analyze
    from optinter.report import data_summary_rows

    r = run_analyze(encoded, tmp_path / "an")
    assert r["n_pairs"] == 3 and r["n_fields"] == 3
    rows = {x["item"]: x["value"] for x in data_summary_rows(encoded)}
    fm = FeatureMap.load(encoded)
    assert rows["multivalent fields (mean-pooled)"] == f"tags (max_len {fm.field('tags').max_len})"
    assert rows["original feature values (Σ vocab)"] == sum(f.vocab_size for f in fm.categorical + fm.multivalent)
