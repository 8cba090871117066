"""Small graphs written in plain LangGraph style, used by the store tests (also in subprocesses)."""

from __future__ import annotations

import os
import time
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from counterfact.capture import (
    ModelCallRecord,
    ToolCallRecord,
    report_model_call,
    report_tool_call,
)


class LoopState(TypedDict):
    messages: Annotated[list, add_messages]
    n: int
    limit: int


def worker(state: LoopState) -> dict:
    """Says its turn number; reports a model call and a tool call like an agent would."""
    delay = float(os.environ.get("CF_TEST_NODE_DELAY", "0"))
    if delay:
        time.sleep(delay)
    text = f"turn {state['n']}"
    report_model_call(
        ModelCallRecord(
            backend="scripted",
            model="test-model",
            params={"seed": 7, "temperature": 0.0},
            request=[{"role": "user", "content": m.content} for m in state["messages"]],
            response={"role": "assistant", "content": text},
            finish_reason="stop",
            prompt_tokens=5,
            completion_tokens=2,
            latency_ms=1.5,
        )
    )
    report_tool_call(ToolCallRecord(name="calculator", arguments={"expression": "1+1"}, result=2))
    return {"messages": [AIMessage(content=text, name="worker")], "n": state["n"] + 1}


def critic(state: LoopState) -> dict:
    return {"messages": [AIMessage(content=f"ok {state['n']}", name="critic")]}


def route(state: LoopState) -> str:
    return "critic" if state["n"] < state["limit"] else END


def loop_graph() -> StateGraph:
    graph = StateGraph(LoopState)
    graph.add_node("worker", worker)
    graph.add_node("critic", critic)
    graph.add_edge(START, "worker")
    graph.add_conditional_edges("worker", route, ["critic", END])
    graph.add_edge("critic", "worker")
    return graph


def loop_input(limit: int) -> dict:
    return {"messages": [("user", "count with me")], "n": 0, "limit": limit}
