"""End to end on synthetic data with planted pairs, on five generator seeds, with the defaults
derived from the data and nothing tuned per seed (preprocess.synthetic → preprocess.pipeline →
search → re-train, and on one seed the baselines).

Data: the generator's defaults — 8 categorical fields (cardinalities 6..16, 30, 40) + 2 continuous,
28 pairs: 4 planted *memorize* pairs (full-rank tables on low-cardinality fields), 1 *factorize*
pair (rank 3) and 23 pairs with no interaction; 200k train / 20k valid / 20k test rows. Each seed
draws other planted tables, first-order weights and rows.

What is asserted on every seed, and why these thresholds:

* search recovery (Algorithm 1 with the data-derived search settings: ~600 steps, Θ at a
  constant 3e-3, τ 3 → 0.3, lr_a = 60 / steps, the first-order term started from a fitted LR,
  then the searched pairs pruned on the validation split, see :mod:`optinter.prune`) — at least
  3 of the 4 memorize pairs memorized (a uniformly random architecture does that with
  probability 0.11) and at least 16 of the 23 no-interaction pairs naive with at most 2 of them
  memorized (random: P(≥16 naive) ≈ 0.0004); the search ends decided. The one factorize pair
  (1,200 cells, ~170 train rows each) is not asserted: at this size memorizing it is as good as
  factorizing. Measured: 4/4 and 23/23 on every seed (without the pruning: 9–22 of 23 naive);
* the re-trained OptInter is within 0.005 of the Bayes-optimal test AUC computed from the true
  click probabilities.

On the first seed the re-trained OptInter also beats LR, FM and DeepFM, and is no more than 0.001
(the seed noise) below FNN, IPNN and OptInter-F, which end as close to the Bayes AUC.
"""

from __future__ import annotations

import json

import pytest

from optinter.architecture import Architecture
from optinter.config import apply_overrides, default_config
from optinter.stages import load_feature_map, run_retrain, run_search, run_train

pytestmark = pytest.mark.slow

SEEDS = (2026, 7, 11, 42, 123)
#: beaten outright; and the deep models that also model pairs, which OptInter must at least tie
#: (all of them end within ~0.004 of the Bayes AUC here, where 0.001 is the seed-to-seed noise)
BEATEN = ("lr", "fm", "deepfm")
TIED = ("fnn", "ipnn", "optinter_f")
TIE = 0.001
CPU = ["train.device=cpu"]


def _make(root, seed: int):
    from preprocess.pipeline import PreprocessConfig, run_preprocess
    from preprocess.synthetic import SynthConfig, generate

    generate(SynthConfig(seed=seed), root / "raw")
    run_preprocess(PreprocessConfig(dataset="synthetic", train=[str(root / "raw" / "train.csv")],
                                    valid=[str(root / "raw" / "valid.csv")], test=[str(root / "raw" / "test.csv")],
                                    out=str(root / "enc"), processes=False))
    return json.loads((root / "raw" / "truth.json").read_text())


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def searched(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"synth{request.param}")
    truth = _make(root, request.param)
    fmap = load_feature_map(root / "enc")
    metrics = run_search(root / "enc", root / "search", apply_overrides(default_config(fmap, "optinter"), CPU))
    return request.param, root, truth, metrics


def _counts(root, truth) -> tuple[int, int, int]:
    arch = Architecture.load(root / "search" / "architecture.json")
    planted = truth["pairs"]
    mem = [p for p, k in planted.items() if k == "memorize"]
    none = [p for p, k in planted.items() if k == "naive"]
    assert len(mem) == 4 and len(none) == 23
    return (sum(arch.choice(p) == "memorize" for p in mem), sum(arch.choice(p) == "naive" for p in none),
            sum(arch.choice(p) == "memorize" for p in none))


def test_search_memorizes_the_planted_memorize_pairs(searched):
    seed, root, truth, metrics = searched
    mem_hit, _, _ = _counts(root, truth)
    assert mem_hit >= 3, f"seed {seed}: memorize pairs recovered {mem_hit}/4"
    assert metrics["search_decided"], f"seed {seed}: search undecided ({metrics['search_clear_share']:.2f} clear)"


def test_search_leaves_no_interaction_pairs_naive(searched):
    seed, root, truth, _ = searched
    _, naive_hit, naive_mem = _counts(root, truth)
    assert naive_hit >= 16 and naive_mem <= 2, f"seed {seed}: no-interaction pairs {naive_hit}/23 naive, {naive_mem} memorized"


def test_retrain_is_near_bayes(searched):
    seed, root, truth, _ = searched
    fmap = load_feature_map(root / "enc")
    opt = run_retrain(root / "enc", root / "search" / "architecture.json", root / "retrain",
                      apply_overrides(default_config(fmap, "optinter"), CPU))
    bayes = truth["bayes"]["test"]["auc"]
    (root / "retrain_auc.txt").write_text(str(opt["test_auc"]))
    assert opt["test_auc"] >= bayes - 0.005, f"seed {seed}: OptInter {opt['test_auc']:.4f} vs Bayes {bayes:.4f}"


def test_retrained_optinter_beats_the_baselines(searched):
    seed, root, truth, _ = searched
    if seed != SEEDS[0]:
        pytest.skip("baselines are compared on the first seed only")
    fmap = load_feature_map(root / "enc")
    auc_file = root / "retrain_auc.txt"
    if auc_file.exists():
        opt_auc = float(auc_file.read_text())
    else:
        opt_auc = run_retrain(root / "enc", root / "search" / "architecture.json", root / "retrain",
                              apply_overrides(default_config(fmap, "optinter"), CPU))["test_auc"]
    for name in BEATEN + TIED:
        base = run_train(root / "enc", name, root / name, apply_overrides(default_config(fmap, name), CPU))
        margin = 0.0 if name in BEATEN else -TIE
        assert opt_auc > base["test_auc"] + margin, f"OptInter {opt_auc:.4f} vs {name} {base['test_auc']:.4f}"
