"""Two suite runs compared task by task, as the viewer shows them: the library's own model
(`compare_suite_runs`: what `counterfact compare` prints, each task's runs included), with an
unknown suite run as a 404."""

from __future__ import annotations

from counterfact._errors import CounterfactError
from counterfact.graphs import (
    SuiteComparison,
    SuiteError,
    compare_suite_runs,
)
from counterfact.store import TraceStore


class SuiteRunNotFound(CounterfactError):
    """An id or prefix that names no single suite run: the viewer answers 404, not 400."""


def suite_compare_page(store: TraceStore, a_ref: str, b_ref: str) -> SuiteComparison:
    """Suite run B against suite run A as `counterfact compare` computes it."""
    try:
        return compare_suite_runs(store, a_ref, b_ref)
    except SuiteError as exc:  # the only one it raises: an id that resolves to no single suite run
        raise SuiteRunNotFound(str(exc)) from None
