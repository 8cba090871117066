"""The paired sign test of a verdict against exact binomial p-values other than 1.0.

`sign_test(better, worse)` is the one-sided exact test that `better` of the `better + worse`
differing pairs favour the treatment by chance; `compare` feeds it the discordant pairs only
(pairs where both arms succeeded or both failed say nothing about the edit). The expected
values come from scipy's binomtest, computed here, and a few from the binomial by hand.
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from counterfact.interventions import compare
from counterfact.interventions._stats import sign_test


def _exact(better: int, worse: int) -> float:
    return float(binomtest(better, better + worse, 0.5, alternative="greater").pvalue)


def _by_hand(better: int, worse: int) -> float:
    """P(X >= better) for X ~ Binomial(better + worse, 1/2)."""
    n = better + worse
    return sum(math.comb(n, k) for k in range(better, n + 1)) / 2**n


@pytest.mark.parametrize(
    ("better", "worse"),
    [(1, 0), (3, 0), (5, 1), (6, 0), (4, 2), (7, 3), (9, 1), (1, 5), (2, 8), (10, 10), (12, 3)],
)
def test_sign_test_is_the_one_sided_exact_binomial(better: int, worse: int) -> None:
    expected = _exact(better, worse)
    assert expected != 1.0  # p-values other than the trivial one
    assert sign_test(better, worse) == pytest.approx(expected, rel=1e-12)
    assert sign_test(better, worse) == pytest.approx(_by_hand(better, worse), rel=1e-12)


def test_sign_test_known_values_and_direction() -> None:
    assert sign_test(6, 0) == pytest.approx(1 / 64)
    assert sign_test(5, 1) == pytest.approx(7 / 64)
    assert sign_test(1, 5) == pytest.approx(63 / 64)  # one-sided: the treatment doing worse is not evidence
    assert sign_test(3, 3) == pytest.approx(42 / 64)
    assert sign_test(0, 0) == 1.0


def test_compare_tests_the_discordant_pairs_only() -> None:
    # 10 pairs: 3 both succeed, 5 treatment only, 1 control only, 1 neither
    treatment = [True] * 3 + [True] * 5 + [False] + [False]
    control = [True] * 3 + [False] * 5 + [True] + [False]
    c = compare(treatment, control)
    assert (c.treatment_only, c.control_only) == (5, 1)
    assert c.p_value == pytest.approx(_exact(5, 1)) == pytest.approx(7 / 64)
    # concordant pairs do not move the p-value
    more = compare(treatment + [True] * 4 + [False] * 4, control + [True] * 4 + [False] * 4)
    assert more.p_value == pytest.approx(c.p_value)
    # swapping the arms: the one-sided test looks the other way
    assert compare(control, treatment).p_value == pytest.approx(_exact(1, 5))
