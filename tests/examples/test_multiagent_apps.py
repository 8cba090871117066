"""The multi-agent example apps (examples/multiagent) on the deterministic test double: each
finishes correctly in a plain LangGraph run, with its agents handing the conversation over in
the order the app is built for. Fast: no model is loaded or contacted."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from examples.multiagent.common import (
    QUESTIONS,
    Example,
    ScriptedTeamModel,
    chat_model,
    correct,
    population,
    towns_in,
    with_example,
)

APPS = ("supervisor", "swarm", "hierarchical", "handoff")
QUESTION = "What is the population of Lowmoor plus Glenlyn?"

# The agents that run, in order (a step of a nested agent is "team/agent"); consecutive turns
# of one agent count once.
AGENTS = {
    "supervisor": ["supervisor", "researcher", "supervisor", "math_expert", "supervisor"],
    "swarm": ["researcher", "math_expert"],
    "hierarchical": [
        "supervisor",
        "research_team/research_supervisor", "research_team/researcher", "research_team/research_supervisor",
        "supervisor",
        "math_team/math_supervisor", "math_team/math_expert", "math_team/math_supervisor",
        "supervisor",
    ],
    "handoff": ["coordinator", "researcher", "coordinator", "math_expert", "coordinator"],
}
# The recorded steps (top-level node runs): a subgraph node is one step; the hand-written
# agents take one step per model turn.
STEPS = {
    "supervisor": ["supervisor", "researcher", "supervisor", "math_expert", "supervisor"],
    "swarm": ["researcher", "math_expert"],
    "hierarchical": ["supervisor", "research_team", "supervisor", "math_team", "supervisor"],
    "handoff": ["coordinator", "researcher", "researcher", "researcher", "coordinator",
                "math_expert", "math_expert", "coordinator"],
}
# The handoff tools called, in order (langgraph-supervisor's transfer_back_* pairs are added by
# the library, not called by a model).
HANDOFFS = {
    "supervisor": ["transfer_to_researcher", "transfer_back_to_supervisor",
                   "transfer_to_math_expert", "transfer_back_to_supervisor"],
    "swarm": ["transfer_to_math_expert"],
    "hierarchical": ["transfer_to_research_team", "transfer_back_to_supervisor",
                     "transfer_to_math_team", "transfer_back_to_supervisor"],
    "handoff": ["transfer_to_researcher", "transfer_to_coordinator",
                "transfer_to_math_expert", "transfer_to_coordinator"],
}


def _app(name: str) -> ModuleType:
    return importlib.import_module(f"examples.multiagent.{name}")


def _compiled(app: ModuleType) -> CompiledStateGraph:
    builder = app.build(ScriptedTeamModel())
    assert isinstance(builder, StateGraph)  # the uncompiled builder, as record() prefers
    return builder.compile()


def _agents(graph: CompiledStateGraph, question: str) -> list[str]:
    """The agents that ran, in order, from the update stream of every (sub)graph: a
    create_react_agent's own `agent`/`tools` steps are named by its namespace; a team or worker
    node whose inner steps show is left out in favour of them."""
    ran: list[str] = []
    for namespace, update in graph.stream({"messages": [("user", question)]}, stream_mode="updates",
                                          subgraphs=True):
        path = [part.split(":")[0] for part in namespace]
        for node in update:
            if not node.startswith("__"):
                ran.append("/".join(path if node in ("agent", "tools") else [*path, node]))
    inner = [a for a in ran if not any(other.startswith(a + "/") for other in ran)]
    return [a for i, a in enumerate(inner) if i == 0 or inner[i - 1] != a]


@pytest.mark.parametrize("name", APPS)
def test_each_app_answers_correctly_with_its_agents_in_order(name: str) -> None:
    graph = _compiled(_app(name))
    assert _agents(graph, QUESTION) == AGENTS[name]
    final = graph.invoke({"messages": [("user", QUESTION)]})
    assert correct(final), final["messages"][-1]
    assert final["messages"][-1].content == "The answer is 9390."
    handoffs = [c["name"] for m in final["messages"] if isinstance(m, AIMessage) for c in m.tool_calls
                if c["name"].startswith("transfer_")]
    assert handoffs == HANDOFFS[name]


@pytest.mark.parametrize("name", APPS)
def test_each_app_answers_every_question(name: str) -> None:
    graph = _compiled(_app(name))
    for question in QUESTIONS:
        final = graph.invoke({"messages": [("user", question)]})
        assert correct(final), (question, final["messages"][-1])


@pytest.mark.parametrize("name", APPS)
def test_the_tools_are_called_with_the_towns_and_the_populations(name: str) -> None:
    question = "What is the population of Ashby plus Corfe plus Wexham?"
    graph = _compiled(_app(name))
    calls: dict[str, tuple[str, dict[str, Any]]] = {}  # by id: a parent's update repeats its child's
    for _, update in graph.stream({"messages": [("user", question)]}, stream_mode="updates", subgraphs=True):
        for change in update.values():
            for message in (change or {}).get("messages", []) if isinstance(change, dict) else []:
                if isinstance(message, AIMessage):
                    calls.update((c["id"], (c["name"], c["args"])) for c in message.tool_calls
                                 if c["name"] in ("population", "add"))
    towns = [args["town"] for tool, args in calls.values() if tool == "population"]
    additions = [args for tool, args in calls.values() if tool == "add"]
    assert towns == ["Ashby", "Corfe", "Wexham"]
    assert additions == [{"a": 1200, "b": 340}, {"a": 1540, "b": 5025}]


@pytest.mark.parametrize("name", APPS)
def test_each_module_graph_builds_without_a_model_or_network(name: str) -> None:
    app = _app(name)
    assert isinstance(app.graph, StateGraph)
    assert app.correct is correct
    compiled = app.graph.compile()
    assert set(compiled.get_graph().nodes) >= {"__start__", *(a.split("/")[0] for a in AGENTS[name])}
    assert isinstance(app.scripted(), StateGraph)  # the factory replays import


def test_the_default_model_is_the_embedded_one_and_openai_is_one_variable_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from langchain_openai import ChatOpenAI

    from counterfact.agents import ChatCounterfact

    monkeypatch.delenv("COUNTERFACT_EXAMPLE_MODEL", raising=False)
    monkeypatch.delenv("COUNTERFACT_EXAMPLE_TEMPERATURE", raising=False)
    model = chat_model()
    assert isinstance(model, ChatCounterfact) and model.model == "embedded" and model.max_tokens == 96
    monkeypatch.setenv("COUNTERFACT_EXAMPLE_MODEL", "some-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    remote = chat_model()
    assert isinstance(remote, ChatOpenAI) and remote.model_name == "some-model"
    assert remote.temperature == 0 and remote.max_tokens == 96 and remote.max_retries == 0
    assert str(remote.openai_api_base) == "http://127.0.0.1:9/v1"


def test_the_check_reads_the_last_ai_message() -> None:
    question = HumanMessage(QUESTION)
    assert towns_in(QUESTION) == ["lowmoor", "glenlyn"]
    assert correct({"messages": [question, AIMessage("The answer is 9,390.")]})
    assert not correct({"messages": [question, AIMessage("The answer is 9391.")]})
    # a tool result after the answer does not count as the answer
    assert correct({"messages": [question, AIMessage("The answer is 9390."),
                                 ToolMessage("1", tool_call_id="x", name="add")]})
    assert not correct({"messages": [HumanMessage("What is the population of Nowhere?"), AIMessage("0")]})


def test_the_scripted_model_ignores_a_worked_example_before_the_question() -> None:
    prompt = with_example("Look populations up.", Example().look_up().say("The population of Ashby is 1200."))
    model = ScriptedTeamModel().bind_tools([population])
    reply = model.invoke(prompt({"messages": [HumanMessage(QUESTION)]}))
    assert reply.tool_calls == [{"name": "population", "args": {"town": "Lowmoor"}, "id": "call_1",
                                 "type": "tool_call"}]


@pytest.mark.parametrize("name", APPS)
def test_each_app_is_recorded_as_a_successful_run(name: str, tmp_path: Any) -> None:
    from counterfact.graphs import record
    from counterfact.store import TraceStore

    store = TraceStore.open(str(tmp_path / "multiagent.db"))
    ref = f"examples.multiagent.{name}:scripted"
    result = record(_app(name).scripted(), store, workflow=name, ref=ref, check=correct).invoke(
        {"messages": [("user", QUESTION)]}
    )
    assert result.status == "succeeded", result.error
    assert correct(result.state or {})
    assert [step.node for step in store.steps(result.run_id)] == STEPS[name]
