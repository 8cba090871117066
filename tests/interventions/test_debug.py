"""The debugger on scripted workflows: each strategy, the budget, resuming, bad input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, Completion, ScriptedChatModel
from counterfact.graphs import ModelPool, WorkflowRunner, load_suite, parse_workflow
from counterfact.interventions import (
    Budget,
    Debugger,
    Replayer,
    parse_hypotheses,
    split_segments,
    write_html,
)
from counterfact.traces import StepRecord, TraceStore
from counterfact.traces._schema import Hypothesis

from .test_replay import SUITE, _recorded_orchestrator, _recorded_trio


def test_trials_split_at_planning_steps() -> None:
    kinds = ["plan", "router", "agent", "router", "plan", "router", "agent"]
    steps = [StepRecord(index=i, node=k, kind=k) for i, k in enumerate(kinds)]  # type: ignore[arg-type]
    assert [(t.first_step, t.last_step) for t in split_segments(steps)] == [(0, 3), (4, 6)]
    assert [(t.first_step, t.last_step) for t in split_segments(steps[1:4])] == [(0, 2)]


def test_hypothesis_lines_are_parsed_and_checked() -> None:
    steps = [StepRecord(index=i, node=n, agent=n) for i, n in enumerate(["researcher", "solver", "reporter"])]
    segment = split_segments(steps)[0]
    found, problems = parse_hypotheses(
        "STEP: 1 | AGENT: solver | REASON: wrong sum | FIX: RESULT: 999\n"
        "STEP: 2 | AGENT: researcher | REASON: x | FIX: y\n"
        "STEP: 9 | AGENT: solver | REASON: x | FIX: y",
        steps,
        segment,
    )
    assert found == [(1, "wrong sum", "RESULT: 999")]
    assert "taken by reporter" in problems and "outside the segment" in problems


def _debugger(store: TraceStore, run_id: str, pool: ModelPool, **kwargs: object) -> Debugger:
    return Debugger(Replayer(store, run_id, pool=pool), **kwargs)  # type: ignore[arg-type]


def test_llm_strategy_proposes_verifies_and_retries_malformed_output(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")
    answers = iter(["I am not sure.", "STEP: 1 | AGENT: solver | REASON: wrong number | FIX: RESULT: 999"])
    critic = ScriptedChatModel(lambda messages: next(answers))
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10),
                       hypothesis_model=critic).run()
    assert len(critic.requests) == 2  # one retry after the malformed answer
    prompt = critic.requests[0].messages[0].content
    assert "[1] solver" in prompt and "999" not in prompt  # indices shown, the answer is not
    (h,) = report.hypotheses
    assert (h.step, h.agent, h.verdict) == (1, "solver", "validated")
    assert report.spent.replays == 2


def test_llm_strategy_gives_up_with_the_reason_recorded(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")
    critic = ScriptedChatModel(lambda messages: "no idea")
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4),
                       hypothesis_model=critic).run()
    (h,) = report.hypotheses
    assert h.status == "skipped" and "no line in the form" in h.note


class Flaky(ChatModel):
    """A solver that gets the sum right at random when sampling, never when greedy."""

    backend = "scripted"

    @property
    def name(self) -> str:
        return "flaky"

    def complete(self, messages, settings=None, *, tools=None, activation_edits=None):  # type: ignore[no-untyped-def]
        from tests.graphs.scripted import arithmetic_brain

        text = arithmetic_brain(messages)
        sampling = settings is not None and settings.temperature > 0
        if "Compute" in messages[0].content and text.startswith("RESULT:"):
            lucky = sampling and random.Random(settings.seed).random() < 0.5  # type: ignore[union-attr]
            text = text if lucky else "RESULT: 1000"
        return Completion(text=text)


def test_resample_finds_the_point_of_no_return_and_patch_transplants(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    pool = ModelPool("test", {"test": Flaky()})
    spec = parse_workflow(
        {"name": "trio", "topology": "pipeline", "model": "test",
         "agents": [{"name": "researcher", "role": "Find facts.", "tools": ["lookup"]},
                    {"name": "solver", "role": "Compute.", "tools": ["calculator"]},
                    {"name": "reporter", "role": "Report."}]}
    )
    run_id = WorkflowRunner(spec, store, pool).run(load_suite(SUITE).task("sum")).run_id
    assert store.get_run(run_id).status == "failed"
    report = _debugger(store, run_id, pool, strategies=["resample", "patch"], budget=Budget(replays=30),
                       trials=2).run()
    resample = next(h for h in report.hypotheses if h.strategy == "resample")
    assert resample.step == 1 and "point of no return" in resample.reason  # the solver
    assert resample.verdict == "validated"
    patched = [h for h in report.hypotheses if h.strategy == "patch"]
    assert any(h.step == 1 and h.verdict == "validated" for h in patched)
    assert report.spent.replays <= 30


def test_budget_is_respected_and_sessions_resume(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _recorded_orchestrator(store)
    lines = "\n".join(f"STEP: {i} | AGENT: {a} | REASON: r{i} | FIX: NEXT: checker" for i, a in [(1, "lead"), (3, "lead"), (5, "lead")])
    critic = ScriptedChatModel(lambda messages: lines)
    first = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=2),
                      hypothesis_model=critic).run()
    statuses = sorted(h.status for h in first.hypotheses)
    assert statuses == ["skipped", "skipped", "verified"]
    assert first.spent.replays == 2
    # an interrupted session: mark one hypothesis as still proposed and run again
    with store.begin() as conn:
        conn.execute(Hypothesis.__table__.update().where(Hypothesis.seq == 2).values(status="proposed", note=""))
    from counterfact.traces._schema import DebugSession

    with store.begin() as conn:
        conn.execute(DebugSession.__table__.update().values(status="running"))
    second = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4),
                       hypothesis_model=critic).run()
    assert second.session_id == first.session_id
    assert len(critic.requests) == 1  # hypotheses were not proposed again
    assert sorted(h.status for h in second.hypotheses) == ["skipped", "verified", "verified"]


def test_bad_input(sqlite_path: str, tmp_path: Path) -> None:
    store = TraceStore.open(sqlite_path)
    good, _, pool = _recorded_trio(store, "sum")
    with pytest.raises(CounterfactError, match="succeeded: there is no failure to debug"):
        _debugger(store, good, pool, strategies=["llm"], budget=Budget())
    unscored = WorkflowRunner(
        parse_workflow({"name": "u", "topology": "pipeline", "model": "test",
                        "agents": [{"name": "a", "role": "Report."}]}), store, pool
    )
    from counterfact.graphs import Task

    run_id = unscored.run(Task(id="free", question="anything?")).run_id
    with store.begin() as conn:  # an unscored run that stopped: nothing to score replays with
        from counterfact.traces._schema import Run

        conn.execute(Run.__table__.update().where(Run.id == run_id).values(status="error"))
    with pytest.raises(CounterfactError, match="has no check of its final state"):
        _debugger(store, run_id, pool, strategies=["llm"], budget=Budget())
    failed, _, pool2 = _recorded_trio(store, "wrong")
    unreachable = "openai:gpt-test"
    import os

    os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    try:
        with pytest.raises(CounterfactError, match="cannot reach its model"):
            _debugger(store, failed, pool2, strategies=["llm"], budget=Budget(),
                      hypothesis_model=unreachable).run()
    finally:
        del os.environ["OPENAI_BASE_URL"]


def test_html_report_is_a_standalone_page(sqlite_path: str, tmp_path: Path) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")
    critic = ScriptedChatModel(lambda m: "STEP: 1 | AGENT: solver | REASON: wrong <sum> | FIX: RESULT: 999")
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=2), hypothesis_model=critic).run()
    page = write_html(report, tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "validated" in page
    assert "wrong &lt;sum&gt;" in page  # escaped
    assert "http" not in page.split("</style>")[0]  # no external resources
