"""Handoffs written by hand on plain LangGraph, as in LangGraph's multi-agent docs: three
agent nodes share the conversation (`MessagesState`); each turn an agent calls the model with
its tools plus `transfer_to_<agent>` tools, runs the tools it asked for, and returns a
`Command` that says where the conversation goes next: to the agent it transferred to, back to
itself for another turn after a tool result, or to the end when it answers.

The coordinator delegates and answers; the researcher and the math expert do their part and
hand back to the coordinator:

    coordinator -> researcher (x3) -> coordinator -> math_expert (x2) -> coordinator -> END
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

from examples.multiagent.common import (
    TOOLS,
    Example,
    ScriptedTeamModel,
    Tools,
    chat_model,
    correct,
    with_example,
)

__all__ = ["MAX_TURNS", "agent_node", "build", "correct", "graph", "scripted", "transfer_tool"]

MAX_TURNS = 16  # model turns in a run, all agents together: a model that never answers ends

COORDINATOR_PROMPT = (
    "You coordinate two workers. Transfer to researcher to look up the populations, then to "
    "math_expert to add them. Do no work yourself. When you have the sum, say: The answer is N."
)
RESEARCHER_PROMPT = (
    "You are a researcher. Look up the population of each town in the question with the "
    "population tool, one call at a time. Then transfer to coordinator."
)
MATH_PROMPT = (
    "You are a math expert. Add the populations with the add tool, one call at a time, then "
    "transfer to coordinator."
)


def transfer_tool(agent: str) -> BaseTool:
    """A tool whose call hands the conversation to `agent` (the node reads the call)."""

    @tool(f"transfer_to_{agent}", description=f"Hand the conversation over to {agent}.")
    def transfer() -> str:
        return f"Transferred to {agent}."

    return transfer


def _examples() -> dict[str, list[BaseMessage]]:
    """Each agent's worked exchange: the shared conversation up to the end of its part."""
    full = Example()
    full.transfer("researcher", by="coordinator", result="Transferred to researcher.").look_up()
    full.transfer("coordinator", by="researcher", result="Transferred to coordinator.")
    researcher_part = len(full.messages)
    full.transfer("math_expert", by="coordinator", result="Transferred to math_expert.").add_up()
    full.transfer("coordinator", by="math_expert", result="Transferred to coordinator.")
    math_part = len(full.messages)
    full.say("The answer is 1540.", name="coordinator")
    return {"researcher": full.messages[:researcher_part], "math_expert": full.messages[:math_part],
            "coordinator": full.messages}


def _run(tools: dict[str, BaseTool], call: ToolCall) -> ToolMessage:
    """The tool's result, or its error as a message the model can read."""
    try:
        if call["name"] not in tools:
            raise ValueError(f"no tool {call['name']!r}; tools: {', '.join(tools)}")
        return cast(ToolMessage, tools[call["name"]].invoke(call))  # a ToolCall in, a ToolMessage out
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported to the model, as ToolNode does
        return ToolMessage(f"Error: {exc}", tool_call_id=call["id"], name=call["name"], status="error")


def agent_node(
    name: str,
    model: BaseChatModel,
    prompt: Callable[[dict[str, Any]], list[BaseMessage]],
    tools: Sequence[BaseTool],
    handoffs: Sequence[str],
) -> Callable[[MessagesState], Command[Any]]:
    """One agent's turn: the model answers, transfers, or calls tools and goes again."""
    offered = [*tools, *(transfer_tool(agent) for agent in handoffs)]
    by_name = {t.name: t for t in offered}
    llm = model.bind_tools(offered)

    def turn(state: MessagesState) -> Command[Any]:
        reply = llm.invoke(prompt(dict(state)))
        assert isinstance(reply, AIMessage)
        reply.name = name
        results = [_run(by_name, call) for call in reply.tool_calls]
        update = {"messages": [reply, *results]}
        transfers = [call["name"].removeprefix("transfer_to_")
                     for call, result in zip(reply.tool_calls, results, strict=True)
                     if call["name"].startswith("transfer_to_") and result.status != "error"]
        turns = sum(isinstance(m, AIMessage) for m in state["messages"]) + 1
        if not reply.tool_calls or turns >= MAX_TURNS:
            return Command(goto=END, update=update)
        return Command(goto=transfers[0] if transfers else name, update=update)

    turn.__name__ = name
    return turn


def build(model: BaseChatModel | None = None, tools: Tools = TOOLS) -> StateGraph:
    """The app's graph (uncompiled): the coordinator and the two workers, all on `model`."""
    llm = model if model is not None else chat_model()
    examples = _examples()
    graph = StateGraph(MessagesState)
    graph.add_node(
        "coordinator",
        agent_node("coordinator", llm, with_example(COORDINATOR_PROMPT, examples["coordinator"]), [],
                   ["researcher", "math_expert"]),
        destinations=("researcher", "math_expert", "coordinator", END),
    )
    graph.add_node(
        "researcher",
        agent_node("researcher", llm, with_example(RESEARCHER_PROMPT, examples["researcher"]), [tools["population"]],
                   ["coordinator"]),
        destinations=("coordinator", "researcher", END),
    )
    graph.add_node(
        "math_expert",
        agent_node("math_expert", llm, with_example(MATH_PROMPT, examples["math_expert"]), [tools["add"]],
                   ["coordinator"]),
        destinations=("coordinator", "math_expert", END),
    )
    graph.add_edge(START, "coordinator")
    return graph


def scripted() -> StateGraph:
    """The app on the deterministic test double, importable by reference for replays."""
    return build(ScriptedTeamModel())


graph = build()
