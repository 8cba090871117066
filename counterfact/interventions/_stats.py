"""The statistics of a verdict: two success rates, their difference, its interval, a p-value.

Treatment and control replays are paired by seed (common random numbers), so the exact test
is McNemar's on the discordant pairs: a one-sided binomial test of "treatment-only successes"
against "control-only successes". The interval for the difference of the two rates is
Newcombe's hybrid score interval (from Wilson intervals), which behaves at the small n and
the 0/n and n/n outcomes replays produce, where the Wald interval does not. Both are a few
lines of arithmetic on exact binomials; scipy supplies the binomial test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel
from scipy.stats import binomtest

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


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (his method 10)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def compare(treatment: Sequence[bool], control: Sequence[bool]) -> ArmComparison:
    """Compare paired arms (pair i shares seed i)."""
    if len(treatment) != len(control) or not treatment:
        raise ValueError("arms must be paired and non-empty")
    n = len(treatment)
    st, sc = sum(treatment), sum(control)
    b = sum(t and not c for t, c in zip(treatment, control, strict=True))
    c_only = sum(c and not t for t, c in zip(treatment, control, strict=True))
    p = binomtest(b, b + c_only, 0.5, alternative="greater").pvalue if b + c_only else 1.0
    low, high = newcombe(st, n, sc, n)
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
