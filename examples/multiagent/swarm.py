"""A swarm of two agents, made with langgraph-swarm as its users make them: each agent is a
`create_react_agent` with its own tool and a handoff tool to the other; the active agent
works until it hands the conversation over (`transfer_to_<agent>`) or answers. The swarm
remembers the active agent in `active_agent` and starts with the researcher.

    researcher -> math_expert -> END
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, create_react_agent
from langgraph_swarm import create_handoff_tool, create_swarm

from examples.multiagent.common import (
    TOOLS,
    Example,
    ScriptedTeamModel,
    Tools,
    chat_model,
    correct,
    with_example,
)

__all__ = ["build", "correct", "graph", "math_expert", "researcher", "scripted"]

RESEARCHER_PROMPT = (
    "You are a researcher. Look up the population of each town in the question with the "
    "population tool, one call at a time. When you have them all, transfer to math_expert "
    "to add them. Do not add numbers yourself."
)
MATH_PROMPT = (
    "You are a math expert. If a population is missing, transfer to researcher. Otherwise "
    "add the populations with the add tool, one call at a time, then say: The answer is N."
)


def _researcher_part() -> Example:
    return Example().look_up().transfer("math_expert", by="researcher")


def researcher(model: BaseChatModel, tools: Tools = TOOLS) -> CompiledStateGraph:
    """The agent that looks populations up and hands over to the math expert."""
    handoff = create_handoff_tool(agent_name="math_expert",
                                  description="Hand over to math_expert to add numbers.")
    return create_react_agent(model, ToolNode([tools["population"], handoff], handle_tool_errors=True),
                              name="researcher", prompt=with_example(RESEARCHER_PROMPT, _researcher_part()))


def math_expert(model: BaseChatModel, tools: Tools = TOOLS) -> CompiledStateGraph:
    """The agent that adds, and hands back to the researcher if a population is missing."""
    handoff = create_handoff_tool(agent_name="researcher",
                                  description="Hand over to researcher to look up populations.")
    example = _researcher_part().add_up().say("The answer is 1540.", name="math_expert")
    return create_react_agent(model, ToolNode([tools["add"], handoff], handle_tool_errors=True),
                              name="math_expert", prompt=with_example(MATH_PROMPT, example))


def build(model: BaseChatModel | None = None, tools: Tools = TOOLS) -> StateGraph:
    """The app's graph (uncompiled): the two agents on `model`, the researcher first."""
    llm = model if model is not None else chat_model()
    return create_swarm([researcher(llm, tools), math_expert(llm, tools)], default_active_agent="researcher")


def scripted() -> StateGraph:
    """The app on the deterministic test double, importable by reference for replays."""
    return build(ScriptedTeamModel())


graph = build()
