"""What the recorder writes for each step, field by field, on small real LangGraph graphs and a
SQLite file store: node, agent, kind, invocation, input, output, delta, checkpoints, error,
calls; handoffs raised from a subgraph (ParentCommand) and returned (Command); the directives a
replay aims at a step (a forced route, output or handoff message, the nested recursion limit);
the run's own row (labels, config, status, check) and what `resume` runs under."""

from __future__ import annotations

import asyncio
import itertools
import operator
import sys
import time
import types
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph._internal._config import DEFAULT_RECURSION_LIMIT
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

from counterfact.capture import (
    Directives,
    StepDirectives,
    ToolCallRecord,
    current_step,
    digest_of,
    report_tool_call,
    to_jsonable,
    with_directives,
)
from counterfact.graphs import (
    RunConfig,
    check_label,
    find_ref,
    graph_info,
    import_ref,
    lost_database,
    record,
    score_state,
)
from counterfact.graphs._recorder import _as_task_input, _database_error
from counterfact.graphs._refs import _module_ref
from counterfact.store import Outcome, StoreError, TraceStore
from tests.graphs.sample_graphs import loop_graph


class State(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    log: Annotated[list, operator.add]
    seen: Annotated[list, operator.add]


def _store(path: str) -> TraceStore:
    return TraceStore.open(path)


def _line(*nodes: str, ends: bool = True) -> StateGraph:
    """START -> nodes[0] -> nodes[1] ... -> END, each node logging its name."""
    graph = StateGraph(State)
    for name in nodes:
        graph.add_node(name, lambda s, name=name: {"log": [name]})
    graph.add_edge(START, nodes[0])
    for a, b in itertools.pairwise(nodes):
        graph.add_edge(a, b)
    if ends:
        graph.add_edge(nodes[-1], END)
    return graph


def _directed(**steps: StepDirectives) -> RunnableConfig:
    return with_directives(None, Directives(steps={k.replace("_", "#"): v for k, v in steps.items()}))


# -- what each step records ----------------------------------------------------------------


def test_each_step_records_its_node_agent_kind_invocation_payloads_and_checkpoints(sqlite_path: str) -> None:
    @tool
    def double(x: int) -> int:
        """Double x."""
        return 2 * x

    def ask(state: State) -> dict[str, Any]:
        n = len(state.get("log", []))
        call = {"id": f"c{n}", "name": "double", "args": {"x": n + 1}}
        return {"messages": [AIMessage(content=f"ask {n}", tool_calls=[call], id=f"m{n}")], "log": ["ask"]}

    graph = StateGraph(State)
    graph.add_node("ask", ask, metadata={"counterfact": {"agent": "planner", "kind": "plan"}})
    graph.add_node("tools", ToolNode([double]))
    graph.add_node("done", lambda s: {"log": ["done"]}, metadata={"counterfact": {"kind": "router"}})
    graph.add_edge(START, "ask")
    graph.add_edge("ask", "tools")
    graph.add_conditional_edges("tools", lambda s: "ask" if len(s["log"]) < 2 else "done", ["ask", "done"])
    graph.add_edge("done", END)
    store = _store(sqlite_path)
    result = record(graph, store, workflow="w").invoke({"messages": [HumanMessage("go", id="u")]})
    assert result.status == "succeeded" and result.error is None
    steps = store.steps(result.run_id)
    assert [(s.node, s.agent, s.kind, s.invocation, s.index) for s in steps] == [
        ("ask", "planner", "plan", 0, 0), ("tools", "tools", "tool", 0, 1),
        ("ask", "planner", "plan", 1, 2), ("tools", "tools", "tool", 1, 3), ("done", "done", "router", 0, 4)]
    assert [s.error for s in steps] == [None] * 5
    first, tools = steps[0], steps[1]
    assert first.input == [{"role": "user", "content": "go", "id": "u"}]
    assert first.delta == {"log": ["ask"], "messages": [
        {"role": "assistant", "content": "ask 0", "id": "m0",
         "tool_calls": [{"id": "c0", "name": "double", "args": {"x": 1}, "type": "tool_call"}]}]}
    assert first.output == first.delta["messages"][0]
    assert tools.output["content"] == "2" and tools.output["role"] == "tool"
    assert tools.input == [{"role": "user", "content": "go", "id": "u"}, first.output]
    assert steps[3].output["content"] == "4"
    assert steps[4].delta == {"log": ["done"]} and steps[4].output == {"log": ["done"]}
    # each step starts at the checkpoint the previous one ended at, and they differ
    befores = [s.checkpoint_before for s in steps]
    afters = [s.checkpoint_after for s in steps]
    assert befores[1:] == afters[:-1]
    assert None not in befores + afters and len(set(befores + afters)) == 6
    assert len({s.task_id for s in steps}) == 5 and None not in {s.task_id for s in steps}


def test_a_step_that_found_the_history_in_its_update_outputs_what_it_said(sqlite_path: str) -> None:
    def answer(state: State) -> dict[str, Any]:  # writes its own message first, then the history
        return {"messages": [AIMessage("mine", id="a1"), *state["messages"]]}

    graph = StateGraph(State)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    store = _store(sqlite_path)
    result = record(graph, store).invoke({"messages": [HumanMessage("hi", id="h1")]})
    (step,) = store.steps(result.run_id)
    assert step.output == {"role": "assistant", "content": "mine", "id": "a1"}


def test_a_handoff_tools_messages_are_not_the_steps_output(sqlite_path: str) -> None:
    def agent(state: State) -> dict[str, Any]:
        report_tool_call(ToolCallRecord(name="pass_it", handoff="other", result="passed"))
        return {"messages": [
            AIMessage("my answer", id="s1"),
            AIMessage("", id="s2", tool_calls=[{"id": "t1", "name": "pass_it", "args": {}}]),
        ]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_edge(START, "agent")
    store = _store(sqlite_path)
    (step,) = store.steps(record(graph, store).invoke({"messages": [HumanMessage("q", id="q")]}).run_id)
    assert step.output == {"role": "assistant", "content": "my answer", "id": "s1"}
    assert [(c.name, c.handoff, c.result, c.agent) for c in step.tool_calls] == [("pass_it", "other", "passed", None)]


def test_new_messages_get_their_ids_before_the_delta_is_recorded(sqlite_path: str) -> None:
    graph = StateGraph(State)
    graph.add_node("say", lambda s: {"messages": [AIMessage("plain")]})
    graph.add_node("hand", lambda s: Command(goto="last", update={"messages": [AIMessage("by command")]}))
    graph.add_node("last", lambda s: {"log": ["last"]})
    graph.add_edge(START, "say")
    graph.add_edge("say", "hand")
    store = _store(sqlite_path)
    result = record(graph, store).invoke({"messages": [("user", "x")]})
    say, hand, last = store.steps(result.run_id)
    ids = [m.id for m in result.state["messages"]]
    assert len(ids) == 3 and None not in ids
    assert say.delta["messages"][0]["id"] == ids[1] and say.output["id"] == ids[1]
    assert hand.delta["update"]["messages"][0]["id"] == ids[2]
    assert hand.delta["goto"] == "last" and last.node == "last"


def test_a_node_error_is_the_steps_error_and_the_runs(sqlite_path: str) -> None:
    def fails(state: State) -> dict[str, Any]:
        raise ValueError("bad input 7")

    graph = _line("a", "b", ends=False)
    graph.add_node("fails", fails)
    graph.add_edge("b", "fails")
    store = _store(sqlite_path)
    rg = record(graph, store)
    result = rg.invoke({"log": []})
    assert (result.status, result.error, result.state) == ("error", "ValueError: bad input 7", None)
    steps = store.steps(result.run_id)
    assert [s.kind for s in steps] == ["agent", "agent", "agent"]
    assert [(s.node, s.error, s.delta, s.output) for s in steps] == [
        ("a", None, {"log": ["a"]}, {"log": ["a"]}), ("b", None, {"log": ["b"]}, {"log": ["b"]}),
        ("fails", "ValueError: bad input 7", None, None)]
    run = store.get_run(result.run_id)
    assert (run.status, run.error) == ("error", "ValueError: bad input 7")
    assert rg._invocations == {}
    with pytest.raises(ValueError, match="bad input 7"):
        rg.invoke({"log": []}, raise_errors=True)
    continued = rg.continue_run(rg.start_run({}), {"log": []})  # reports the error, raises nothing
    assert (continued.status, continued.error) == ("error", "ValueError: bad input 7")
    assert [r.status for r in store.list_runs()] == ["error", "error", "error"]


def test_an_interrupted_node_is_recorded_once_when_the_run_resumes(sqlite_path: str) -> None:
    def ask_human(state: State) -> dict[str, Any]:
        return {"log": [f"human said {interrupt('yes?')}"]}

    graph = _line("a", ends=False)
    graph.add_node("ask", ask_human)
    graph.add_edge("a", "ask")
    store = _store(sqlite_path)
    rg = record(graph, store)
    first = rg.invoke({"log": []})
    assert first.status == "running" and first.error is None and "__interrupt__" in (first.state or {})
    assert store.get_run(first.run_id).status == "running"
    assert [s.node for s in store.steps(first.run_id)] == ["a"]
    done = rg.continue_run(first.run_id, Command(resume="ok"))
    assert done.status == "succeeded" and done.state["log"] == ["a", "human said ok"]
    steps = store.steps(first.run_id)
    assert [(s.node, s.invocation, s.error, s.delta) for s in steps] == [
        ("a", 0, None, {"log": ["a"]}), ("ask", 0, None, {"log": ["human said ok"]})]
    assert store.get_run(first.run_id).status == "succeeded"


def test_a_graph_run_outside_a_recorded_run_records_nothing(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_routed(), store)
    state = rg.graph.invoke({"log": []}, {"configurable": {"thread_id": "not-a-run"}})
    assert state["log"] == ["a", "b"]
    state = asyncio.run(rg.graph.ainvoke({"log": []}, {"configurable": {"thread_id": "not-a-run-2", "branch": "c"}}))
    assert state["log"] == ["a", "c"]
    assert store.list_runs() == [] and rg._invocations == {}


def test_the_async_path_records_steps_and_obeys_an_output_directive(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_line("a", "b"), store)

    async def run(run_id: str, config: RunnableConfig | None) -> dict[str, Any]:
        rg.saver.attach(run_id, store.run_writer(run_id))
        try:
            return await rg.graph.ainvoke({"log": []}, rg.config(run_id, config), durability="sync")
        finally:
            rg.saver.detach(run_id)

    plain = rg.start_run({})
    assert asyncio.run(run(plain, None))["log"] == ["a", "b"]
    assert [(s.node, s.delta) for s in store.steps(plain)] == [("a", {"log": ["a"]}), ("b", {"log": ["b"]})]
    forced = rg.start_run({})
    state = asyncio.run(run(forced, _directed(a_0=StepDirectives(output={"log": ["forced"]}))))
    assert state["log"] == ["forced", "b"]
    assert [(s.node, s.delta) for s in store.steps(forced)] == [("a", {"log": ["forced"]}), ("b", {"log": ["b"]})]


# -- handoffs --------------------------------------------------------------------------------


def _team_graph(update: dict[str, Any] | None = None) -> StateGraph:
    """A team (a subgraph) whose boss hands off to the parent's `b` with a Command(PARENT)."""

    def boss(state: State) -> Command:
        report_tool_call(ToolCallRecord(name="transfer_to_b", handoff="b", result="Transferred to b."))
        report_tool_call(ToolCallRecord(name="nested_transfer", handoff="b", result="inner", agent="team/helper"))
        report_tool_call(ToolCallRecord(name="lookup", result=3))
        given = update if update is not None else {
            "log": ["boss"], "messages": [AIMessage("first", id="b1"), AIMessage("to b", id="b2")]}
        return Command(graph=Command.PARENT, goto="b", update=given)

    team = StateGraph(State)
    team.add_node("boss", boss)
    team.add_edge(START, "boss")
    graph = StateGraph(State)
    graph.add_node("team", team.compile())
    graph.add_node("b", lambda s: {"log": ["b"]})
    graph.add_node("c", lambda s: {"log": ["c"]})
    graph.add_edge(START, "team")
    return graph


def test_a_handoff_raised_from_a_subgraph_is_the_teams_step(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    result = record(_team_graph(), store).invoke({"messages": [HumanMessage("hi", id="h")]})
    assert result.status == "succeeded" and result.state["log"] == ["boss", "b"]
    team, b = store.steps(result.run_id)
    assert (team.node, team.invocation, team.error, b.node) == ("team", 0, None, "b")
    assert team.delta == {"goto": "b", "graph": None, "resume": None, "update": {"log": ["boss"], "messages": [
        {"role": "assistant", "content": "first", "id": "b1"}, {"role": "assistant", "content": "to b", "id": "b2"}]}}
    assert team.output == {"role": "assistant", "content": "to b", "id": "b2"}
    # the step's own handoff call carries the handoff's message; a nested agent's is its own
    assert [(c.name, c.handoff, c.result, c.agent) for c in team.tool_calls] == [
        ("transfer_to_b", "b", "to b", None), ("nested_transfer", "b", "inner", "team/helper"), ("lookup", None, 3, None)]


def test_a_handoff_without_a_message_keeps_its_tools_result(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    result = record(_team_graph({"log": ["boss"]}), store).invoke({"messages": []})
    team, _ = store.steps(result.run_id)
    assert team.delta == {"goto": "b", "graph": None, "resume": None, "update": {"log": ["boss"]}}
    assert [(c.name, c.handoff, c.result) for c in team.tool_calls] == [
        ("transfer_to_b", "b", "Transferred to b."), ("nested_transfer", "b", "inner"), ("lookup", None, 3)]


def test_a_forced_route_and_message_redirect_a_raised_handoff(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    config = _directed(team_0=StepDirectives(route="c", handoff_message="go to c"))
    result = record(_team_graph(), store).invoke({"messages": [HumanMessage("hi", id="h")]}, config)
    assert result.status == "succeeded" and result.state["log"] == ["boss", "c"]
    assert [(m.id, m.content) for m in result.state["messages"]] == [("h", "hi"), ("b1", "first"), ("b2", "go to c")]
    team, c = store.steps(result.run_id)
    assert c.node == "c"
    assert team.delta == {"goto": "c", "graph": None, "resume": None, "update": {"log": ["boss"], "messages": [
        {"role": "assistant", "content": "first", "id": "b1"}, {"role": "assistant", "content": "go to c", "id": "b2"}]}}
    assert [(c.name, c.handoff, c.result) for c in team.tool_calls] == [
        ("transfer_to_b", "c", "go to c"), ("nested_transfer", "b", "inner"), ("lookup", None, 3)]


def test_a_handoff_message_alone_keeps_the_handoffs_route(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    result = record(_team_graph(), store).invoke({"messages": []}, _directed(team_0=StepDirectives(handoff_message="new")))
    assert result.state["log"] == ["boss", "b"]
    team, _ = store.steps(result.run_id)
    assert team.delta["goto"] == "b" and team.delta["update"]["messages"][-1]["content"] == "new"


def _commanding() -> StateGraph:
    graph = StateGraph(State)
    graph.add_node("a", lambda s: Command(goto="b", update={"log": ["a"], "messages": [AIMessage("to b", id="x")]}))
    graph.add_node("b", lambda s: {"log": ["b"]})
    graph.add_node("c", lambda s: {"log": ["c"]})
    graph.add_edge(START, "a")
    return graph


def test_a_returned_command_is_recorded_and_redirected_by_a_forced_route(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_commanding(), store)
    plain = rg.invoke({"messages": []})
    a, b = store.steps(plain.run_id)
    assert b.node == "b" and a.delta == {"goto": "b", "graph": None, "resume": None, "update": {
        "log": ["a"], "messages": [{"role": "assistant", "content": "to b", "id": "x"}]}}
    routed = rg.invoke({"messages": []}, _directed(a_0=StepDirectives(route="c", handoff_message="now c")))
    assert routed.state["log"] == ["a", "c"] and [m.content for m in routed.state["messages"]] == ["now c"]
    a, c = store.steps(routed.run_id)
    assert (a.delta["goto"], a.delta["update"]["messages"][0]["content"], c.node) == ("c", "now c", "c")
    # a directive aimed at another invocation leaves the step alone
    other = rg.invoke({"messages": []}, _directed(a_1=StepDirectives(route="c")))
    assert other.state["log"] == ["a", "b"]


def test_a_forced_route_on_a_plain_update_becomes_a_command(sqlite_path: str) -> None:
    graph = StateGraph(State)
    graph.add_node("a", lambda s: {"log": ["a"], "messages": [AIMessage("said", id="m")]})
    graph.add_node("quiet", lambda s: None)
    graph.add_node("b", lambda s: {"log": ["b"]})
    graph.add_node("c", lambda s: {"log": ["c"]})
    graph.add_edge(START, "a")
    graph.add_edge(START, "quiet")
    store = _store(sqlite_path)
    rg = record(graph, store)
    result = rg.invoke({"log": []}, _directed(a_0=StepDirectives(route="b"),
                                               quiet_0=StepDirectives(route="c", handoff_message="unsaid")))
    assert sorted(result.state["log"]) == ["a", "b", "c"]
    steps = {s.node: s for s in store.steps(result.run_id)}
    assert steps["a"].delta == {"goto": "b", "graph": None, "resume": None,
                                "update": {"log": ["a"], "messages": [{"role": "assistant", "content": "said", "id": "m"}]}}
    assert steps["quiet"].delta == {"goto": "c", "graph": None, "resume": None, "update": None}
    # a message alone does not touch a plain update: it is not a handoff
    alone = rg.invoke({"log": []}, _directed(a_0=StepDirectives(handoff_message="other")))
    a = next(s for s in store.steps(alone.run_id) if s.node == "a")
    assert a.delta == {"log": ["a"], "messages": [{"role": "assistant", "content": "said", "id": "m"}]}
    assert sorted(alone.state["log"]) == ["a"]


def pick(state: State, config: RunnableConfig) -> str:
    """A conditional edge that reads the state and the config."""
    assert state["log"][-1] == "a"
    return str(config["configurable"].get("branch", "b"))


def _routed() -> StateGraph:
    graph = StateGraph(State)
    graph.add_node("a", lambda s: {"log": ["a"]})
    graph.add_node("b", lambda s: {"log": ["b"]})
    graph.add_node("c", lambda s: {"log": ["c"]})
    graph.add_edge(START, "a")
    graph.add_conditional_edges("a", pick, ["b", "c"])
    return graph


class _Chains(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str | None] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.names.append(kwargs.get("name"))


def test_a_conditional_edge_runs_as_the_users_own_once(sqlite_path: str) -> None:
    """The recorder's wrapper of a conditional edge passes the state and config on and is
    not traced itself: the user's callbacks see what they see without counterfact."""
    plain = _Chains()
    _routed().compile().invoke({"log": []}, {"callbacks": [plain], "configurable": {"branch": "c"}})
    store = _store(sqlite_path)
    rg = record(_routed(), store)
    seen = _Chains()
    result = rg.invoke({"log": []}, {"callbacks": [seen], "configurable": {"branch": "c"}})
    assert result.state["log"] == ["a", "c"]
    assert seen.names == plain.names == ["LangGraph", "a", "pick", "c"]


def test_a_forced_route_at_a_routed_node_goes_through_its_conditional_edge(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_routed(), store)
    assert rg.invoke({"log": []}).state["log"] == ["a", "b"]
    result = rg.invoke({"log": []}, _directed(a_0=StepDirectives(route="c")))
    assert result.state["log"] == ["a", "c"]
    a, c = store.steps(result.run_id)
    assert (a.delta, c.node) == ({"log": ["a"]}, "c")  # the edge routes: no Command of its own
    assert rg._invocations == {}
    # the edge obeys the route on the async path too, and routes by itself without one
    for directives, branch, expected in ((_directed(a_0=StepDirectives(route="c")), "b", ["a", "c"]),
                                         (None, "c", ["a", "c"]), (None, "b", ["a", "b"])):
        run_id = rg.start_run({})
        rg.saver.attach(run_id, store.run_writer(run_id))
        config = dict(rg.config(run_id, directives))
        config["configurable"] = {**config["configurable"], "branch": branch}
        try:
            state = asyncio.run(rg.graph.ainvoke({"log": []}, config, durability="sync"))
        finally:
            rg.saver.detach(run_id)
        assert state["log"] == expected


def test_an_output_directive_stands_for_the_node(sqlite_path: str) -> None:
    ran: list[str] = []

    def a(state: State) -> dict[str, Any]:
        ran.append("a")
        return {"log": ["a"]}

    graph = StateGraph(State)
    graph.add_node("a", a)
    graph.add_edge(START, "a")
    store = _store(sqlite_path)
    output = {"messages": [{"role": "assistant", "content": "given", "id": "g"}], "log": ["given"]}
    result = record(graph, store).invoke({"log": []}, _directed(a_0=StepDirectives(output=output)))
    assert ran == [] and result.state["log"] == ["given"]
    assert [(m.id, m.content) for m in result.state["messages"]] == [("g", "given")]
    (step,) = store.steps(result.run_id)
    assert step.delta == {"log": ["given"], "messages": [{"role": "assistant", "content": "given", "id": "g"}]}


# -- config --------------------------------------------------------------------------------


def _config_reader() -> StateGraph:
    def read(state: State, config: RunnableConfig) -> dict[str, Any]:
        configurable = config.get("configurable", {})
        assert state["seen"] == [], state  # what the node is given is the state
        return {"seen": [(configurable.get("user"), config.get("recursion_limit"), configurable.get("thread_id"))]}

    graph = StateGraph(State)
    graph.add_node("read", read)
    graph.add_edge(START, "read")
    return graph


def test_a_subgraph_in_a_step_runs_under_the_nested_recursion_limit(sqlite_path: str) -> None:
    graph = StateGraph(State)
    graph.add_node("team", _config_reader().compile())
    graph.add_edge(START, "team")
    store = _store(sqlite_path)
    rg = record(graph, store)
    plain = rg.invoke({"seen": []}, {"recursion_limit": 40})
    assert plain.state["seen"][0][1] == 40
    nested = rg.invoke({"seen": []}, with_directives({"recursion_limit": 40}, Directives(nested_recursion_limit=7)))
    assert nested.state["seen"][0][1] == 7
    assert [s.node for s in store.steps(nested.run_id)] == ["team"]


def test_the_runs_config_reaches_its_nodes_and_is_kept_with_it(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_config_reader(), store)
    config: RunnableConfig = {"recursion_limit": 9, "configurable": {
        "user": "ann", "thread_id": "mine", "checkpoint_ns": "", "__hidden": 1, "client": object(), "n": [1, 2]}}
    result = rg.invoke({"seen": []}, config, run_id="run-1")
    assert result.run_id == "run-1"
    assert result.state["seen"] == [("ann", 9, "run-1")]
    assert store.get_run("run-1").labels["config"] == {"recursion_limit": 9, "configurable": {"user": "ann", "n": [1, 2]}}
    bare = rg.invoke({"seen": []})
    assert "config" not in store.get_run(bare.run_id).labels
    assert bare.state["seen"] == [(None, None, bare.run_id)]


def test_run_config_keeps_the_limit_and_json_keys_only() -> None:
    kept = RunConfig.of({"recursion_limit": 3, "configurable": {"a": 1, "thread_id": "t", "checkpoint_id": "c",
                                                               "checkpoint_map": {}, "__x": 2, "f": print}})
    assert (kept.recursion_limit, kept.configurable) == (3, {"a": 1})
    assert kept.label() == {"recursion_limit": 3, "configurable": {"a": 1}} and kept.limit() == 3
    assert RunConfig.of({"recursion_limit": "3"}).recursion_limit is None
    assert RunConfig.of(None).label() == {} and RunConfig.of(None).limit() == DEFAULT_RECURSION_LIMIT
    assert RunConfig.of({"configurable": None}).configurable == {}


class _Seen(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1


def test_the_users_callbacks_and_the_recorders_capture_both_see_model_calls(sqlite_path: str) -> None:
    model = FakeListChatModel(responses=["one", "two"])

    def chat(state: State, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [model.invoke("hello", config)]}

    graph = StateGraph(State)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    store = _store(sqlite_path)
    rg = record(graph, store)
    listed, managed = _Seen(), _Seen()
    first = rg.invoke({"messages": []}, {"callbacks": [listed]})
    manager = CallbackManager([managed], inheritable_handlers=[managed])
    second = rg.invoke({"messages": []}, {"callbacks": manager})
    assert (listed.starts, managed.starts) == (1, 1)
    assert manager.handlers == [managed] and manager.inheritable_handlers == [managed]  # the user's is not changed
    for run_id, text in ((first.run_id, "one"), (second.run_id, "two")):
        (step,) = store.steps(run_id)
        assert [c.response["content"] for c in step.model_calls] == [text]
        assert step.output["content"] == text


# -- the run's row -------------------------------------------------------------------------


def passes(state: Any) -> bool:
    return state.get("log") == ["a"]


def test_a_run_row_holds_its_input_labels_and_lineage(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_line("a"), store, workflow="line", check=passes)
    run_id = rg.start_run({"q": 1}, run_id="r1", labels={"split": "dev", "input_digest": "mine"},
                          parent_run_id=None, fork_step=None, intervention_id=None)
    assert run_id == "r1"
    run = store.get_run("r1")
    assert (run.workflow, run.workflow_hash, run.task_input, run.status) == ("line", rg.info.digest, {"q": 1}, "running")
    assert run.labels == {"graph": rg.info.model_dump(mode="json"), "input_digest": "mine",
                          "check": {"function": f"{__name__}:passes"}, "split": "dev"}
    child = rg.start_run(None, parent_run_id="r1", fork_step=2, intervention_id="i9")
    row = store.get_run(child)
    assert (row.parent_run_id, row.fork_step, row.intervention_id, row.task_input) == ("r1", 2, "i9", {})
    assert row.labels["input_digest"] == digest_of(to_jsonable({})) and len(child) == 32
    unchecked = record(_line("a"), store)
    assert "check" not in store.get_run(unchecked.start_run({"q": 2})).labels
    given = unchecked.invoke({"log": []}, task_input={"question": "why"})
    assert store.get_run(given.run_id).task_input == {"question": "why"}
    derived = unchecked.invoke({"log": ["x"]})
    run = store.get_run(derived.run_id)
    assert run.task_input == {"log": ["x"]} and run.labels["input_digest"] == digest_of(to_jsonable({"log": ["x"]}))
    assert _as_task_input([1, 2]) == {"input": [1, 2]} and _as_task_input({"a": 1}) == {"a": 1}


def test_a_check_decides_succeeded_or_failed(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    good = record(_line("a"), store, check=passes).invoke({"log": []})
    assert good.status == "succeeded" and store.get_run(good.run_id).status == "succeeded"
    assert store.get_run(good.run_id).outcome == Outcome(success=True, score=1.0)
    bad = record(_line("a", "b"), store, check=passes).invoke({"log": []})
    assert bad.status == "failed" and store.get_run(bad.run_id).status == "failed"
    by_ref = record(_line("a", "b"), store, check=f"{__name__}:passes")
    assert by_ref.check is passes and by_ref.invoke({"log": []}).status == "failed"
    unfinished = record(_line("a"), store, check=passes)
    run_id = unfinished.start_run({})
    kept = unfinished.continue_run(run_id, {"log": []}, finish=False)
    assert kept.status == "succeeded" and store.get_run(run_id).status == "running"
    assert store.get_run(run_id).outcome is None
    assert score_state(passes, {"log": ["a"]}) == Outcome(success=True, score=1.0)
    assert score_state(lambda s: 0.5, {}) == Outcome(success=False, score=0.5)
    assert score_state(lambda s: None, {}) == Outcome(success=False, score=0.0)


def test_a_lost_database_leaves_the_run_running_to_resume(sqlite_path: str) -> None:
    def cut(state: State) -> dict[str, Any]:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection\nmore"))

    graph = _line("a", ends=False)
    graph.add_node("cut", cut)
    graph.add_edge("a", "cut")
    store = _store(sqlite_path)
    rg = record(graph, store)
    result = rg.invoke({"log": []})
    assert (result.status, result.state) == ("running", None)
    assert result.error == ("the store failed in the middle of the run (server closed the connection): "
                            "resume it once the database is back")
    assert store.get_run(result.run_id).status == "running"
    with pytest.raises(OperationalError):
        rg.invoke({"log": []}, raise_errors=True)


def test_a_lost_database_that_said_nothing_is_named_by_its_error_type(sqlite_path: str) -> None:
    def cut(state: State) -> dict[str, Any]:
        raise OperationalError("SELECT 1", {}, ConnectionResetError())

    graph = StateGraph(State)
    graph.add_node("cut", cut)
    graph.add_edge(START, "cut")
    result = record(graph, _store(sqlite_path)).invoke({"log": []})
    assert (result.status, result.error) == (
        "running", "the store failed in the middle of the run (ConnectionResetError): resume it once the database is back")


# -- resume --------------------------------------------------------------------------------


def test_resume_runs_under_the_runs_own_config(sqlite_path: str) -> None:
    crashes = {"left": 1}

    def read(state: State, config: RunnableConfig) -> dict[str, Any]:
        if crashes["left"]:
            crashes["left"] -= 1
            raise KeyboardInterrupt
        configurable = config["configurable"]
        return {"seen": [(configurable.get("user"), config.get("recursion_limit"), configurable.get("k"))]}

    graph = _line("a", ends=False)
    graph.add_node("read", read)
    graph.add_edge("a", "read")
    store = _store(sqlite_path)
    rg = record(graph, store)
    run_id = rg.start_run({}, labels={"config": {"recursion_limit": 13, "configurable": {"user": "ann", "k": 1}}})
    with pytest.raises(KeyboardInterrupt):
        rg.continue_run(run_id, {"log": []}, config={"recursion_limit": 13, "configurable": {"user": "ann"}})
    assert store.get_run(run_id).status == "running"
    result = rg.resume(run_id[:12], config={"configurable": {"user": "bob"}})
    assert result.status == "succeeded" and result.state["seen"] == [("bob", 13, 1)]
    assert [s.node for s in store.steps(run_id)] == ["a", "read"]
    with pytest.raises(StoreError, match=f"run {run_id} already finished \\(succeeded\\); nothing to resume"):
        rg.resume(run_id)

    crashes["left"] = 1
    again = rg.start_run({})
    with pytest.raises(KeyboardInterrupt):
        rg.continue_run(again, {"log": []})
    assert rg.resume(again).state["seen"] == [(None, None, None)]


def test_resume_refuses_a_failed_run_and_one_without_a_checkpoint(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    rg = record(_line("a", "b"), store, check=passes)
    failed = rg.invoke({"log": []})
    assert failed.status == "failed"
    with pytest.raises(StoreError, match=r"already finished \(failed\)"):
        rg.resume(failed.run_id)
    empty = rg.start_run({})
    with pytest.raises(StoreError, match=f"^run {empty} has no checkpoint to resume from$"):
        rg.resume(empty)
    errored = record(_line("a"), store)
    run_id = errored.start_run({})
    store.finish_run(run_id, "error", error="boom")
    with pytest.raises(StoreError, match="no checkpoint"):  # an error run may be resumed
        errored.resume(run_id)


def test_record_keeps_a_compiled_graphs_name_and_interrupts(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    compiled = _line("a", "b").compile(name="named", interrupt_before=["b"])
    rg = record(compiled, store)
    assert rg.workflow == "named"
    first = rg.invoke({"log": []})
    # stopped at the breakpoint: the run waits (it was recorded as succeeded, and `resume`
    # then refused it), and goes on from there
    assert (first.status, first.state["log"]) == ("running", ["a"])
    assert [s.node for s in store.steps(first.run_id)] == ["a"]
    run = store.get_run(first.run_id)
    assert (run.workflow, run.status) == ("named", "running")
    done = rg.resume(first.run_id)
    assert (done.status, done.state["log"]) == ("succeeded", ["a", "b"])
    assert [s.node for s in store.steps(first.run_id)] == ["a", "b"]
    after = record(_line("a", "b").compile(interrupt_after=["a"]), store, workflow="given", check=passes)
    stopped = after.invoke({"log": []})
    assert after.workflow == "given" and stopped.status == "running"
    assert store.get_run(stopped.run_id).outcome is None  # not scored on half a run
    assert after.continue_run(stopped.run_id, None).status == "failed"
    last = record(_line("a", "b").compile(interrupt_after=["b"]), store).invoke({"log": []})
    assert last.status == "succeeded"  # a breakpoint after the last node: nothing left to run
    assert record(_line("a"), store).workflow == "graph"
    with pytest.raises(TypeError, match="record\\(\\) takes a StateGraph or compiled graph, not int"):
        record(3, store)  # type: ignore[arg-type]


@pytest.mark.parametrize("messages", [[("ai", "tuple")], AIMessage("single", id="one"), []])
def test_a_handoff_message_leaves_messages_it_cannot_rewrite(sqlite_path: str, messages: Any) -> None:
    graph = StateGraph(State)
    graph.add_node("a", lambda s: Command(goto="b", update={"messages": messages, "log": ["a"]}))
    graph.add_node("b", lambda s: {"log": ["b"]})
    graph.add_edge(START, "a")
    store = _store(sqlite_path)
    result = record(graph, store).invoke({"log": []}, _directed(a_0=StepDirectives(handoff_message="new")))
    assert result.status == "succeeded" and result.state["log"] == ["a", "b"]
    assert "new" not in [m.content for m in result.state["messages"]]
    (a, _) = store.steps(result.run_id)
    assert a.delta["goto"] == "b" and a.delta["update"]["log"] == ["a"]


# -- what a run keeps of its graph and check -------------------------------------------------


LOOP = loop_graph()
_HIDDEN = _line("hidden")


def test_a_module_level_graph_is_found_by_reference(sqlite_path: str) -> None:
    store = _store(sqlite_path)
    found = record(LOOP, store)  # its nodes live in another module: found by the scan
    assert found.info.ref == f"{__name__}:LOOP" and find_ref(LOOP) == f"{__name__}:LOOP"
    run = store.get_run(found.start_run({}))
    assert run.labels["graph"]["ref"] == f"{__name__}:LOOP"
    assert record(LOOP, store, ref="elsewhere:graph").info.ref == "elsewhere:graph"
    assert find_ref(_HIDDEN) is None and record(_HIDDEN, store).info.ref is None  # a private name only
    assert find_ref(_line("nowhere")) is None


def test_graph_info_lists_nodes_and_edges() -> None:
    info = graph_info(_routed().compile(), "m:g")
    assert info.ref == "m:g" and info.nodes == ["__end__", "__start__", "a", "b", "c"]
    assert info.edges == [["__start__", "a", False], ["a", "b", True], ["a", "c", True],
                          ["b", "__end__", False], ["c", "__end__", False]]
    assert info.digest == digest_of({"nodes": info.nodes, "edges": info.edges})


def test_import_ref_reads_modules_files_and_dotted_attributes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os.path

    assert import_ref("os.path:join") is os.path.join
    assert import_ref(f"{__name__}:_Chains.on_chain_start") is _Chains.on_chain_start
    weird = tmp_path / "we:ird.py"
    weird.write_text("class Box:\n    value = 41\n")
    assert import_ref(f"{weird}:Box.value") == 41
    assert sys.modules["_counterfact_ref_we:ird"].Box.value == 41
    for bad in ("nocolon", ":attr", "module:"):
        with pytest.raises(ImportError, match=f"^{bad!r} is not of the form module:attribute$"):
            import_ref(bad)
    with pytest.raises(ImportError, match="^no file missing.py$"):
        import_ref("missing.py:x")
    # the user's own modules, from the working directory, as `python -m` finds them
    (tmp_path / "cf_user_module_xyz.py").write_text("VALUE = 'mine'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert import_ref("cf_user_module_xyz:VALUE") == "mine" and sys.path[0] == str(tmp_path)
    monkeypatch.setattr(sys, "path", ["", *sys.path[1:]])
    import_ref("cf_user_module_xyz:VALUE")
    assert sys.path[0] == "" and str(tmp_path) not in sys.path


def test_module_ref_names_main_by_its_file() -> None:
    main = types.ModuleType("__main__")
    main.__file__ = "some/app.py"
    assert _module_ref(main) == str(Path("some/app.py").resolve())
    assert _module_ref(types.ModuleType("__main__")) == "__main__"
    other = types.ModuleType("pkg.app")
    other.__file__ = "pkg/app.py"
    assert _module_ref(other) == "pkg.app"


class _Threshold(BaseModel):
    at: datetime = datetime(2020, 1, 2, 3, 4, 5)
    level: float = 0.5


class _Callable:
    def __call__(self, state: Any) -> bool:
        return True


def test_check_labels_say_how_to_rebuild_the_check() -> None:
    assert check_label(None) is None
    assert check_label("pkg.mod:fn") == {"function": "pkg.mod:fn"}
    assert check_label(_Threshold()) == {"at": "2020-01-02T03:04:05", "level": 0.5}
    assert check_label(passes) == {"function": f"{__name__}:passes"}
    assert check_label(lambda s: True) is None
    assert check_label(_Callable()) is None  # an instance: no qualified name

    def local(state: Any) -> bool:
        return True

    assert check_label(local) is None


def test_score_state_reads_every_kind_of_check_result() -> None:
    def raises(state: Any) -> bool:
        raise KeyError("gone")

    def given(value: Any) -> Any:
        return lambda state: value

    assert score_state(raises, {}) == Outcome(success=False, score=0.0, detail="the check raised KeyError: 'gone'")
    assert score_state(given(True), {}) == Outcome(success=True, score=1.0)
    assert score_state(given(False), {}) == Outcome(success=False, score=0.0)
    assert score_state(given(1), {}) == Outcome(success=True, score=1.0)
    assert score_state(given(1.5), {}) == Outcome(success=True, score=1.5)
    assert score_state(given(0.99), {}) == Outcome(success=False, score=0.99)
    assert score_state(lambda state: state["x"], {"x": 0.25}) == Outcome(success=False, score=0.25)
    assert score_state(given("yes"), {}) == Outcome(success=False, detail="the check returned str, not a bool or a score")
    mine = Outcome(success=True, score=0.75, milestones=["m"])
    assert score_state(given(mine), {}) is mine


def _chained(*errors: BaseException) -> BaseException:
    """errors[0], caused by errors[1], caused by errors[2] ... (causes only, no context)."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_a_lost_database_is_found_a_few_causes_down() -> None:
    orig = Exception("connection reset")
    lost = OperationalError("SELECT 1", {}, orig)
    assert lost_database(lost) and _database_error(lost) is orig
    assert lost_database(PendingRollbackError("rolled back"))
    assert not lost_database(ValueError("graph"))
    assert not lost_database(DBAPIError("SELECT 1", {}, Exception("constraint")))
    assert lost_database(DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True))
    wrapped = _chained(RuntimeError("store"), ValueError("middle"), lost)
    assert lost_database(wrapped) and _database_error(wrapped) is orig
    by_context = RuntimeError("store")
    by_context.__context__ = lost
    assert lost_database(by_context) and _database_error(by_context) is orig
    deep = [ValueError(str(n)) for n in range(7)]
    assert lost_database(_chained(*deep, OperationalError("s", {}, orig)))  # the 8th link
    deeper = [ValueError(str(n)) for n in range(8)]
    assert not lost_database(_chained(*deeper, OperationalError("s", {}, orig)))  # the 9th: too far
    plain = ValueError("not the store")
    assert _database_error(plain) is plain
    no_orig = _chained(RuntimeError("x"), DBAPIError("s", {}, None))  # type: ignore[arg-type]
    assert _database_error(no_orig) is no_orig


def test_code_in_a_step_knows_its_address(sqlite_path: str) -> None:
    def where(state: State) -> dict[str, Any]:
        here = current_step()
        assert here is not None
        return {"seen": [(here.run_id, here.node, here.invocation)], "log": ["w"]}

    graph = StateGraph(State)
    graph.add_node("where", where)
    graph.add_edge(START, "where")
    graph.add_conditional_edges("where", lambda s: "where" if len(s["log"]) < 2 else END, ["where", END])
    store = _store(sqlite_path)
    result = record(graph, store).invoke({"log": []})
    assert result.state["seen"] == [(result.run_id, "where", 0), (result.run_id, "where", 1)]


def test_each_step_is_stored_before_the_next_one_runs(sqlite_path: str) -> None:
    """Durability "sync": a step is in the store once the node after it starts (a crash then
    loses at most the step running), and the run's writer is let go at the end."""
    store = _store(sqlite_path)

    def count(state: State) -> dict[str, Any]:
        here = current_step()
        assert here is not None
        return {"seen": [len(store.steps(here.run_id))], "log": [here.node]}

    graph = StateGraph(State)
    for name in ("a", "b", "c", "d"):
        graph.add_node(name, count)
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.add_edge("c", "d")
    rg = record(graph, store)
    for _ in range(5):
        result = rg.invoke({"log": []})
        assert result.state["seen"] == [0, 1, 2, 3]
        assert rg.saver.writer(result.run_id) is None


def test_a_graph_whose_state_is_not_a_mapping_returns_it_as_the_result(sqlite_path: str) -> None:
    graph = StateGraph(Annotated[list, operator.add])
    graph.add_node("a", lambda s: ["x"])
    graph.add_edge(START, "a")
    store = _store(sqlite_path)
    result = record(graph, store).invoke(["in"])
    assert (result.status, result.state) == ("succeeded", {"result": ["in", "x"]})
    (step,) = store.steps(result.run_id)
    assert step.delta == ["x"] and store.get_run(result.run_id).task_input == {"input": ["in"]}


def test_a_node_outside_a_recorded_run_gets_its_config(sqlite_path: str) -> None:
    rg = record(_config_reader(), _store(sqlite_path))
    config: RunnableConfig = {"configurable": {"thread_id": "t-1", "user": "zed"}, "recursion_limit": 11}
    assert rg.graph.invoke({"seen": []}, config)["seen"] == [("zed", 11, "t-1")]
    config = {"configurable": {"thread_id": "t-2", "user": "amy"}, "recursion_limit": 12}
    assert asyncio.run(rg.graph.ainvoke({"seen": []}, config))["seen"] == [("amy", 12, "t-2")]


def test_a_step_ends_when_its_node_returns(sqlite_path: str) -> None:
    def slow(state: State) -> dict[str, Any]:
        time.sleep(0.2)
        return {"log": ["slow"]}

    graph = StateGraph(State)
    graph.add_node("slow", slow)
    graph.add_edge(START, "slow")
    store = _store(sqlite_path)
    (step,) = store.steps(record(graph, store).invoke({"log": []}).run_id)
    assert 0.2 <= (step.ended_at - step.started_at).total_seconds() < 5


class _PlainMessages(TypedDict, total=False):
    messages: list  # no reducer: whatever the nodes put there, dicts here
    log: Annotated[list, operator.add]


def test_a_state_of_plain_message_dicts_is_recorded(sqlite_path: str) -> None:
    graph = StateGraph(_PlainMessages)
    graph.add_node("say", lambda s: {"messages": [*s["messages"], {"role": "assistant", "content": "hi"}], "log": ["say"]})
    graph.add_edge(START, "say")
    store = _store(sqlite_path)
    result = record(graph, store).invoke({"messages": [{"role": "user", "content": "hello"}]})
    assert result.status == "succeeded", result.error
    (step,) = store.steps(result.run_id)
    assert step.input == [{"role": "user", "content": "hello"}]
    assert step.output == {"role": "assistant", "content": "hi"}


def test_the_async_path_gives_nodes_their_state_and_the_nested_recursion_limit(sqlite_path: str) -> None:
    def count(state: State) -> dict[str, Any]:
        return {"log": [f"after {len(state['log'])}"]}

    graph = StateGraph(State)
    graph.add_node("first", count)
    graph.add_node("team", _config_reader().compile())
    graph.add_edge(START, "first")
    graph.add_edge("first", "team")
    store = _store(sqlite_path)
    rg = record(graph, store)

    def run(config: RunnableConfig | None) -> dict[str, Any]:
        run_id = rg.start_run({})
        rg.saver.attach(run_id, store.run_writer(run_id))
        try:
            return asyncio.run(rg.graph.ainvoke({"log": ["x"], "seen": []}, rg.config(run_id, config), durability="sync"))
        finally:
            rg.saver.detach(run_id)

    plain = run({"recursion_limit": 40})
    assert plain["log"][:2] == ["x", "after 1"] and plain["seen"][0][1] == 40  # (the team returns the log again)
    # the step records the messages the node was given
    with_messages = rg.start_run({})
    rg.saver.attach(with_messages, store.run_writer(with_messages))
    try:
        asyncio.run(rg.graph.ainvoke({"log": [], "seen": [], "messages": [HumanMessage("hey", id="h")]},
                                     rg.config(with_messages), durability="sync"))
    finally:
        rg.saver.detach(with_messages)
    assert store.steps(with_messages)[0].input == [{"role": "user", "content": "hey", "id": "h"}]
    nested = run(with_directives({"recursion_limit": 40}, Directives(nested_recursion_limit=7)))
    assert nested["log"][:2] == ["x", "after 1"] and nested["seen"][0][1] == 7
    # outside a recorded run the nodes get their state too
    outside = asyncio.run(rg.graph.ainvoke({"log": ["x", "y"], "seen": []}, {"configurable": {"thread_id": "free"}}))
    assert outside["log"][:3] == ["x", "y", "after 2"]


ROUTED = _routed()


def test_find_ref_looks_in_the_nodes_module_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound in two modules, a graph is named where its nodes are defined (here), not where
    the scan of every loaded module would meet it first."""
    import counterfact.capture._handoffs as earlier

    monkeypatch.setattr(earlier, "ALIAS", ROUTED, raising=False)
    assert list(sys.modules).index(earlier.__name__) < list(sys.modules).index(__name__)
    assert find_ref(ROUTED) == f"{__name__}:ROUTED"


def test_import_ref_adds_the_working_directory_once(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cf_user_module_once.py").write_text("VALUE = 'once'\n")
    monkeypatch.chdir(tmp_path)
    kept = ["/elsewhere", str(tmp_path), *[p for p in sys.path if p not in ("", str(tmp_path))]]
    monkeypatch.setattr(sys, "path", list(kept))
    assert import_ref("cf_user_module_once:VALUE") == "once"
    assert sys.path == kept
