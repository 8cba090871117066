"""The paired interval of a verdict: published values, degenerate arms, symmetry, coverage."""

from __future__ import annotations

import itertools
import random

import pytest

from counterfact.interventions import compare, newcombe, newcombe_paired, wilson


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


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # Newcombe (1998), Stat Med 17:873, Table II, method 10, his examples (a), (b), (d), (e), (f)
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0)),
    ],
)
def test_unpaired_interval_matches_published_values(samples: tuple[int, int, int, int], expected: tuple[float, float]) -> None:
    assert _r4(newcombe(*samples)) == expected
    s1, n1, s2, n2 = samples
    low, high = newcombe(s2, n2, s1, n1)  # the other way round: negated and mirrored
    assert (round(-high, 4), round(-low, 4)) == expected


def test_intervals_stay_within_their_range_where_rounding_would_cross_it() -> None:
    """In exact arithmetic the limits cannot leave [0, 1] (or [-1, 1]); in floats they do by one
    ulp for some n (16/16, 0/21, 25 against 25): the clamp keeps them there."""
    assert wilson(0, 0) == (0.0, 1.0)  # no trial: nothing known
    assert wilson(16, 16)[1] == 1.0 and wilson(0, 21)[0] == 0.0
    assert newcombe(0, 25, 25, 25)[0] == -1.0 and newcombe(25, 25, 0, 25)[1] == 1.0


def test_the_paired_interval_uses_the_given_z_for_both_rates() -> None:
    """At another confidence level (z = 2.5758, 99 %) the interval is wider, and still mirrored
    when the arms are swapped: both margins' Wilson limits take that z, not one of them."""
    z99 = 2.5758293035489004
    table = (5, 4, 1, 2)
    low, high = newcombe_paired(*table, z=z99)
    back_low, back_high = newcombe_paired(5, 1, 4, 2, z=z99)
    assert (back_low, back_high) == (pytest.approx(-high, abs=1e-12), pytest.approx(-low, abs=1e-12))
    wide = newcombe_paired(*table)
    assert low < wide[0] and wide[1] < high
    assert _r4((low, high)) == _r4(_paired_by_hand(*table, z=z99))


def _paired_by_hand(both: int, first_only: int, second_only: int, neither: int, z: float) -> tuple[float, float]:
    """Newcombe's method 10 for paired proportions, written out from the paper's formulas with
    the Wilson limits solved as the roots of the score equation, for a check at any z."""
    n = both + first_only + second_only + neither

    def limits(s: int) -> tuple[float, float]:
        p = s / n
        a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
        root = (b * b - 4 * a * c) ** 0.5
        return (-b - root) / (2 * a), (-b + root) / (2 * a)

    p1, p2 = (both + first_only) / n, (both + second_only) / n
    (l1, u1), (l2, u2) = limits(both + first_only), limits(both + second_only)
    cross = both * neither - first_only * second_only
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = cross / margins**0.5 if margins else 0.0
    d = p1 - p2
    low = d - ((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2) ** 0.5
    high = d + ((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2) ** 0.5
    return max(-1.0, low), min(1.0, high)


def test_compare_reports_both_rates_and_the_discordant_pairs() -> None:
    c = compare(*_arms(1, 2, 1, 4))
    assert (c.n, c.treatment_successes, c.control_successes) == (8, 3, 2)
    assert (c.treatment_rate, c.control_rate, c.difference) == (0.375, 0.25, 0.125)
    assert (c.treatment_only, c.control_only) == (2, 1)
    assert c.p_value == 0.5  # P(X >= 2) for X ~ Binomial(3, 1/2)


def test_compare_errors_say_what_was_wrong_in_full() -> None:
    with pytest.raises(ValueError) as unequal:
        compare([True, False, True], [True, False])
    assert str(unequal.value) == "treatment and control are paired by seed and must have equal lengths, got 3 and 2"
    with pytest.raises(ValueError) as empty:
        compare([], [])
    assert str(empty.value) == "no replays to compare"
