"""The statistics of a verdict: two success rates, their difference, its interval, a p-value.

Treatment and control replays are paired by seed (common random numbers), so both the test and
the interval are the paired ones. The exact test is McNemar's on the discordant pairs: a
one-sided binomial test of "treatment-only successes" against "control-only successes". The
interval for the difference of the two rates is Newcombe's paired score interval (from Wilson
intervals of the two rates, less their correlation), which behaves at the small n and the 0/n
and n/n outcomes replays produce, where the Wald interval does not; treating the arms as
independent would ignore the shared seeds and give too wide an interval. Both are a few lines
of arithmetic on exact binomials; scipy supplies the binomial test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

Z95 = 1.959963984540054


class ArmComparison(BaseModel):
    n: int
    treatment_successes: int
    control_successes: int
    treatment_rate: float
    control_rate: float
    difference: float
    ci_low: float
    ci_high: float
    treatment_only: int  # pairs where only the treatment succeeded
    control_only: int
    p_value: float  # one-sided exact test that the treatment does better
    # how ci_low..ci_high was computed; stored verdicts without it used the unpaired interval
    interval: Literal["newcombe-paired"] = "newcombe-paired"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 of independent samples (his method 10).

    Not for the arms of a verdict, which are paired: see newcombe_paired.
    """
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def newcombe_paired(
    both: int, first_only: int, second_only: int, neither: int, z: float = Z95
) -> tuple[float, float]:
    """Newcombe's score interval for p1 - p2 from paired outcomes (method 10 of his paired paper).

    The Wilson limits of the two rates are combined as for independent samples, less their
    covariance: phi, the correlation of the pairs, pulled toward 0 by N/2 when positive as the
    paper prescribes, and 0 when a margin is empty.
    """
    n = both + first_only + second_only + neither
    s1, s2 = both + first_only, both + second_only
    p1, p2 = s1 / n, s2 / n
    l1, u1 = wilson(s1, n, z)
    l2, u2 = wilson(s2, n, z)
    cross = both * neither - first_only * second_only
    if cross > 0:
        cross = max(cross - n / 2, 0.0)
    margins = s1 * (n - s1) * s2 * (n - s2)
    phi = cross / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)  # the limits can overshoot +-1 by a rounding error


def sign_test(better: int, worse: int) -> float:
    """One-sided exact p that `better` of the differing pairs favour the treatment by chance
    (1.0 with none). scipy is loaded on first use: it is half a second of start-up for
    everything that imports interventions, the CLI included."""
    if better + worse == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(better, better + worse, 0.5, alternative="greater").pvalue)


def compare(treatment: Sequence[bool], control: Sequence[bool]) -> ArmComparison:
    """Compare paired arms: pair i is treatment[i] and control[i], replayed with seed i."""
    if len(treatment) != len(control):
        raise ValueError(
            "treatment and control are paired by seed and must have equal lengths, "
            f"got {len(treatment)} and {len(control)}"
        )
    if not treatment:
        raise ValueError("no replays to compare")
    n = len(treatment)
    st, sc = sum(treatment), sum(control)
    b = sum(t and not c for t, c in zip(treatment, control, strict=True))
    c_only = sum(c and not t for t, c in zip(treatment, control, strict=True))
    p = sign_test(b, c_only)
    low, high = newcombe_paired(st - b, b, c_only, n - st - c_only)
    return ArmComparison(
        n=n,
        treatment_successes=st,
        control_successes=sc,
        treatment_rate=st / n,
        control_rate=sc / n,
        difference=(st - sc) / n,
        ci_low=low,
        ci_high=high,
        treatment_only=b,
        control_only=c_only,
        p_value=float(p),
    )
