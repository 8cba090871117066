"""Workflow builders, recorded: pipeline, orchestrator, group chat, and the runner's scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from counterfact.agents import Agent, ChatMessage, ScriptedChatModel
from counterfact.graphs import (
    group_chat,
    initial_state,
    load_suite,
    orchestrator,
    parse_plan,
    parse_route,
    pipeline,
    record,
    run_suite,
)
from counterfact.store import TraceStore

from .scripted import trio_pool, trio_spec

HERE = Path(__file__).parent


def _agent(name: str, replies: list[str] | None = None, fn=None) -> Agent:  # type: ignore[no-untyped-def]
    model = ScriptedChatModel(fn if fn is not None else replies or [], name=f"{name}-model")
    return Agent(name=name, role=f"You are {name}.", model=model)


def test_pipeline_runs_agents_in_order_and_each_sees_the_previous(sqlite_path: str) -> None:
    a, b = _agent("alpha", ["first says 1"]), _agent("beta", ["FINAL ANSWER: 2"])
    store = TraceStore.open(sqlite_path)
    result = record(pipeline([a, b]), store, workflow="p").invoke(initial_state({"question": "q?"}))
    assert result.state and result.state["final_answer"] == "2"
    steps = store.steps(result.run_id)
    assert [(s.node, s.agent, s.kind) for s in steps] == [("alpha", "alpha", "agent"), ("beta", "beta", "agent")]
    seen_by_beta = b.model.requests[0].messages[-1].content  # type: ignore[attr-defined]
    assert "Task: q?" in seen_by_beta and "[alpha] first says 1" in seen_by_beta
    # the step's output message carries the id the state holds (replays replace by id)
    state_ids = [m.id for m in result.state["messages"]]
    assert steps[0].output["id"] in state_ids and steps[0].model_calls[0].model == "alpha-model"


def test_orchestrator_plans_routes_tracks_the_ledger_and_answers(sqlite_path: str) -> None:
    lead_replies = [
        "FACTS KNOWN: none\nFACTS TO FIND: the value\nPLAN:\n1. finder: find the value\n2. checker: check it",
        "NEXT: finder\nINSTRUCTION: find the value",
        "NEXT: checker\nINSTRUCTION: check the value",
        "FINAL ANSWER: 42",
    ]
    lead = _agent("lead", lead_replies)
    finder, checker = _agent("finder", ["the value is 42"]), _agent("checker", ["42 is right"])
    store = TraceStore.open(sqlite_path)
    graph = orchestrator(lead, [finder, checker], max_rounds=6)
    result = record(graph, store, workflow="o").invoke(initial_state({"question": "value?"}))
    assert result.state and result.state["final_answer"] == "42"
    steps = store.steps(result.run_id)
    assert [(s.node, s.kind) for s in steps] == [
        ("plan", "plan"), ("route", "router"), ("finder", "agent"),
        ("route", "router"), ("checker", "agent"), ("route", "router"),
    ]
    plan = result.state["plan"]
    assert [s["agent"] for s in plan["steps"]] == ["finder", "checker"]
    assert [s["status"] for s in plan["steps"]] == ["done", "done"]
    assert "find the value" in finder.model.requests[0].messages[-1].content  # type: ignore[attr-defined]
    assert steps[1].delta["route"] == {"next": "finder", "instruction": "find the value"}


def test_orchestrator_replans_when_stalled_and_stops_at_the_round_limit(sqlite_path: str) -> None:
    def lead_brain(messages: list[ChatMessage]) -> str:
        prompt = messages[-1].content
        if "Write the plan" in prompt:
            return "PLAN:\n1. worker: do it"
        if "Give the answer now" in prompt:
            return "FINAL ANSWER: gave up"
        return "NEXT: worker\nINSTRUCTION: try again"

    lead, worker = _agent("lead", fn=lead_brain), _agent("worker", fn=lambda m: "no luck")
    store = TraceStore.open(sqlite_path)
    graph = orchestrator(lead, [worker], max_rounds=5, stall_limit=2, max_replans=1)
    result = record(graph, store).invoke(initial_state({"question": "?"}))
    nodes = [s.node for s in store.steps(result.run_id)]
    assert nodes.count("plan") == 2  # the first plan and one re-plan after stalling
    assert nodes[-1] == "final" and result.state and result.state["final_answer"] == "gave up"
    assert nodes.count("route") == 5


def test_the_lead_sees_its_worked_examples_before_each_of_its_prompts(sqlite_path: str) -> None:
    shown = [ChatMessage(role="user", content="Task: an example"), ChatMessage(role="assistant", content="PLAN:\n1. w: x")]
    lead = _agent("lead", ["PLAN:\n1. worker: do it", "NEXT: worker\nINSTRUCTION: do it", "FINAL ANSWER: 7"])
    worker = _agent("worker", ["done: 7"])
    graph = orchestrator(lead, [worker], examples={"lead": shown})
    result = record(graph, TraceStore.open(sqlite_path)).invoke(initial_state({"question": "?"}))
    assert result.state and result.state["final_answer"] == "7"
    requests = lead.model.requests  # type: ignore[attr-defined]
    assert len(requests) == 3  # plan, then a route before and after the worker
    for request in requests:
        asked = [m for m in request.messages if m.role != "system"]
        assert [m.content for m in asked[:2]] == [m.content for m in shown] and len(asked) == 3
    # the worker is not shown the lead's examples
    assert all(m.content != "Task: an example" for m in worker.model.requests[0].messages)  # type: ignore[attr-defined]


def test_unreadable_route_falls_back_to_the_plan() -> None:
    plan = parse_plan("PLAN:\n1. [Finder]: look\n2) checker - verify\nnoise", ["finder", "checker"])
    assert [(s.agent, s.text) for s in plan.steps] == [("finder", "look"), ("checker", "verify")]
    assert parse_route("NEXT: Checker\nINSTRUCTION: go", ["finder", "checker"]).next == "checker"  # type: ignore[union-attr]
    assert parse_route("I think we should continue", ["finder"]) is None
    assert parse_route("NEXT: nobody", ["finder"]) is None


def test_group_chat_round_robin_until_a_final_answer(sqlite_path: str) -> None:
    a = _agent("a", ["hello", "still thinking"])
    b = _agent("b", ["hmm", "FINAL ANSWER: done"])
    store = TraceStore.open(sqlite_path)
    result = record(group_chat([a, b], max_rounds=10), store).invoke(initial_state({"question": "?"}))
    assert [s.node for s in store.steps(result.run_id)] == ["a", "b", "a", "b"]
    assert result.state and result.state["final_answer"] == "done"


def test_group_chat_with_a_selector(sqlite_path: str) -> None:
    selector = _agent("sel", ["b speaks", "a please", "b"])
    a, b = _agent("a", ["from a"]), _agent("b", ["from b", "FINAL ANSWER: ok"])
    store = TraceStore.open(sqlite_path)
    graph = group_chat([a, b], max_rounds=6, selector=selector)
    result = record(graph, store).invoke(initial_state({"question": "?"}))
    steps = store.steps(result.run_id)
    assert [s.node for s in steps] == ["selector", "b", "selector", "a", "selector", "b"]
    assert steps[0].kind == "router" and steps[0].agent == "sel"


def test_runner_scores_runs_and_stores_outcomes(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    suite = load_suite(HERE / "suite.yaml")
    results = run_suite(trio_spec(), suite, store, pool=trio_pool(), concurrency=2)
    by_task = {r.task_id: r for r in results}
    assert by_task["sum"].success and by_task["sum"].answer == "1500"
    assert not by_task["wrong"].success and by_task["wrong"].answer == "1000"
    good, bad = store.get_run(by_task["sum"].run_id), store.get_run(by_task["wrong"].run_id)
    assert good.status == "succeeded" and good.outcome and good.outcome.milestones == ["found Avalon", "computed"]
    assert bad.status == "failed" and bad.outcome and bad.outcome.milestones == ["found Avalon"]
    assert 0 < bad.outcome.score < 1
    assert bad.labels["task_id"] == "wrong" and bad.labels["workflow_spec"]["name"] == "trio"
    assert bad.task_input["question"] == "What is the population of Avalon?"
    assert "answer" not in bad.task_input  # the workflow is not handed the answer
    researcher = store.steps(good.id)[0]
    assert [c.name for c in researcher.tool_calls] == ["lookup", "lookup"]
    assert [c.result for c in researcher.tool_calls] == ["1000", "500"]


def test_repeats_run_each_task_several_times(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    suite = load_suite(HERE / "suite.yaml")
    results = run_suite(trio_spec(), suite, store, pool=trio_pool(), repeats=3)
    assert [(r.task_id, r.repeat) for r in results] == [
        ("sum", 0), ("sum", 1), ("sum", 2), ("wrong", 0), ("wrong", 1), ("wrong", 2)
    ]
    assert len({r.run_id for r in results}) == 6
    assert sorted(run.labels["repeat"] for run in store.list_runs(limit=None)) == [0, 0, 1, 1, 2, 2]


def test_a_bad_repeats_count_is_refused(sqlite_path: str) -> None:
    from counterfact import CounterfactError

    with pytest.raises(CounterfactError, match="repeats must be at least 1"):
        run_suite(trio_spec(), load_suite(HERE / "suite.yaml"), TraceStore.open(sqlite_path), repeats=0)
