"""A supervisor of supervisors, made with langgraph-supervisor as its users make them: a
research team (a supervisor over the researcher) and a math team (a supervisor over the math
expert), each compiled under its own name, and a top supervisor that hands the question to
the teams with `transfer_to_research_team` / `transfer_to_math_team`.

    supervisor -> research_team (research_supervisor -> researcher -> research_supervisor)
               -> supervisor -> math_team (math_supervisor -> math_expert -> math_supervisor)
               -> supervisor -> END
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
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
from examples.multiagent.supervisor import math_expert, researcher

__all__ = ["build", "correct", "graph", "math_team", "research_team", "scripted"]

RESEARCH_SUPERVISOR_PROMPT = (
    "You lead the research team. Hand the question to researcher to look up the populations. "
    "When it is done, repeat each population it found. Do not add numbers."
)
MATH_SUPERVISOR_PROMPT = (
    "You lead the math team. Hand the populations to math_expert to add them. "
    "When it is done, say: The answer is N."
)
TOP_PROMPT = (
    "You manage two teams. Hand the question to research_team to look up the populations, "
    "then to math_team to add them, one at a time. Do no work yourself. "
    "When you have the sum, say: The answer is N."
)


def research_team(model: BaseChatModel, tools: Tools = TOOLS) -> CompiledStateGraph:
    """The research team: its own supervisor over the researcher, a compiled subgraph."""
    lead = "research_supervisor"
    example = (Example().transfer("research_team")
               .transfer("researcher", by=lead).say(EXAMPLE_REPORT, name="researcher")
               .hand_back("researcher", lead).say(EXAMPLE_REPORT, name=lead))
    team = create_supervisor([researcher(model, lead, tools)], model=model, supervisor_name=lead,
                             prompt=with_example(RESEARCH_SUPERVISOR_PROMPT, example))
    return team.compile(name="research_team")


def math_team(model: BaseChatModel, tools: Tools = TOOLS) -> CompiledStateGraph:
    """The math team: its own supervisor over the math expert, a compiled subgraph."""
    lead = "math_supervisor"
    example = (Example().say(EXAMPLE_REPORT, name="research_supervisor").transfer("math_team")
               .transfer("math_expert", by=lead).say("The sum is 1540.", name="math_expert")
               .hand_back("math_expert", lead).say("The answer is 1540.", name=lead))
    team = create_supervisor([math_expert(model, lead, tools)], model=model, supervisor_name=lead,
                             prompt=with_example(MATH_SUPERVISOR_PROMPT, example))
    return team.compile(name="math_team")


def build(model: BaseChatModel | None = None, tools: Tools = TOOLS) -> StateGraph:
    """The app's graph (uncompiled): the top supervisor over the two teams, all on `model`."""
    llm = model if model is not None else chat_model()
    example = (Example()
               .transfer("research_team").say(EXAMPLE_REPORT, name="research_supervisor")
               .hand_back("research_team")
               .transfer("math_team").say("The answer is 1540.", name="math_supervisor")
               .hand_back("math_team")
               .say("The answer is 1540.", name="supervisor"))
    return create_supervisor([research_team(llm, tools), math_team(llm, tools)], model=llm,
                             prompt=with_example(TOP_PROMPT, example))


def scripted() -> StateGraph:
    """The app on the deterministic test double, importable by reference for replays."""
    return build(ScriptedTeamModel())


graph = build()
