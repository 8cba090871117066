"""A supervisor and two workers, made with langgraph-supervisor as its users make them: the
workers are `create_react_agent`s and the supervisor hands the conversation to them with its
`transfer_to_<worker>` tools; a worker's last message comes back with a
`transfer_back_to_supervisor` pair, and the supervisor answers when the work is done.

    supervisor -> researcher -> supervisor -> math_expert -> supervisor -> END
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, create_react_agent
from langgraph_supervisor import create_supervisor

from examples.multiagent.common import (
    EXAMPLE_REPORT,
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
    "population tool, one call at a time. Do not add numbers. Then report each population."
)
MATH_PROMPT = (
    "You are a math expert. Add the populations the researcher found with the add tool, "
    "one call at a time. Then say: The sum is N."
)
SUPERVISOR_PROMPT = (
    "You manage two workers. Hand the question to researcher to look up the populations, "
    "then to math_expert to add them, one at a time. Do no work yourself. "
    "When you have the sum, say: The answer is N."
)


def researcher(model: BaseChatModel, supervisor: str = "supervisor", tools: Tools = TOOLS) -> CompiledStateGraph:
    """The worker that looks populations up (its tool errors go back to it as messages)."""
    example = Example().transfer("researcher", by=supervisor).look_up().say(EXAMPLE_REPORT, name="researcher")
    return create_react_agent(model, ToolNode([tools["population"]], handle_tool_errors=True), name="researcher",
                              prompt=with_example(RESEARCHER_PROMPT, example))


def math_expert(model: BaseChatModel, supervisor: str = "supervisor", tools: Tools = TOOLS) -> CompiledStateGraph:
    """The worker that adds."""
    example = (Example().say(EXAMPLE_REPORT, name="researcher").transfer("math_expert", by=supervisor)
               .add_up().say("The sum is 1540.", name="math_expert"))
    return create_react_agent(model, ToolNode([tools["add"]], handle_tool_errors=True), name="math_expert",
                              prompt=with_example(MATH_PROMPT, example))


def build(model: BaseChatModel | None = None, tools: Tools = TOOLS) -> StateGraph:
    """The app's graph (uncompiled): the supervisor over the two workers, all on `model`."""
    llm = model if model is not None else chat_model()
    example = (Example()
               .transfer("researcher").say(EXAMPLE_REPORT, name="researcher").hand_back("researcher")
               .transfer("math_expert").say("The sum is 1540.", name="math_expert").hand_back("math_expert")
               .say("The answer is 1540.", name="supervisor"))
    return create_supervisor([researcher(llm, tools=tools), math_expert(llm, tools=tools)], model=llm,
                             prompt=with_example(SUPERVISOR_PROMPT, example))


def scripted() -> StateGraph:
    """The app on the deterministic test double, importable by reference for replays."""
    return build(ScriptedTeamModel())


graph = build()
