"""Replays: forking without re-running the past, fidelity, each kind of edit, tool reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from counterfact.agents import ChatMessage, ScriptedChatModel
from counterfact.graphs import (
    ModelPool,
    WorkflowRunner,
    _tools,
    load_suite,
    parse_workflow,
)
from counterfact.interventions import InterventionError, Replayer, parse_intervention
from counterfact.store import StepRecord, TraceStore, verify_run

from ..agents.passes import CountingPasses
from ..graphs.scripted import arithmetic_brain, trio_spec

SUITE = Path(__file__).resolve().parents[1] / "graphs" / "suite.yaml"


def _recorded_trio(store: TraceStore, task_id: str = "sum") -> tuple[str, ScriptedChatModel, ModelPool]:
    model = ScriptedChatModel(arithmetic_brain, name="brain")
    pool = ModelPool("test", {"test": model})
    runner = WorkflowRunner(trio_spec(), store, pool)
    summary = runner.run(load_suite(SUITE).task(task_id), suite="tiny")
    return summary.run_id, model, pool


def test_nothing_before_the_fork_runs_again(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, model, pool = _recorded_trio(store)
    assert len(model.requests) == 5  # researcher and solver: a call and a tool round each; reporter
    replayer = Replayer(store, run_id, pool=pool)
    before = len(model.requests)
    result = replayer.replay(replayer.compile(None, "reporter#0"), arm="control")
    asked = model.requests[before:]
    assert len(asked) == 1 and "Report" in asked[0].messages[0].content  # only the reporter ran
    assert result.success and result.answer == "1500"
    child = store.steps(result.run_id)
    parent = store.steps(run_id)
    assert [s.node for s in child] == ["researcher", "solver", "reporter"]
    assert [s.digest for s in child[:2]] == [s.digest for s in parent[:2]]  # shared chain prefix
    run = store.get_run(result.run_id)
    assert run.parent_run_id == run_id and run.fork_step == 2
    assert verify_run(store, result.run_id).ok


def test_replay_without_edit_reproduces_the_run_step_for_step(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store)
    replayer = Replayer(store, run_id, pool=pool)
    for at in ("0", "solver#0", "2"):
        result = replayer.replay(replayer.compile(None, at), arm="control")
        original, replayed = store.steps(run_id), store.steps(result.run_id)
        assert [(s.node, s.output["content"]) for s in replayed] == [(s.node, s.output["content"]) for s in original]


def test_recorded_tool_results_are_reused_unless_live(sqlite_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store)
    calls: list[str] = []
    real = _tools.TOOLS["lookup"]

    def counting(task: dict) -> object:
        tool = real(task)
        inner = tool.function
        return tool.model_copy(update={"function": lambda args: calls.append(args.key) or inner(args)})

    monkeypatch.setitem(_tools.TOOLS, "lookup", counting)
    replayer = Replayer(store, run_id, pool=pool)
    plan = replayer.compile(None, 0)
    assert replayer.replay(plan, arm="control").success and calls == []  # answered from the trace
    assert replayer.replay(plan, arm="control", live_tools=True).success
    assert calls == ["population of Avalon", "population of Brindle"]


def test_message_edits_replace_append_and_substitute(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, _, pool = _recorded_trio(store, "wrong")  # answers 1000, expected 999
    replayer = Replayer(store, run_id, pool=pool)
    cases = [
        ({"kind": "message", "text": "RESULT: 999"}, "999"),
        ({"kind": "message", "mode": "append", "text": "9"}, "10009"),
        ({"kind": "message", "mode": "regex", "pattern": "1000", "text": "999"}, "999"),
    ]
    for edit, answer in cases:
        plan = replayer.compile(parse_intervention(edit), "solver#0")
        result = replayer.replay(plan, arm="treatment", intervention_id="test")
        assert result.answer == answer, edit
        assert result.applied, result.applied_detail
    with pytest.raises(InterventionError, match="does not occur"):
        replayer.compile(parse_intervention({"kind": "message", "mode": "regex", "pattern": "zzz", "text": "x"}), 1)


def test_a_response_edit_stands_for_a_counterfact_agents_model_call(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, model, pool = _recorded_trio(store, "wrong")
    replayer = Replayer(store, run_id, pool=pool)
    calls_before = len(model.requests)
    plan = replayer.compile(parse_intervention({"kind": "response", "text": "RESULT: 999"}), "solver#0")
    result = replayer.replay(plan, arm="treatment", intervention_id="test")
    assert result.answer == "999" and result.applied, result.applied_detail
    solver = store.steps(result.run_id)[plan.step]
    assert solver.model_calls[0].params["forced"] is True
    assert len(model.requests) - calls_before == len(store.steps(result.run_id)) - plan.step - 1  # not the solver


def test_tool_result_prefix_and_tool_removal_edits(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, model, pool = _recorded_trio(store, "wrong")
    replayer = Replayer(store, run_id, pool=pool)
    forced = replayer.compile(parse_intervention({"kind": "tool", "tool": "lookup", "result": "999"}), 0)
    result = replayer.replay(forced, arm="treatment", intervention_id="t")
    assert result.success and result.applied
    prefixed = replayer.compile(parse_intervention({"kind": "prefix", "text": "RESULT: 99"}), "reporter#0")
    result = replayer.replay(prefixed, arm="treatment", intervention_id="t")
    reporter = store.steps(result.run_id)[2]
    assert reporter.output["content"].startswith("RESULT: 99") and result.applied
    assert model.requests[-1].messages[-1] == ChatMessage(role="assistant", content="RESULT: 99")
    removed = replayer.compile(parse_intervention({"kind": "tool", "tool": "calculator", "action": "remove"}), "solver#0")
    result = replayer.replay(removed, arm="treatment", intervention_id="t")
    system = model.requests[-2].messages[0].content  # the solver's prompt
    assert "calculator" not in system and result.applied, result.applied_detail


ORCHESTRATOR = {
    "name": "orch",
    "topology": "orchestrator",
    "model": "lead",
    "lead": "lead",
    "max_rounds": 4,
    "agents": [
        {"name": "lead", "role": "Lead."},
        {"name": "finder", "role": "Finds.", "model": "worker"},
        {"name": "checker", "role": "Checks.", "model": "worker"},
    ],
}


def _lead(messages: list[ChatMessage]) -> str:
    prompt = messages[-1].content
    if "Write the plan" in prompt:
        return "PLAN:\n1. finder: find the value"
    if "[checker]" in prompt:
        return "FINAL ANSWER: 999" if "checked 999" in prompt else "FINAL ANSWER: 1"
    if "[finder]" in prompt:
        return "NEXT: checker\nINSTRUCTION: check it"
    if "double-check" in prompt:
        return "NEXT: checker\nINSTRUCTION: double-check"
    return "NEXT: finder\nINSTRUCTION: find the value"


def _worker(messages: list[ChatMessage]) -> str:
    prompt = messages[-1].content
    if "Checks" in messages[0].content:
        return "checked 999" if "999" in prompt else "looks fine"
    return "found 1"


def _recorded_orchestrator(store: TraceStore) -> tuple[str, ModelPool]:
    pool = ModelPool(None, {"lead": ScriptedChatModel(_lead), "worker": ScriptedChatModel(_worker)})
    runner = WorkflowRunner(parse_workflow(ORCHESTRATOR), store, pool)
    task = load_suite(SUITE).task("wrong")
    return runner.run(task, suite="tiny").run_id, pool


def test_plan_and_route_edits_on_an_orchestrator(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _recorded_orchestrator(store)
    steps = store.steps(run_id)
    assert [s.node for s in steps] == ["plan", "route", "finder", "route", "checker", "route"]
    replayer = Replayer(store, run_id, pool=pool)
    # a plan edit at the first routing step: the router then sees the new plan
    plan_edit = parse_intervention(
        {"kind": "plan", "patch": [{"op": "add", "path": "/steps/-", "value": {"agent": "checker", "text": "double-check 999"}}]}
    )
    result = replayer.replay(replayer.compile(plan_edit, "route#0"), arm="treatment", intervention_id="p")
    assert result.applied, result.applied_detail
    child = store.steps(result.run_id)
    assert child[1].node == "route" and "double-check 999" in child[1].model_calls[0].request[-1]["content"]
    # a route edit: force the checker with an instruction that carries the right value
    route = parse_intervention({"kind": "route", "next": "checker", "instruction": "the value is 999"})
    result = replayer.replay(replayer.compile(route, "route#0"), arm="treatment", intervention_id="r")
    assert result.applied and result.success and result.answer == "999"
    assert [s.node for s in store.steps(result.run_id)][:3] == ["plan", "route", "checker"]
    with pytest.raises(InterventionError, match="its successors are fixed"):
        replayer.compile(route, "finder#0")


_VARYING = {"id", "task_id", "checkpoint_before", "checkpoint_after", "started_at", "ended_at", "digest", "latency_ms", "offset_ms"}


def _comparable(step: StepRecord) -> object:
    """A step record without what differs between two runs of the same thing: ids and times."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VARYING and not k.endswith("_id")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(step.model_dump(mode="json"))


def test_fidelity_on_each_workflow_kind_with_a_local_model(sqlite_path: str, tiny: object) -> None:
    """Greedy runs on a white-box local model replay exactly, from every step."""
    store = TraceStore.open(sqlite_path)
    pool = ModelPool("tiny", {"tiny": tiny})  # type: ignore[dict-item]
    kinds = {
        "pipeline": {"topology": "pipeline"},
        "groupchat": {"topology": "groupchat", "max_rounds": 3},
        "orchestrator": {"topology": "orchestrator", "lead": "a", "max_rounds": 2},
    }
    task = load_suite(SUITE).task("sum")
    for name, topology in kinds.items():
        spec = parse_workflow(
            {
                "name": name,
                "model": "tiny",
                **topology,
                "agents": [
                    {"name": "a", "role": "A.", "settings": {"max_tokens": 6}},
                    {"name": "b", "role": "B.", "settings": {"max_tokens": 6}},
                ],
            }
        )
        run_id = WorkflowRunner(spec, store, pool).run(task).run_id
        original = store.steps(run_id)
        replayer = Replayer(store, run_id, pool=pool)
        for at in range(len(original)):
            tiny.engine.memo.clear()  # type: ignore[attr-defined]  # the model answers anew, not from the memo
            replayed = store.steps(replayer.replay(replayer.compile(None, at), arm="control").run_id)
            # whole step records: inputs, outputs, state updates, every model call with its
            # settings, seed, request, response, finish reason and tokens, and tool calls
            assert [_comparable(s) for s in replayed] == [_comparable(s) for s in original], (name, at)
            assert all(s.model_calls for s in replayed[at:])


def test_a_control_replay_takes_the_recorded_replies_as_drafts(
    sqlite_path: str, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local model checks each recorded reply in a few passes instead of decoding it: the
    control gives the run's records with fewer forward passes than a replay without them."""
    store = TraceStore.open(sqlite_path)
    pool = ModelPool("tiny", {"tiny": tiny})
    spec = parse_workflow(
        {
            "name": "drafted",
            "model": "tiny",
            "topology": "pipeline",
            "agents": [{"name": n, "role": f"{n}.", "settings": {"max_tokens": 48}} for n in ("a", "b")],
        }
    )
    run_id = WorkflowRunner(spec, store, pool).run(load_suite(SUITE).task("sum")).run_id
    original = store.steps(run_id)
    passes: dict[str, int] = {}
    model = tiny.engine.model
    for arm, drafts in (("without drafts", False), ("with drafts", True)):
        monkeypatch.setattr(tiny.engine, "model", counting := CountingPasses(model))
        tiny.engine.memo.clear()
        replayer = Replayer(store, run_id, pool=pool, drafts=drafts)
        replayed = store.steps(replayer.replay(replayer.compile(None, 0), arm="control").run_id)
        assert [_comparable(s) for s in replayed] == [_comparable(s) for s in original], arm
        passes[arm] = counting.passes
    tokens = sum(call.completion_tokens or 0 for step in original for call in step.model_calls)
    assert tokens > 40  # replies long enough for drafts to matter
    assert passes["with drafts"] < passes["without drafts"] - 30, passes

