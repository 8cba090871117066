"""Verdicts rest on edits that were applied:

- a `tool` edit counts as applied only when the step's call of that tool answered the forced
  value: a call of the same tool that answered something else (the edit kept from the tool)
  is not evidence of the edit;
- `verify` counts an edit applied only when every treatment replay applied it: treatment arms
  of which only some applied the edit are not validated, however much better they did.
"""

from __future__ import annotations

import random

import pytest

from counterfact.agents import ChatModel, Completion, ToolCall
from counterfact.graphs import (
    ModelPool,
    WorkflowRunner,
    load_suite,
    parse_workflow,
    record,
)
from counterfact.interventions import Replayer, parse_intervention, verify
from counterfact.store import TraceStore

from ..interventions import apps
from ..interventions.test_replay import SUITE

FORCE_999 = {"kind": "tool", "tool": "lookup", "result": "999"}


class SometimesLooksUp(ChatModel):
    """A sampling model: with probability 3/4 (drawn from the request's seed) it looks up the
    population of Avalon, else it answers 1 at once; given a tool result it answers with it."""

    backend = "scripted"

    @property
    def name(self) -> str:
        return "sometimes"

    def complete(self, request):  # type: ignore[no-untyped-def]
        messages, settings = request.messages, request.settings
        if messages[-1].role == "tool":
            return Completion(text=f"FINAL ANSWER: {messages[-1].content}")
        if random.Random(settings.seed if settings else None).random() < 0.75:
            call = ToolCall(id="call_1", name="lookup", arguments={"key": "population of Avalon"})
            return Completion(text="", tool_calls=[call])
        return Completion(text="FINAL ANSWER: 1")


def _looked_up_run(store: TraceStore) -> Replayer:
    """A sampled one-agent run that looked up Avalon (1000) and so missed the expected 999."""
    spec = parse_workflow(
        {"name": "sometimes", "topology": "pipeline", "model": "sometimes",
         "agents": [{"name": "a", "role": "A.", "tools": ["lookup"], "settings": {"temperature": 0.8}}]}
    )
    pool = ModelPool("sometimes", {"sometimes": SometimesLooksUp()})
    summary = WorkflowRunner(spec, store, pool).run(load_suite(SUITE).task("wrong"), seed=0)
    (step,) = store.steps(summary.run_id)
    assert [(c.name, c.result) for c in step.tool_calls] == [("lookup", "1000")] and not summary.success
    return Replayer(store, summary.run_id, pool=pool)


@pytest.fixture
def local_store(sqlite_path: str) -> TraceStore:
    store = TraceStore.open(sqlite_path)
    yield store
    store.close()


# -- an unapplied tool edit -------------------------------------------------------------------


def test_a_tool_edit_kept_from_the_tool_is_not_applied(local_store: TraceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    replayer = _looked_up_run(local_store)
    plan = replayer.compile(parse_intervention(FORCE_999), "a#0")
    applied = replayer.replay(plan, arm="treatment", seed=0)
    assert applied.applied and applied.success, applied.applied_detail  # the edit, when it reaches the tool

    # the forced result kept from the tool: it runs and answers 1000, as it did in the run
    from counterfact.graphs import _nodes

    monkeypatch.setattr(_nodes, "tool_result_for", lambda name, arguments: (False, None))
    kept = replayer.replay(plan, arm="treatment", seed=0)
    (step,) = local_store.steps(kept.run_id)
    assert [(c.name, c.result) for c in step.tool_calls] == [("lookup", "1000")]  # called, not forced
    assert kept.applied is False and not kept.success
    assert "a call of lookup answered '999'" in kept.applied_detail


def test_a_tool_edit_kept_from_a_users_tool_node_is_not_applied(local_store: TraceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = record(apps.tool_agent(), local_store, ref="tests.interventions.apps:tool_agent",
                    check="tests.interventions.apps:answer_is_5").invoke({"messages": [("user", "add 2 and 2")]}).run_id
    replayer = Replayer(local_store, run_id)
    plan = replayer.compile(parse_intervention({"kind": "tool", "tool": "add", "result": 5}), "tools#0")
    assert replayer.replay(plan, arm="treatment").applied

    from counterfact.capture import _intercept

    monkeypatch.setattr(_intercept, "_answer", lambda tool, tool_input: (False, None))  # the tool runs
    kept = replayer.replay(plan, arm="treatment")
    assert [(c.name, c.result) for c in local_store.steps(kept.run_id)[1].tool_calls] == [("add", "4")]
    assert kept.applied is False and "a call of add answered '5'" in kept.applied_detail
    report = verify(replayer, plan, pairs=2)
    assert report.applied is False and report.verdict == "inconclusive"
    assert report.reason.startswith("the edit was not applied")


# -- treatment arms of which only some applied the edit ------------------------------------------


def test_verify_needs_every_treatment_replay_to_have_applied_the_edit(local_store: TraceStore) -> None:
    replayer = _looked_up_run(local_store)
    plan = replayer.compile(parse_intervention(FORCE_999), "a#0")
    report = verify(replayer, plan, pairs=8, seed=20)
    assert not report.deterministic
    # seeds 20..27: the model looks up on seven of them, where the forced 999 repairs the run;
    # on the eighth it answers without the tool, so the edit never reached it
    looked = [bool(local_store.steps(r.run_id)[0].tool_calls) for r in report.treatment]
    assert [r.applied for r in report.treatment] == looked == [True, True, True, False, True, True, True, True]
    assert [r.success for r in report.treatment] == looked and not any(r.success for r in report.control)
    assert report.comparison.p_value < 0.05  # the arms alone would validate it
    assert report.applied is False
    assert report.verdict == "inconclusive", report.reason
    assert report.reason.startswith("the edit was not applied")
    [stored] = local_store.verdicts(run_id=replayer.parent.id)
    assert (stored.verdict, stored.stats["applied"]) == ("inconclusive", False)
