"""Small LangGraph apps written the way users write them (TypedDict states with reducers, a
`Send` fan-out, a subgraph as a node, conditional edges, an interrupt), importable by
reference so that replays rebuild them. `CALLS` counts node executions, to show what a replay
runs again."""

from __future__ import annotations

import operator
import re
from collections import Counter
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Send, interrupt

CALLS: Counter[str] = Counter()


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: Annotated[list[str], operator.add]
    answer: str


def planner(state: State) -> dict[str, Any]:
    CALLS["planner"] += 1
    return {"messages": [AIMessage("compute 2+2", name="planner")], "notes": ["planned"]}


def worker(state: State) -> dict[str, Any]:
    """Does what the last message asks: `compute A+B`."""
    CALLS["worker"] += 1
    match = re.search(r"compute (\d+)\+(\d+)", str(state["messages"][-1].content))
    total = int(match.group(1)) + int(match.group(2)) if match else -1
    return {"messages": [AIMessage(f"the sum is {total}", name="worker")], "answer": str(total)}


def reviewer(state: State) -> dict[str, Any]:
    CALLS["reviewer"] += 1
    return {"notes": [f"reviewed {state.get('answer')}"]}


def after_worker(state: State) -> str:
    return "reviewer" if state.get("answer") == "5" else END


pipeline = StateGraph(State)
pipeline.add_node("planner", planner)
pipeline.add_node("worker", worker)
pipeline.add_node("reviewer", reviewer)
pipeline.add_edge(START, "planner")
pipeline.add_edge("planner", "worker")
pipeline.add_conditional_edges("worker", after_worker, ["reviewer", END])
pipeline.add_edge("reviewer", END)
# the same app, stopping for a person before the reviewer runs
paused_before_review = pipeline.compile(interrupt_before=["reviewer"])


def answer_is_5(state: dict[str, Any]) -> bool:
    return state.get("answer") == "5"


def broken_check(state: dict[str, Any]) -> bool:
    raise KeyError("no such field")


# -- a changed version of the pipeline: a node renamed -------------------------------------
changed_pipeline = StateGraph(State)
changed_pipeline.add_node("planner", planner)
changed_pipeline.add_node("solver", worker)
changed_pipeline.add_edge(START, "planner")
changed_pipeline.add_edge("planner", "solver")
changed_pipeline.add_edge("solver", END)


# -- a Send fan-out ---------------------------------------------------------------------------
class FanState(TypedDict, total=False):
    items: list[int]
    squares: Annotated[list[int], operator.add]
    total: int


def fan_out(state: FanState) -> list[Send]:
    return [Send("square", {"item": i}) for i in state["items"]]


def square(state: dict[str, Any]) -> dict[str, Any]:
    CALLS[f"square:{state['item']}"] += 1
    return {"squares": [state["item"] ** 2]}


def add_up(state: FanState) -> dict[str, Any]:
    CALLS["add_up"] += 1
    return {"total": sum(state["squares"])}


def fan_start(state: FanState) -> dict[str, Any]:
    return {}


fan = StateGraph(FanState)
fan.add_node("start", fan_start)
fan.add_node("square", square)
fan.add_node("add_up", add_up)
fan.add_edge(START, "start")
fan.add_conditional_edges("start", fan_out, ["square"])
fan.add_edge("square", "add_up")
fan.add_edge("add_up", END)


# -- a subgraph as a node -----------------------------------------------------------------
def inner_draft(state: State) -> dict[str, Any]:
    CALLS["inner_draft"] += 1
    return {"messages": [AIMessage("compute 1+1", name="inner")]}


inner = StateGraph(State)
inner.add_node("draft", inner_draft)
inner.add_edge(START, "draft")
inner.add_edge("draft", END)

nested = StateGraph(State)
nested.add_node("sub", inner.compile())
nested.add_node("worker", worker)
nested.add_edge(START, "sub")
nested.add_edge("sub", "worker")
nested.add_edge("worker", END)


# -- a human in the loop ----------------------------------------------------------------------
def ask_human(state: State) -> dict[str, Any]:
    CALLS["ask_human"] += 1
    reply = interrupt("which sum?")
    return {"messages": [HumanMessage(str(reply), name="human")]}


approval = StateGraph(State)
approval.add_node("ask", ask_human)
approval.add_node("worker", worker)
approval.add_edge(START, "ask")
approval.add_edge("ask", "worker")
approval.add_edge("worker", END)


# -- a LangChain model with a tool, looping through a ToolNode -----------------------------
@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLS["tool:add"] += 1
    return a + b


class AddingModel(BaseChatModel):
    """A deterministic test double: asks for add(2, 2) until a tool result arrives, then
    reports it; told to "answer 5", it does. (A real model runs in the examples and the capture
    tests.)"""

    @property
    def _llm_type(self) -> str:
        return "adding-test-double"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        CALLS["model"] += 1
        last = messages[-1]
        if "answer 5" in str(last.content):  # a replay's instruction edit, read as a last user turn
            reply = AIMessage("the answer is 5")
        elif isinstance(last, ToolMessage):
            reply = AIMessage(f"the answer is {last.content}")
        else:
            reply = AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": f"call_{CALLS['model']}"}])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def tool_agent() -> StateGraph:
    """A factory of a tool-calling loop on a LangChain chat model, looping through a ToolNode."""
    model = AddingModel().bind_tools([add])

    def agent(state: State) -> dict[str, Any]:
        CALLS["agent"] += 1
        reply = model.invoke(state["messages"])
        update: dict[str, Any] = {"messages": [reply]}
        if not reply.tool_calls:
            update["answer"] = str(reply.content).split()[-1]
        return update

    def route(state: State) -> str:
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) else END

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([add]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


# -- a user's graph on counterfact's own model (white-box: prefix and activation edits) -------
def local_model_app(chat_model: Any) -> StateGraph:
    """One node answering with `chat_model` (a ChatCounterfact), then a check of its words."""

    def answer(state: State) -> dict[str, Any]:
        CALLS["local_answer"] += 1
        reply = chat_model.invoke(state["messages"])
        return {"messages": [reply], "answer": str(reply.content)}

    graph = StateGraph(State)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph


def starts_with_yes(state: dict[str, Any]) -> bool:
    return str(state.get("answer", "")).startswith("YES")


# -- parallel branches ------------------------------------------------------------------------
def left(state: State) -> dict[str, Any]:
    CALLS["left"] += 1
    return {"notes": ["left"]}


def right(state: State) -> dict[str, Any]:
    CALLS["right"] += 1
    return {"messages": [AIMessage("compute 2+2", name="right")]}


parallel = StateGraph(State)
parallel.add_node("left", left)
parallel.add_node("right", right)
parallel.add_node("worker", worker)
parallel.add_edge(START, "left")
parallel.add_edge(START, "right")
parallel.add_edge(["left", "right"], "worker")
parallel.add_edge("worker", END)
