"""The fault benchmark on the multi-agent example apps (the deterministic team model): faults go
in through the app's own tools and model and leave no mark in the store; the truth names the
step the faulted call is in; re-execution places a transient fault and repairs it."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.errors import GraphRecursionError

from counterfact.agents import ChatCounterfact
from counterfact.bench import (
    SHAPES,
    FaultyModel,
    fault_named,
    fault_names,
    run_fault_bench,
    step_of,
)
from counterfact.graphs import record
from counterfact.store import TraceStore
from examples.multiagent import supervisor, swarm
from examples.multiagent.common import QUESTIONS, TOOLS, ScriptedTeamModel, correct

TASK = {"messages": [("user", QUESTIONS[0])]}


@pytest.fixture
def store(tmp_path: Path) -> TraceStore:
    return TraceStore.open(str(tmp_path / "bench.db"))


def _clean(store: TraceStore, build: object) -> list:
    result = record(build(ScriptedTeamModel(), TOOLS), store, workflow="clean", check=correct).invoke(TASK)  # type: ignore[operator]
    assert result.status == "succeeded"
    return store.steps(result.run_id)


def test_a_wrong_tool_value_is_an_ordinary_failed_run_whose_truth_is_the_step_of_the_call(store: TraceStore) -> None:
    clean = _clean(store, supervisor.build)
    faulted = fault_named("tool_wrong_value").inject(supervisor.build, ScriptedTeamModel(), TOOLS, clean, random.Random(1))
    assert faulted is not None and faulted.target.startswith("population call ")
    result = record(faulted.graph, store, workflow="supervisor", check=correct).invoke(TASK)
    assert result.status == "failed"
    [event] = faulted.events
    steps = store.steps(result.run_id)
    step = step_of(event, steps)
    assert step is not None and step.node == "researcher"
    lied = [c for c in step.tool_calls if c.name == "population"][event.call - 1]
    assert str(lied.result) == event.shows  # the trace shows the value the app got, once
    assert sum(c.name == "population" for s in steps for c in s.tool_calls) == sum(
        c.name == "population" for s in clean for c in s.tool_calls)  # no nested call recorded twice
    run = store.get_run(result.run_id)
    assert not any("fault" in str(k).lower() or "fault" in str(v).lower() for k, v in run.labels.items())


def test_a_corrupted_reply_is_found_at_the_model_call_it_hit(store: TraceStore) -> None:
    clean = _clean(store, swarm.build)
    faulted = fault_named("reply_corrupted").inject(swarm.build, ScriptedTeamModel(), TOOLS, clean, random.Random(3))
    assert faulted is not None
    result = record(faulted.graph, store, workflow="swarm", check=correct).invoke(TASK)
    [event] = faulted.events
    step = step_of(event, store.steps(result.run_id))
    assert step is not None
    assert any(event.shows in str(c.response.get("content")) for c in step.model_calls)
    assert result.status == "failed"
    clean_calls = {(c.backend, c.model) for s in clean for c in s.model_calls}
    faulted_calls = {(c.backend, c.model) for s in store.steps(result.run_id) for c in s.model_calls}
    assert faulted_calls == clean_calls  # the trace names the app's model, not the wrapper that faulted it


def test_a_dropped_handoff_ends_the_run_where_the_debugger_finds_and_repairs_it(store: TraceStore) -> None:
    bench = run_fault_bench(store, shapes=[SHAPES["supervisor"]], kinds=["handoff_dropped"], runs=1, model="scripted",
                            seed=0)
    [case] = bench.cases
    assert case.truth.agent == "supervisor" and case.truth.step > 0  # a handoff after the first worker's
    assert case.ranked_steps[0] == case.truth.step and case.repaired


def test_a_model_that_records_its_own_calls_cannot_carry_a_fault() -> None:
    with pytest.raises(ValueError, match="records its own calls"):
        FaultyModel(inner=ChatCounterfact(model="scripted:ok"))


def test_each_kind_aims_at_what_the_clean_run_did_or_declines(store: TraceStore) -> None:
    clean = _clean(store, supervisor.build)
    for name in fault_names():
        faulted = fault_named(name).inject(supervisor.build, ScriptedTeamModel(), TOOLS, clean, random.Random(0))
        assert faulted is not None, name  # the supervisor app has tools, replies with numbers, handoffs, prompts, routes
        try:
            reply = faulted.graph.compile().invoke(TASK, {"recursion_limit": 25})["messages"][-1]
        except GraphRecursionError:
            assert name == "wrong_branch"  # only a route gone astray sends the app round in circles
            continue
        assert isinstance(reply, AIMessage)


def test_re_execution_places_transient_faults_and_repairs_them(store: TraceStore) -> None:
    seen: list[tuple[int, int]] = []
    bench = run_fault_bench(store, shapes=[SHAPES["supervisor"]], kinds=["tool_wrong_value"], runs=2,
                            model="scripted", seed=0, on_progress=lambda d, t: seen.append((d, t)))
    [row] = bench.rows
    assert row.runs == 2 and len(bench.cases) == 2
    assert row.top1_step == 1.0 and row.agent == 1.0 and row.repaired == 1.0
    steps = len(store.steps(bench.cases[0].truth.run_id))
    for case in bench.cases:  # the bisection's replays, then one replay per fix: the replays that placed it are its control
        assert case.replays <= math.log2(len(store.steps(case.truth.run_id))) + 3, case
    assert all(c.ranked_steps[0] == c.truth.step for c in bench.cases)
    assert row.baselines["last_step"] == 0.0 and steps > 2  # the failure shows at the end, the fault earlier
    assert seen[-1] == (2, 2)
    for case in bench.cases:  # the truth is not in the store: nothing of it in the run or its replays
        assert case.truth.detail not in json.dumps(store.get_run(case.truth.run_id).labels)


def test_a_persistent_tool_bug_is_placed_and_repaired_from_the_store_s_earlier_runs(tmp_path: Path) -> None:
    """The clean runs the faults aim at are the store's earlier runs; kept apart, nothing tells
    the bug's answer from a right one."""
    def bench(clean_store: TraceStore | None) -> object:
        return run_fault_bench(TraceStore.open(str(tmp_path / f"{clean_store is None}.db")), shapes=[SHAPES["swarm"]],
                               kinds=["tool_bug"], runs=2, model="scripted", seed=0, clean_store=clean_store)

    together, apart = bench(None), bench(TraceStore.open(str(tmp_path / "clean.db")))
    [row] = together.rows  # type: ignore[attr-defined]
    assert row.runs == 2 and row.top1_step == 1.0 and row.repaired == 1.0
    assert all(c.replays <= 3 for c in together.cases)  # type: ignore[attr-defined]
    [row] = apart.rows  # type: ignore[attr-defined]
    assert row.runs == 2 and row.repaired == 0.0


def test_a_misleading_description_is_the_tool_s_own(store: TraceStore) -> None:
    clean = _clean(store, supervisor.build)
    faulted = fault_named("misleading_description").inject(supervisor.build, ScriptedTeamModel(), TOOLS, clean,
                                                            random.Random(0))
    assert faulted is not None
    [event] = faulted.events
    tool = event.where
    result = record(faulted.graph, store, workflow="supervisor", check=correct).invoke(TASK)
    step = step_of(event, store.steps(result.run_id))  # the team model's requests carry no descriptions
    assert step is not None and any(c.name == tool for c in step.tool_calls)
    assert event.shows not in TOOLS[tool].description  # the app's own tool is left as it was


def test_the_cli_writes_the_table_the_rows_and_the_truth_apart(tmp_path: Path) -> None:
    out, truth = tmp_path / "bench.json", tmp_path / "truth.jsonl"
    cli = subprocess.run(
        [sys.executable, "-m", "counterfact.cli", "bench", "faults", "--runs", "1", "--shape", "handoff", "--kind",
         "tool_wrong_value", "--json", str(out), "--truth", str(truth), "--db", str(tmp_path / "b.db")],
        capture_output=True, text=True, check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "fault benchmark: 1 faulted runs" in cli.stdout and "tool_wrong_value" in cli.stdout
    data = json.loads(out.read_text())
    keys = {"shape", "kind", "runs", "top1_step", "top3_step", "agent", "repaired", "median_replays", "median_seconds"}
    assert set(data["rows"][0]) == keys and set(data["overall"]) == keys
    assert data["rows"][0]["runs"] == 1 and 0.0 <= data["rows"][0]["top1_step"] <= 1.0
    [line] = truth.read_text().splitlines()
    assert json.loads(line)["kind"] == "tool_wrong_value"
    bad = subprocess.run([sys.executable, "-m", "counterfact.cli", "bench", "faults", "--kind", "gremlins",
                          "--db", str(tmp_path / "c.db")], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no fault kind 'gremlins'")
    assert not (tmp_path / "c.db").exists() or TraceStore.open(str(tmp_path / "c.db")).list_runs() == []


def test_every_shape_offers_tasks_whose_tools_it_may_repeat() -> None:
    for shape in SHAPES.values():
        cases = shape.cases()
        assert cases and len({c.id for c in cases}) == len(cases), shape.name
        for case in cases:
            assert callable(case.build) and callable(case.check)
            assert set(shape.repeatable) <= set(case.tools), shape.name
    assert SHAPES["pipeline"].runs_on("embedded") and not SHAPES["pipeline"].runs_on("scripted")
    assert SHAPES["supervisor"].runs_on("scripted") and not SHAPES["supervisor"].runs_on("local:/m.gguf")


def test_a_judge_reading_the_log_is_scored_as_one_more_baseline(store: TraceStore) -> None:
    from counterfact.agents import ScriptedChatModel
    from counterfact.bench import JUDGE_BASELINE

    judge = ScriptedChatModel(lambda _messages: "Step: 3\nAgent: math_expert\nReason: the sum is wrong")
    bench = run_fault_bench(store, shapes=[SHAPES["supervisor"]], kinds=["tool_wrong_value"], runs=1,
                            model="scripted", seed=0, judge=judge)
    [case] = bench.cases
    assert case.baselines[JUDGE_BASELINE] == 3
    assert bench.rows[0].baselines[JUDGE_BASELINE] == float(case.truth.step == 3)
    assert store.get_run(case.truth.run_id).labels["attribution"]["all_at_once"]["step"] == 3


def test_the_groupchat_shape_is_the_demo_agents_taking_turns_until_an_answer() -> None:
    """The same agents as the pipeline shape, in a group chat: the turn goes round again when
    the reporter gives no final answer, where the pipeline would end."""
    from counterfact.agents import ScriptedChatModel

    model = ScriptedChatModel(["FACTS: none needed", "RESULT: 5", "not sure yet"] * 2 + ["FINAL ANSWER: 5"])
    case = SHAPES["groupchat"].cases()[0]
    graph = case.build(model, case.tools).compile()
    spoke = [next(iter(update)) for update in graph.stream(case.input, stream_mode="updates")]
    assert spoke == ["researcher", "solver", "reporter"] * 2 + ["researcher"]
    assert SHAPES["groupchat"].runs_on("embedded") and not SHAPES["groupchat"].runs_on("scripted")


def test_a_wrong_branch_misroutes_every_time_and_the_earlier_run_places_and_repairs_it(store: TraceStore) -> None:
    """A handoff wired to the wrong agent (a node's `Command`): every step of the node that
    would go there goes elsewhere; the store's clean run of the task shows where it went."""
    bench = run_fault_bench(store, shapes=[SHAPES["handoff"]], kinds=["wrong_branch"], runs=2, model="scripted", seed=0)
    [row] = bench.rows
    assert row.runs == 2 and row.top1_step == 1.0 and row.agent == 1.0 and row.repaired == 1.0
    for case in bench.cases:
        assert "routed to" in case.truth.detail and case.replays <= 3
        steps = store.steps(case.truth.run_id)
        source, wrong = case.truth.agent, case.truth.detail.split("routed to ")[1].split(" instead")[0]
        after = steps[case.truth.step + 1].node if case.truth.step + 1 < len(steps) else "__end__"
        assert steps[case.truth.step].node == source and after == wrong  # the trace shows where it went, not why


def _forked(path_map: bool = True) -> Any:
    """A user's graph whose routing function answers with keys of a path map (or, without
    one, with nodes)."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        n: int
        path: list[str]

    def step(name: str) -> Any:
        return lambda state: {"path": [*state.get("path", []), name]}

    graph = StateGraph(State)
    for name in ("a", "b", "c"):
        graph.add_node(name, step(name))
    graph.add_edge(START, "a")
    if path_map:
        graph.add_conditional_edges("a", lambda s: "left" if s["n"] > 0 else "right", {"left": "b", "right": "c"})
    else:
        graph.add_conditional_edges("a", lambda s: "b" if s["n"] > 0 else "c")
    graph.add_edge("b", END)
    graph.add_edge("c", END)
    return graph


def test_a_wrong_branch_of_a_routing_function_is_undone_by_a_route_edit_given_as_a_node(store: TraceStore) -> None:
    from counterfact.interventions import Budget, Debugger, Replayer

    def check(state: dict[str, Any]) -> bool:
        return state.get("path") == ["a", "b"]

    clean = record(_forked(), store, workflow="forked", check=check).invoke({"n": 1})
    assert clean.status == "succeeded"
    faulted = fault_named("wrong_branch").inject(lambda _m, _t: _forked(), ScriptedTeamModel(), {},
                                                 store.steps(clean.run_id), random.Random(0))
    assert faulted is not None and faulted.target == "the route out of a to b"
    result = record(faulted.graph, store, workflow="forked", check=check).invoke({"n": 1})
    assert result.status == "failed" and [s.node for s in store.steps(result.run_id)] == ["a", "c"]
    [event] = faulted.events
    assert step_of(event, store.steps(result.run_id)).index == 0  # type: ignore[union-attr]
    report = Debugger(Replayer(store, result.run_id, graph=faulted.graph, check=check), strategies=["history"],
                      budget=Budget(replays=4)).run()
    [h] = report.hypotheses
    assert (h.step, h.verdict) == (0, "validated") and h.evidence["usual"] == "b" and h.evidence["went"] == "c"
    assert h.intervention["edits"][0] == {**h.intervention["edits"][0], "kind": "route", "next": "b"}


def test_a_routing_function_without_a_path_map_may_be_sent_to_any_node(store: TraceStore) -> None:
    from counterfact.bench._inject import route_targets

    assert route_targets(_forked(), "a") == ["b", "c"]
    assert route_targets(_forked(path_map=False), "a") == ["a", "b", "c", "__end__"]
    clean = record(_forked(path_map=False), store, workflow="forked").invoke({"n": 1})
    faulted = fault_named("wrong_branch").inject(lambda _m, _t: _forked(path_map=False), ScriptedTeamModel(), {},
                                                 store.steps(clean.run_id), random.Random(1))
    assert faulted is not None and faulted.target == "the route out of a to b"
    path = faulted.graph.compile().invoke({"n": 1}, {"recursion_limit": 25}).get("path", [])
    [event] = faulted.events[:1]
    assert path[:2] != ["a", "b"] and event.shows != "b" and event.node == "a" and event.call == 1


def _looping(command: bool) -> Any:
    """A user's graph whose node `a` goes round three times, then on to `b`: over a
    conditional edge, or by a `Command` of its own."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    class State(TypedDict, total=False):
        n: int

    def after(state: Any) -> str:  # not `State`: LangGraph reads the hints, and State is local
        return "a" if state["n"] < 3 else "b"

    def a(state: Any) -> Any:
        update = {"n": state.get("n", 0) + 1}
        return Command(update=update, goto=after(update)) if command else update

    graph = StateGraph(State)
    if command:
        graph.add_node("a", a, destinations=("a", "b"))
    else:
        graph.add_node("a", a)
        graph.add_conditional_edges("a", after, ["a", "b", END])
    graph.add_node("b", lambda state: {"n": state["n"] * 10})
    graph.add_edge(START, "a")
    graph.add_edge("b", END)
    return graph


@pytest.mark.parametrize("command", [False, True], ids=["conditional edge", "Command"])
def test_a_wrong_branch_taken_again_is_repaired_by_a_fix_to_the_routing_function(store: TraceStore, command: bool) -> None:
    """The route out of `a` ends the run wherever it would go round again: forcing one step's
    route is refuted (the next step ends it again); the same route from that step on repairs it."""
    from langgraph.graph import END

    from counterfact.bench import misrouted
    from counterfact.interventions import Budget, Debugger, Replayer

    def check(state: dict[str, Any]) -> bool:
        return state.get("n") == 30

    clean = record(_looping(command), store, workflow="loop", check=check).invoke({"n": 0})
    assert clean.status == "succeeded" and [s.node for s in store.steps(clean.run_id)] == ["a", "a", "a", "b"]
    events: list[Any] = []
    graph = misrouted(_looping(command), "a", "a", END, events)
    result = record(graph, store, workflow="loop", check=check).invoke({"n": 0})
    assert result.status == "failed" and [s.node for s in store.steps(result.run_id)] == ["a"]
    report = Debugger(Replayer(store, result.run_id, graph=graph, check=check), strategies=["history"],
                      budget=Budget(replays=6)).run()
    [h] = report.hypotheses
    assert (h.step, h.verdict) == (0, "validated")
    one_step, every_step = h.fixes
    assert one_step.verdict == "refuted" and every_step.verdict == "validated"
    assert every_step.intervention["edits"][0]["instead_of"] == END
    assert len(events) > 1  # the fault struck again in the replays: the fix went round it each time


def test_a_route_edit_names_nodes_the_graph_has(store: TraceStore) -> None:
    from counterfact.interventions import Intervention, InterventionError, Replayer
    from counterfact.interventions.edits import StepRef
    from counterfact.interventions.edits.route import RouteEdit

    run = record(_looping(command=True), store, workflow="loop").invoke({"n": 0})
    replayer = Replayer(store, run.run_id, graph=_looping(command=True))
    for edit, field in ((RouteEdit(at=StepRef(step=0), next="c"), "next"),
                        (RouteEdit(at=StepRef(step=0), next="b", instead_of="z"), "instead_of")):
        with pytest.raises(InterventionError, match=f"route: {field}: no node '[cz]' in the graph; it has a, b"):
            replayer.compile(Intervention(edits=[edit]), None)
    plan = replayer.compile(Intervention(edits=[RouteEdit(at=StepRef(step=0), next="b", instead_of="a")]), None)
    assert [(c.node, c.instead_of, c.to) for c in plan.route_changes] == [("a", "a", "b")] and plan.directives.route is None
