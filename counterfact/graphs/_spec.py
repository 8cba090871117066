"""Workflows written as YAML: agents, their models and tools, and a topology.

A spec is validated by pydantic; a bad file gets one line naming the file, the field and what
was expected. A run stores the spec it ran (in its labels), so that resuming or replaying it
rebuilds exactly the same graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from langgraph.graph import StateGraph
from pydantic import BaseModel, Field, ValidationError, model_validator

from counterfact._errors import CounterfactError, validation_message
from counterfact._files import load_yaml
from counterfact.agents import Agent, ChatMessage, ChatModel, GenerationSettings, Tool
from counterfact.graphs import _builders
from counterfact.graphs._tools import TOOLS

Topology = Literal["pipeline", "orchestrator", "groupchat"]


class WorkflowError(CounterfactError):
    """A workflow file that cannot be used; names the file and the field."""


class AgentSpec(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    role: str
    model: str | None = None  # a model spec; the workflow's `model` when absent
    tools: list[str] = Field(default_factory=list)
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    max_tool_rounds: int = Field(default=3, ge=0)
    examples: list[ChatMessage] = Field(default_factory=list)  # few-shot turns before the task

    @model_validator(mode="after")
    def _known_tools(self) -> AgentSpec:
        for tool in self.tools:
            if tool not in TOOLS:
                raise ValueError(f"unknown tool {tool!r}; known tools: {', '.join(sorted(TOOLS))}")
        return self


class WorkflowSpec(BaseModel):
    name: str
    description: str = ""
    topology: Topology
    model: str = "embedded"
    agents: list[AgentSpec] = Field(min_length=1)
    order: list[str] | None = None  # pipeline / groupchat: who, in which order (default: all)
    lead: str | None = None  # orchestrator: the agent that plans and routes
    selector: str | None = None  # groupchat: an agent that picks the next speaker
    max_rounds: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowSpec:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique: {names}")
        for field in ("lead", "selector"):
            if (value := getattr(self, field)) is not None and value not in names:
                raise ValueError(f"{field} {value!r} is not one of the agents {names}")
        for name in self.order or []:
            if name not in names:
                raise ValueError(f"order names {name!r}, which is not one of the agents {names}")
        if self.topology == "orchestrator" and self.lead is None:
            raise ValueError("an orchestrator workflow needs `lead: <agent name>`")
        return self

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Read and validate a workflow YAML file."""
    return parse_workflow(load_yaml(path, "workflow", WorkflowError), source=str(path))


def parse_workflow(data: Any, *, source: str = "workflow") -> WorkflowSpec:
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"{source}: {validation_message(exc, data)}") from None


def build_graph(
    spec: WorkflowSpec, models: Callable[[str], ChatModel], tools: Mapping[str, Tool] | None = None
) -> StateGraph:
    """The StateGraph of `spec`, its agents on models resolved by `models(model_spec)`. `tools`
    stand in for the task tools of the same name (an app's own implementation of a tool, or a
    benchmark's faulty one); the others are made for each task as usual."""
    given = dict(tools or {})
    agents = {
        a.name: _bound_agent(a, models(a.model or spec.model), [given[t] for t in a.tools if t in given])
        for a in spec.agents
    }
    tool_names = {a.name: [t for t in a.tools if t not in given] for a in spec.agents}
    examples = {a.name: a.examples for a in spec.agents}
    if spec.topology == "pipeline":
        order = spec.order or [a.name for a in spec.agents]
        return _builders.pipeline([agents[n] for n in order], tools=tool_names, examples=examples)
    if spec.topology == "groupchat":
        speakers = [n for n in (spec.order or [a.name for a in spec.agents]) if n != spec.selector]
        return _builders.group_chat(
            [agents[n] for n in speakers],
            max_rounds=spec.max_rounds,
            selector=agents[spec.selector] if spec.selector else None,
            tools=tool_names,
            examples=examples,
        )
    assert spec.lead is not None
    workers = [agents[a.name] for a in spec.agents if a.name != spec.lead]
    return _builders.orchestrator(
        agents[spec.lead], workers, max_rounds=spec.max_rounds, tools=tool_names, examples=examples
    )


def _bound_agent(spec: AgentSpec, model: ChatModel, tools: list[Tool]) -> Agent:
    return Agent(
        name=spec.name,
        role=spec.role.strip(),
        model=model,
        tools=tools,
        settings=spec.settings,
        max_tool_rounds=spec.max_tool_rounds,
    )
