import numpy as np
import pytest
from scipy.stats import ttest_rel

from optinter.stats import fmt_mean_std, fmt_params, mean_std, paired_ttest


@pytest.mark.parametrize("n,seed", [(2, 0), (3, 1), (5, 2), (10, 3), (30, 4)])
def test_paired_ttest_matches_scipy(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.80, 0.002, n)
    b = a - rng.normal(0.001, 0.002, n)
    t, p = paired_ttest(a, b)
    ref = ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8)


@pytest.mark.filterwarnings("ignore:Precision loss")
def test_paired_ttest_edge_cases():
    assert all(np.isnan(paired_ttest([0.5], [0.4])))
    assert all(np.isnan(paired_ttest([0.5, 0.6], [0.5, 0.6])))
    t, p = paired_ttest([1.5, 2.5], [1.0, 2.0])  # constant nonzero difference (exact in binary)
    ref = ttest_rel([1.5, 2.5], [1.0, 2.0])
    assert np.isinf(t) and p == 0.0
    assert np.sign(t) == np.sign(ref.statistic)
    with pytest.raises(ValueError, match="equal length"):
        paired_ttest([1, 2, 3], [1, 2])


def test_mean_std_and_formatting():
    m, s = mean_std([0.1, 0.2, 0.3])
    assert m == pytest.approx(0.2) and s == pytest.approx(np.std([0.1, 0.2, 0.3], ddof=1))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert fmt_mean_std(0.81014, 0.00031) == "0.8101 ± 0.0003"
    assert fmt_params(225e6) == "225M" and fmt_params(5.1e5) == "0.51M" and fmt_params(1234) == "1.2K"
