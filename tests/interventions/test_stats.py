"""The paired interval of a verdict: published values, degenerate arms, symmetry, coverage."""

from __future__ import annotations

import itertools
import random

import pytest

from counterfact.interventions import compare, newcombe, newcombe_paired


def _arms(both: int, treatment_only: int, control_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Paired arms with the given 2x2 table, pairs in a shuffled order (pairing, not order, matters)."""
    pairs = (
        [(True, True)] * both
        + [(True, False)] * treatment_only
        + [(False, True)] * control_only
        + [(False, False)] * neither
    )
    random.Random(len(pairs)).shuffle(pairs)
    return [t for t, _ in pairs], [c for _, c in pairs]


def _r4(interval: tuple[float, float]) -> tuple[float, float]:
    return round(interval[0], 4), round(interval[1], 4)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # Newcombe (1998), Stat Med 17:2635, his example a, b, c, d = 36, 12, 2, 0 (AD < BC);
        # limits as the R packages contingencytables and biostatUZH compute his method 10
        ((36, 12, 2, 0), (0.0569, 0.3404)),
        # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8,
        # Cavo et al. (2012), as asserted in contingencytables' tests: AD - BC > N/2, so the
        # paper's N/2 correction of phi applies (without it: -0.1174 to -0.0059)
        ((59, 6, 16, 80), (-0.1186, -0.0046)),
        # the book's other example, Bentur et al. (2009), by contingencytables' code:
        # 0 < AD - BC <= N/2, so phi is 0
        ((1, 1, 7, 12), (-0.5069, -0.0256)),
        # A = D = 0 (phi = -1, every pair discordant), by contingencytables' code
        ((0, 2, 1, 3), (-0.3556, 0.5965)),
    ],
)
def test_paired_interval_matches_published_and_reference_values(
    table: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    assert _r4(newcombe_paired(*table)) == expected
    c = compare(*_arms(*table))
    assert (round(c.ci_low, 4), round(c.ci_high, 4)) == expected
    assert c.interval == "newcombe-paired"


def test_compare_uses_the_paired_not_the_unpaired_interval() -> None:
    # the same rates as independent samples (48/50 vs 38/50) give a different interval
    c = compare(*_arms(36, 12, 2, 0))
    assert (c.treatment_successes, c.control_successes, c.difference) == (48, 38, pytest.approx(0.2))
    assert _r4(newcombe(48, 50, 38, 50)) != (0.0569, 0.3404)
    # positively correlated pairs: the paired interval is the narrower
    same = compare(*_arms(3, 0, 0, 3))
    unpaired_low, unpaired_high = newcombe(3, 6, 3, 6)
    assert unpaired_low < same.ci_low < 0 < same.ci_high < unpaired_high


def test_degenerate_arms() -> None:
    # every pair agrees: difference 0, interval symmetric about it
    agree = compare(*_arms(3, 0, 0, 3))
    assert agree.difference == 0 and _r4((agree.ci_low, agree.ci_high)) == (-0.2551, 0.2551)
    # all successes, all failures: empty margins make phi 0; the half-width is Wilson's upper limit of 0/n
    assert _r4(newcombe_paired(4, 0, 0, 0)) == (-0.4899, 0.4899)
    assert _r4(newcombe_paired(0, 0, 0, 5)) == (-0.4345, 0.4345)
    # n = 1
    assert _r4(newcombe_paired(0, 1, 0, 0)) == (-0.1221, 1.0)
    assert _r4(newcombe_paired(0, 0, 1, 0)) == (-1.0, 0.1221)
    one = compare([True], [True])
    assert (one.n, one.difference, one.p_value) == (1, 0.0, 1.0)
    assert _r4((one.ci_low, one.ci_high)) == (-0.7935, 0.7935)
    # the limit at +-1 is exact, not 1 + a rounding error
    assert compare([True] * 57, [False] * 57).ci_high == 1.0
    assert compare([False] * 60, [True] * 60).ci_low == -1.0


def test_swapping_arms_negates_and_mirrors_the_interval() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 40)
        treatment = [rng.random() < 0.6 for _ in range(n)]
        control = [rng.random() < 0.4 for _ in range(n)]
        forward, backward = compare(treatment, control), compare(control, treatment)
        assert backward.difference == pytest.approx(-forward.difference)
        assert backward.ci_low == pytest.approx(-forward.ci_high, abs=1e-12)
        assert backward.ci_high == pytest.approx(-forward.ci_low, abs=1e-12)


def test_interval_contains_the_observed_difference_and_stays_in_range() -> None:
    for n in range(1, 25):
        for both, t_only, c_only in itertools.product(range(n + 1), repeat=3):
            neither = n - both - t_only - c_only
            if neither < 0:
                continue
            low, high = newcombe_paired(both, t_only, c_only, neither)
            assert -1.0 <= low <= (t_only - c_only) / n <= high <= 1.0, (both, t_only, c_only, neither)


def test_compare_rejects_unpaired_or_empty_arms() -> None:
    with pytest.raises(ValueError, match="paired by seed.*got 3 and 2"):
        compare([True, False, True], [True, False])
    with pytest.raises(ValueError, match="no replays"):
        compare([], [])
