"""A LangGraph app written the way its users write them: a ChatOpenAI model with tools, a
ToolNode, and a conditional loop between them. Nothing in it knows about counterfact.

It answers questions about the towns in `TOWNS` ("What is the population of Lowmoor plus
Glenlyn?"). Point it at any OpenAI-compatible server with OPENAI_BASE_URL; the README runs it
on `counterfact serve` (the embedded SmolLM2-135M), which gets it wrong often enough to debug.
"""

from __future__ import annotations

import os
import re
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

TOWNS = {"lowmoor": 790, "glenlyn": 8600, "ashby": 1200, "corfe": 340, "brindle": 1740, "wexham": 5025}


@tool
def population(town: str) -> int:
    """The population of a town."""
    key = town.strip().lower()
    if key not in TOWNS:
        raise ValueError(f"no town {town!r}; known towns: {', '.join(sorted(TOWNS))}")
    return TOWNS[key]


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


TOOLS = [population, add]

# A worked exchange: small models follow an example far better than an instruction.
EXAMPLE = [
    SystemMessage("You answer questions about towns with the tools, one call at a time. "
                  "When you have the result, say: The answer is N."),
    HumanMessage("What is the population of Ashby plus Corfe?"),
    AIMessage("", tool_calls=[{"name": "population", "args": {"town": "Ashby"}, "id": "ex1"}]),
    ToolMessage("1200", tool_call_id="ex1", name="population"),
    AIMessage("", tool_calls=[{"name": "population", "args": {"town": "Corfe"}, "id": "ex2"}]),
    ToolMessage("340", tool_call_id="ex2", name="population"),
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1200, "b": 340}, "id": "ex3"}]),
    ToolMessage("1540", tool_call_id="ex3", name="add"),
    AIMessage("The answer is 1540."),
]


def model() -> Any:
    return ChatOpenAI(
        model=os.environ.get("TOWN_AGENT_MODEL", "embedded"),
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed-for-a-local-server"),
        temperature=float(os.environ.get("TOWN_AGENT_TEMPERATURE", "0.7")),
        max_tokens=64,
        max_retries=0,
    ).bind_tools(TOOLS)


def build(chat_model: Any = None) -> StateGraph:
    """The app's graph: the agent calls tools through a ToolNode until it answers (at most
    six model turns)."""
    llm = chat_model if chat_model is not None else model()

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke([*EXAMPLE, *state["messages"]])]}

    def next_step(state: MessagesState) -> str:
        turns = sum(isinstance(m, AIMessage) for m in state["messages"])
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) and turns < 6 else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(TOOLS, handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", next_step, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


graph = build()


def correct(state: dict[str, Any]) -> bool:
    """The check: the last message states the sum of the populations the question names."""
    question = next(str(m.content) for m in state["messages"] if isinstance(m, HumanMessage))
    towns = [t for t in TOWNS if t in question.lower()]
    expected = sum(TOWNS[t] for t in towns)
    numbers = re.findall(r"-?\d+(?:\.\d+)?", str(state["messages"][-1].content).replace(",", ""))
    return bool(towns) and bool(numbers) and float(numbers[-1]) == expected
