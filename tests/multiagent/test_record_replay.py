"""The multi-agent example apps (langgraph-supervisor, langgraph-swarm, a supervisor of
supervisors, hand-written Command handoffs) on the scripted test double: every step is
recorded however it ends, every call in order, every handoff as an edge; a no-op replay from
every step reproduces the recording, and an edit at every step is applied."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from counterfact.graphs import record
from counterfact.interventions import (
    Budget,
    Debugger,
    InterventionError,
    Replayer,
    parse_intervention,
    verify,
)
from counterfact.store import TraceStore, output_text, step_handoffs, step_shape
from examples.multiagent import handoff, hierarchical, supervisor, swarm
from examples.multiagent.common import QUESTIONS, ScriptedTeamModel, correct

APPS = {"supervisor": supervisor, "swarm": swarm, "hierarchical": hierarchical, "handoff": handoff}
QUESTION = QUESTIONS[0]  # Lowmoor (790) plus Glenlyn (8600)


class Counter(BaseCallbackHandler):
    """Counts the model and tool calls a plain run makes (no counterfact involved)."""

    def __init__(self) -> None:
        self.models: set[UUID] = set()
        self.tools: set[UUID] = set()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.models.add(run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        self.tools.add(run_id)


def _recorded(app: Any, store: TraceStore) -> str:
    result = record(app.scripted(), store, workflow=app.__name__, ref=f"{app.__name__}:scripted",
                    check=correct).invoke({"messages": [("user", QUESTION)]})
    assert result.status == "succeeded", result.error
    return result.run_id


@pytest.mark.parametrize("name", APPS)
def test_every_call_of_a_plain_run_is_recorded(name: str, tmp_path: Any) -> None:
    app = APPS[name]
    counter = Counter()
    plain = app.scripted().compile().invoke({"messages": [("user", QUESTION)]}, {"callbacks": [counter]})
    assert correct(plain)
    store = TraceStore.open(str(tmp_path / "runs.db"))
    steps = store.steps(_recorded(app, store))
    assert sum(len(s.model_calls) for s in steps) == len(counter.models)
    assert sum(len(s.tool_calls) for s in steps) == len(counter.tools)
    edges = [e for s in steps for e in step_handoffs(s)]
    assert edges, "the run's handoffs are in its trace"
    assert {"researcher", "math_expert"} <= {e.to for e in edges} | {s.node for s in steps}
    for step in steps:  # one timeline per step: calls by when they started
        offsets = [c.offset_ms for c in [*step.model_calls, *step.tool_calls]]
        assert all(o is not None and o >= 0 for o in offsets)


def test_a_supervisor_run_shows_both_invocations_and_its_handoffs(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    steps = store.steps(_recorded(supervisor, store))
    assert [(s.node, s.invocation) for s in steps] == [
        ("supervisor", 0), ("researcher", 0), ("supervisor", 1), ("math_expert", 0), ("supervisor", 2)]
    assert [(e.source, e.to, e.tool) for s in steps for e in step_handoffs(s)] == [
        ("supervisor", "researcher", "transfer_to_researcher"), ("supervisor", "math_expert", "transfer_to_math_expert")]
    # a worker's output is what it answered, not the "transferred back" message
    assert "790" in output_text(steps[1].output) and "transferred" not in output_text(steps[1].output).lower()


@pytest.mark.parametrize("name", APPS)
def test_a_no_op_replay_from_every_step_reproduces_the_run(name: str, tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(APPS[name], store)
    original = store.steps(run_id)
    replayer = Replayer(store, run_id)
    for at in range(len(original)):
        result = replayer.replay(replayer.compile(None, at), arm="control")
        assert result.status == "succeeded", (at, result)
        assert [step_shape(s) for s in store.steps(result.run_id)] == [step_shape(s) for s in original], at


@pytest.mark.parametrize("name", APPS)
def test_an_edit_at_every_step_is_applied(name: str, tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(APPS[name], store)
    replayer = Replayer(store, run_id)
    edit = parse_intervention({"kind": "message", "mode": "append", "text": " (checked by the replay)"})
    for at in range(len(store.steps(run_id))):
        plan = replayer.compile(edit, at)
        result = replayer.replay(plan, arm="treatment", intervention_id=None)
        assert result.applied, (at, result.applied_detail)


class Misrouting(ScriptedTeamModel):
    """A supervisor with a wrong branch: while populations are missing it hands the question
    to the math expert, who cannot look them up, so the run loops until its recursion limit.
    It decodes greedily, as it says in its requests, so one replay per arm decides."""

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"temperature": 0.0}

    def _reply(self, facts: Any, offered: list[str]) -> Any:
        if facts.missing and "transfer_to_math_expert" in offered and "transfer_to_researcher" in offered:
            return self._call("transfer_to_math_expert", {})
        return super()._reply(facts, offered)


def misrouted() -> Any:
    return supervisor.build(Misrouting())


def test_a_handoff_edit_flips_a_misrouted_run_and_the_verdict_says_so(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    recorded = record(misrouted(), store, workflow="misrouted", ref=f"{__name__}:misrouted", check=correct)
    run = recorded.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 12})
    assert run.status == "error" and "GraphRecursionError" in (run.error or "")
    replayer = Replayer(store, run.run_id)
    # the control arm ends as the run did: at the run's own limit, not at a replay's
    control = replayer.replay(replayer.compile(None, 0), arm="control")
    assert control.status == "error" and "Recursion limit" in (store.get_run(control.run_id).error or "")
    assert len(store.steps(control.run_id)) == len(store.steps(run.run_id))
    edit = parse_intervention({"kind": "handoff", "to": "researcher"})
    report = verify(replayer, replayer.compile(edit, "supervisor#0"), pairs=3)
    assert report.verdict == "validated" and report.applied, report.reason
    treated = store.get_run(report.treatment[0].run_id)
    assert treated.status == "succeeded"
    edges = [(e.source, e.to, e.text) for s in store.steps(treated.id) for e in step_handoffs(s)]
    # the handoff's message names the agent it now goes to (it is what that agent reads)
    assert edges[0] == ("supervisor", "researcher", "Successfully transferred to researcher")


def test_a_suppressed_handoff_keeps_control_with_the_agent(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(supervisor, store)
    replayer = Replayer(store, run_id)
    plan = replayer.compile(parse_intervention({"kind": "handoff", "to": None}), "supervisor#0")
    result = replayer.replay(plan, arm="treatment")
    assert result.applied, result.applied_detail
    first = store.steps(result.run_id)[0]
    # the handoff it made is answered with a note and the supervisor goes on; this test
    # double insists and hands off again, which then goes through
    kept, again = first.tool_calls
    assert first.node == "supervisor" and kept.handoff is None and "not made" in str(kept.result)
    assert again.handoff == "researcher" and len(first.model_calls) == 2
    assert "not made" in str(first.model_calls[1].request[-1]["content"])


def test_a_handoff_edit_changes_what_is_handed_over(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(supervisor, store)
    replayer = Replayer(store, run_id)
    note = "Look up Lowmoor and Glenlyn, then stop."
    result = replayer.replay(replayer.compile(parse_intervention({"kind": "handoff", "message": note}), "supervisor#0"),
                             arm="treatment")
    assert result.applied, result.applied_detail
    researcher = store.steps(result.run_id)[1]
    assert researcher.node == "researcher" and any(note in str(m.get("content")) for m in researcher.model_calls[0].request)


def test_a_handoff_edit_on_a_step_without_one_is_refused(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    replayer = Replayer(store, _recorded(supervisor, store))
    with pytest.raises(InterventionError, match="made no handoff"):
        replayer.compile(parse_intervention({"kind": "handoff", "to": "math_expert"}), "researcher#0")
    with pytest.raises(InterventionError, match="no agent 'nobody'"):
        replayer.compile(parse_intervention({"kind": "handoff", "to": "nobody"}), "supervisor#0")


def test_agents_nested_in_teams_are_addressable_by_name(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(hierarchical, store)
    steps = store.steps(run_id)
    replayer = Replayer(store, run_id)
    at = replayer.resolve_step("agent:researcher#0")
    team = steps[at]
    assert team.node == "research_team"
    assert {c.agent for c in team.model_calls} >= {"research_supervisor", "researcher"}
    assert all(c.agent == "researcher" for c in team.tool_calls if c.name == "population")
    # the team supervisor's handoff to its worker is a nested edge of the team's step
    assert ("research_supervisor", "researcher", True) in [(e.source, e.to, e.nested) for e in step_handoffs(team)]
    with pytest.raises(InterventionError, match="researcher"):
        replayer.resolve_step("agent:nobody#0")


def test_the_debugger_finds_the_wrong_handoff_by_replay(tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "runs.db"))
    recorded = record(misrouted(), store, workflow="misrouted", ref=f"{__name__}:misrouted", check=correct)
    run = recorded.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 12})
    report = Debugger(Replayer(store, run.run_id), strategies=["handoff"], budget=Budget(replays=8)).run()
    validated = [h for h in report.hypotheses if h.verdict == "validated"]
    assert validated, [(h.step, h.status, h.note) for h in report.hypotheses]
    first = validated[0]
    assert first.step == 0 and first.agent == "supervisor"
    assert any(f.verdict == "validated" and f.label == "hand off to researcher" for f in first.fixes)
    assert report.spent.replays <= 8


def test_a_route_edit_hands_off_from_an_agent_that_answered_instead(tmp_path: Any) -> None:
    """The supervisor's last step answers (no handoff, no conditional edge): a route edit there
    sends control to a worker all the same, as the debugger's missing-handoff fix does."""
    store = TraceStore.open(str(tmp_path / "runs.db"))
    run_id = _recorded(supervisor, store)
    replayer = Replayer(store, run_id)
    plan = replayer.compile(parse_intervention({"kind": "route", "next": "math_expert"}), "supervisor#2")
    result = replayer.replay(plan, arm="treatment")
    assert result.applied, result.applied_detail
    assert [s.node for s in store.steps(result.run_id)][4:6] == ["supervisor", "math_expert"]
