"""Debugger strategies are plug-ins: a strategy written outside the package, registered by
name, is chosen, run and verified like a built-in one, without a change to the debugger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from counterfact import CounterfactError
from counterfact.interventions import (
    STRATEGIES,
    Budget,
    DebugContext,
    Proposal,
    Skipped,
    register_strategy,
    strategies_from,
    strategy_names,
)
from counterfact.interventions.strategies import _REGISTRY, strategy_named
from counterfact.store import TraceStore

from .test_debug import _debugger, _record, heeds_the_note


class BlameTheSolver:
    """Suspects every step of the solver agent: a strategy of a few lines."""

    name = "blame-solver"

    def propose(self, context: DebugContext) -> Iterator[Proposal | Skipped]:
        solver = [s for s in context.steps if (s.agent or s.node) == "solver"]
        if not solver:
            yield Skipped(note="no solver step")
            return
        yield Skipped(note=f"{len(solver)} solver step(s) suspected")
        for step in solver:
            note = "The checker says your answer was wrong: the result the task wants is 999."
            yield Proposal(step=step.index or 0, reason="the solver is always to blame",
                           fixes=context.fixes(step.index or 0, [note], self.name), evidence={"by": "test"})


@pytest.fixture
def blame() -> Iterator[BlameTheSolver]:
    strategy = register_strategy(BlameTheSolver())
    yield strategy  # type: ignore[misc]
    _REGISTRY.pop(strategy.name)


def test_the_built_in_strategies_in_the_order_a_session_tries_them() -> None:
    assert STRATEGIES == ("history", "handoff", "grounded", "rerun", "llm", "resample", "patch")
    assert strategies_from(["all"]) == list(STRATEGIES)
    assert strategies_from(["patch", "llm"]) == ["patch", "llm"]


def test_a_registered_strategy_is_chosen_by_name_and_run_by_the_debugger(store: TraceStore, blame: Any) -> None:
    assert strategy_names()[-1] == "blame-solver" and "blame-solver" in strategies_from(["all"])
    run_id, pool = _record(store, heeds_the_note)
    report = _debugger(store, run_id, pool, strategies=["blame-solver"], budget=Budget(replays=10)).run()
    [hypothesis] = report.hypotheses
    assert (hypothesis.strategy, hypothesis.agent, hypothesis.reason) == ("blame-solver", "solver", "the solver is always to blame")
    assert hypothesis.evidence == {"by": "test"}
    assert hypothesis.verdict == "validated"  # the solver heeds the note: the fix repairs the run
    assert report.notes == ["blame-solver: 1 solver step(s) suspected"]
    assert report.strategies == ["blame-solver"]


def test_what_is_not_a_strategy_is_refused_with_its_name() -> None:
    with pytest.raises(TypeError, match="not a strategy: it needs a name and a propose"):
        register_strategy(object())  # type: ignore[arg-type]
    with pytest.raises(CounterfactError, match="no strategy 'nope'; choose among history, handoff, grounded"):
        strategy_named("nope")
    with pytest.raises(CounterfactError, match="choose strategies among .* or all, not nope"):
        strategies_from(["llm", "nope"])
