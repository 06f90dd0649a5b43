from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from optinter.metrics import auc, log_loss


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for n in (10, 1000, 20000):
        y = (rng.random(n) < 0.3).astype(np.float32)
        s = np.round(rng.random(n) + 0.3 * y, 2)  # rounding makes many ties
        assert math.isclose(auc(y, s), roc_auc_score(y, s), rel_tol=1e-12, abs_tol=1e-12)


def test_auc_single_class_is_nan():
    assert math.isnan(auc(np.ones(5), np.arange(5)))


def test_log_loss_matches_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.2).astype(np.float32)
    p = np.clip(rng.beta(2, 5, 5000), 1e-4, 1 - 1e-4)
    assert math.isclose(log_loss(y, p), sk_log_loss(y, p), rel_tol=1e-9)
