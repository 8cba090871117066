"""Capture of a user's LangChain calls, as the recorder sets it up by itself:

- `record()` adds its own `CallCapture` to the run's config: a run given no callback handler
  at all, and a replay of it, still record their model and tool calls (the capture tests pass
  their own handler, which hid a recorder that stopped adding one);
- a tool call that ends on another thread than it started on is recorded under the step where
  it started: ended on a bare thread (no step there), or by a parallel step's thread (the
  wrong step there).
"""

from __future__ import annotations

import operator
import queue
import threading
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from counterfact.agents import (
    ChatMessage,
    Completion,
    ScriptedChatModel,
    ToolCall,
    Usage,
    create_app,
    running_server,
)
from counterfact.graphs import record
from counterfact.interventions import Replayer, parse_intervention
from counterfact.store import TraceStore

MODEL = "guard-capture"


def _script(messages: list[ChatMessage]) -> Completion:
    usage = Usage(prompt_tokens=4, completion_tokens=2)
    if messages[-1].role == "tool":
        return Completion(text=f"the sum is {messages[-1].content}", usage=usage)
    return Completion(text="", tool_calls=[ToolCall(id="call_1", name="add", arguments={"a": 2, "b": 3})], usage=usage)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_server(create_app(ScriptedChatModel(_script, name=MODEL))) as url:
        yield url


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _agent(chat: ChatOpenAI) -> StateGraph:
    bound = chat.bind_tools([add])

    def prompt(state: MessagesState) -> list[BaseMessage]:
        return [SystemMessage("be brief"), *state["messages"]]

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(prompt(state))]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([add]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


def test_a_run_given_no_handler_of_its_own_records_model_and_tool_calls(sqlite_path: str, base_url: str) -> None:
    store = TraceStore.open(sqlite_path)
    chat = ChatOpenAI(model=MODEL, base_url=base_url, api_key="sk-guard", max_retries=0)
    graph = _agent(chat)
    result = record(graph, store).invoke({"messages": [("user", "add 2 and 3")]})  # no config, no callbacks
    assert result.status == "succeeded", result.error
    steps = store.steps(result.run_id)
    assert [s.node for s in steps] == ["agent", "tools", "agent"]
    assert [len(s.model_calls) for s in steps] == [1, 0, 1]
    first = steps[0].model_calls[0]
    assert first.backend == "langchain:openai" and first.model == MODEL
    assert first.response["tool_calls"] == [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]
    (call,) = steps[1].tool_calls
    assert (call.name, call.arguments, call.result, call.error) == ("add", {"a": 2, "b": 3}, "5", None)
    assert steps[2].model_calls[0].response["content"] == "the sum is 5"

    # a replay (which passes no handler either) records its calls too, and its forced tool result
    replayer = Replayer(store, result.run_id, graph=graph)
    replay = replayer.replay(replayer.compile(parse_intervention({"kind": "tool", "tool": "add", "result": 7}), "tools#0"),
                             arm="treatment")
    assert replay.applied, replay.applied_detail
    replayed = store.steps(replay.run_id)
    assert [(c.name, c.result) for c in replayed[1].tool_calls] == [("add", "7")]
    assert replayed[2].model_calls[0].response["content"] == "the sum is 7"


# -- a tool call ending on another thread -------------------------------------------------------


class _Notes(TypedDict, total=False):
    notes: Annotated[list[str], operator.add]


def _start_lookup(config: RunnableConfig) -> Any:
    """Start a tool call as LangChain does, with the node's callbacks; its run manager."""
    manager = CallbackManager.configure(inheritable_callbacks=config.get("callbacks"))
    return manager.on_tool_start({"name": "lookup"}, '{"key": "Avalon"}', inputs={"key": "Avalon"})


def _ended_on_a_bare_thread() -> StateGraph:
    def agent(state: _Notes, config: RunnableConfig) -> dict[str, Any]:
        run = _start_lookup(config)
        finisher = threading.Thread(target=run.on_tool_end, args=("1000",))  # no context of the step
        finisher.start()
        finisher.join(10)
        return {"notes": ["agent"]}

    graph = StateGraph(_Notes)
    graph.add_node("agent", agent)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph


def _ended_by_a_parallel_step() -> StateGraph:
    """`left` starts a call and waits; `right`, running at the same time, ends it."""
    handed: queue.Queue[Any] = queue.Queue()
    ended = threading.Event()

    def left(state: _Notes, config: RunnableConfig) -> dict[str, Any]:
        handed.put(_start_lookup(config))
        assert ended.wait(10), "the right branch never ended the call"
        return {"notes": ["left"]}

    def right(state: _Notes, config: RunnableConfig) -> dict[str, Any]:
        handed.get(timeout=10).on_tool_end("1000")
        ended.set()
        return {"notes": ["right"]}

    graph = StateGraph(_Notes)
    graph.add_node("left", left)
    graph.add_node("right", right)
    graph.add_edge(START, "left")
    graph.add_edge(START, "right")
    graph.add_edge("left", END)
    graph.add_edge("right", END)
    return graph


def test_a_tool_call_ended_on_a_bare_thread_is_recorded_in_its_step(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    result = record(_ended_on_a_bare_thread(), store).invoke({"notes": []})
    assert result.status == "succeeded", result.error
    (step,) = store.steps(result.run_id)
    assert [(c.name, c.arguments, c.result) for c in step.tool_calls] == [("lookup", {"key": "Avalon"}, "1000")]


def test_a_tool_call_ended_by_another_steps_thread_is_recorded_where_it_started(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    result = record(_ended_by_a_parallel_step(), store).invoke({"notes": []})
    assert result.status == "succeeded", result.error
    steps = {s.node: s for s in store.steps(result.run_id)}
    assert set(steps) == {"left", "right"}
    assert [(c.name, c.result) for c in steps["left"].tool_calls] == [("lookup", "1000")]
    assert steps["right"].tool_calls == []
