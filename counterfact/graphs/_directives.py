"""What a replay asks of the nodes it re-executes, passed in the run config on every invoke.

LangGraph does not restore `configurable` on resume, so a replay hands these over each time it
invokes the graph. A node finds the directives for itself by its address (node, nth
invocation), which, unlike LangGraph's step numbers and task ids, is stable across forks.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field

from counterfact.traces import current_step

CONFIG_KEY = "counterfact_directives"


class StepDirectives(BaseModel):
    """Edits that apply while one step executes."""

    reply: str | None = None  # the agent says exactly this (its model is not called)
    prefix: str | None = None  # the response must begin with this text
    activation_edits: list[dict[str, Any]] = Field(default_factory=list)  # ActivationEdit dicts
    tool_results: dict[str, Any] = Field(default_factory=dict)  # tool name -> forced result


class ToolChange(BaseModel):
    """Give an agent a tool, or take one away, from a step on."""

    agent: str
    tool: str
    action: str = Field(pattern="^(add|remove)$")
    from_step: str  # "node#invocation"


class Directives(BaseModel):
    """Everything a replay asks of the re-executed part of a run."""

    seed: int | None = None  # base seed: each model call derives its own from it
    temperature: float | None = None  # overrides every agent's temperature (resampling)
    steps: dict[str, StepDirectives] = Field(default_factory=dict)  # "node#invocation" -> ...
    tool_changes: list[ToolChange] = Field(default_factory=list)
    reuse_tool_results: dict[str, Any] = Field(default_factory=dict)  # call key -> recorded result

    def for_step(self, node: str, invocation: int) -> StepDirectives | None:
        return self.steps.get(step_key(node, invocation))


def step_key(node: str, invocation: int) -> str:
    return f"{node}#{invocation}"


def directives_of(config: RunnableConfig | None) -> Directives:
    raw = (config or {}).get("configurable", {}).get(CONFIG_KEY)
    if raw is None:
        return Directives()
    return raw if isinstance(raw, Directives) else Directives.model_validate(raw)


def with_directives(config: RunnableConfig | None, directives: Directives) -> RunnableConfig:
    config = dict(config or {})
    return {**config, "configurable": {**config.get("configurable", {}), CONFIG_KEY: directives}}


def current_directives(config: RunnableConfig | None) -> tuple[Directives, StepDirectives | None]:
    """The run's directives and those aimed at the step executing now."""
    directives = directives_of(config)
    address = current_step()
    here = directives.for_step(address.node, address.invocation) if address else None
    return directives, here
