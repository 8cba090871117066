"""What a replay asks of the steps it re-executes, and how code inside a step reads it.

A replay passes `Directives` in the run config on every invoke (LangGraph does not restore
`configurable` on resume). The recorder reads them when a node starts and opens a step scope,
so everything that runs inside the step (counterfact's agents, `ChatCounterfact`, LangChain
models and tools, instrumented openai clients) finds what is aimed at it without a config
argument: `current_directives()`, `next_model_call()`, `tool_result_for()`, `step_seed()`,
`step_instruction()`, `rewrite_prompt()`, `recorded_reply()`.
Steps are addressed by (node, nth invocation), which, unlike LangGraph's step numbers and
task ids, is stable across forks.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field

from counterfact.capture._payloads import canonical_json
from counterfact.capture._records import StepAddress

CONFIG_KEY = "counterfact_directives"


class ModelResponse(BaseModel):
    """What the `call`-th model call inside a step returns instead of calling the model."""

    call: int = Field(default=0, ge=0)
    content: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)  # {"name", "args", "id"}


class StepDirectives(BaseModel):
    """Edits that apply while one step executes."""

    reply: str | None = None  # counterfact agents: the agent says exactly this (no model call)
    output: Any = None  # any node: this state update (recorded JSON form) stands for the node's
    prefix: str | None = None  # the response must begin with this text
    instruction: str | None = None  # a note the step's model reads before it answers
    temperature: float | None = None  # this step samples at this temperature (the others do not)
    seed: int | None = None  # ... with this seed, whatever the arm's seed
    activation_edits: list[dict[str, Any]] = Field(default_factory=list)  # ActivationEdit dicts
    # tool name, or `tool_call_key` of a call with given arguments -> its forced result
    tool_results: dict[str, Any] = Field(default_factory=dict)
    model_responses: list[ModelResponse] = Field(default_factory=list)
    route: str | None = None  # the node that runs next, whatever the step's routing decides
    handoff_message: str | None = None  # the message a handoff made at the step carries instead
    kept_handoffs: dict[str, str] = Field(default_factory=dict)  # handoff tool -> the note its first call answers


class ToolChange(BaseModel):
    """Give a step's node (or agent) a tool, or take one away, from a step on."""

    agent: str  # the agent name for counterfact agents, else the node name
    tool: str
    action: Literal["add", "remove"]
    from_step: str  # "node#invocation"


class PromptChange(BaseModel):
    """Text a replay changes in what every model is sent from the fork on: an agent's
    instructions or a tool's description, as a fix to the app's own prompts would."""

    old: str = Field(min_length=1)
    new: str


class RouteChange(BaseModel):
    """A route a replay changes from the fork on: wherever the route out of `node` would go to
    `instead_of`, it goes to `to`, as a fix to the app's routing function would."""

    node: str
    instead_of: str
    to: str


class Directives(BaseModel):
    """Everything a replay asks of the re-executed part of a run."""

    seed: int | None = None  # base seed: each model call derives its own from it
    temperature: float | None = None  # overrides counterfact models' temperature (resampling)
    steps: dict[str, StepDirectives] = Field(default_factory=dict)  # "node#invocation" -> ...
    tool_changes: list[ToolChange] = Field(default_factory=list)
    prompt_changes: list[PromptChange] = Field(default_factory=list)
    route_changes: list[RouteChange] = Field(default_factory=list)
    reuse_tool_results: dict[str, Any] = Field(default_factory=dict)  # call key -> recorded result
    # "node#invocation" -> what the run's model calls answered at that step, in call order: a
    # draft that a local model checks in a few passes instead of decoding it (`recorded_reply`)
    recorded_replies: dict[str, list[str]] = Field(default_factory=dict)
    # The run's own recursion limit, for graphs nested in its steps: a replay's top level gets
    # what the run had left at the fork, but a subgraph starts its count afresh, as it did.
    nested_recursion_limit: int | None = None

    def for_step(self, node: str, invocation: int) -> StepDirectives | None:
        return self.steps.get(step_key(node, invocation))

    def rerouted(self, node: str, destination: Any) -> Any:
        """Where a route out of `node` to `destination` goes under the route changes."""
        return next((c.to for c in self.route_changes if c.node == node and c.instead_of == destination), destination)


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


def tool_call_key(name: str, arguments: Any) -> str:
    """How a tool call is matched with a recorded one: its name and canonical arguments."""
    return f"{name}:{canonical_json(arguments).decode()}"


def derive_seed(base: int, node: str, invocation: int) -> int:
    """A per-step seed: replays with the same base seed draw the same samples at each step."""
    digest = hashlib.sha256(f"{base}:{node}:{invocation}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class StepScope:
    """The directives in force for the step executing now, and its count of model calls."""

    address: StepAddress
    directives: Directives
    here: StepDirectives | None
    model_calls: int = 0
    kept: set[str] = field(default_factory=set)  # handoff tools whose first call was answered
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_scope: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar(
    "counterfact_step_scope", default=None
)


@contextmanager
def directing(address: StepAddress, directives: Directives) -> Iterator[StepScope]:
    """Make `directives` readable by everything that runs inside the step at `address`."""
    scope = StepScope(address, directives, directives.for_step(address.node, address.invocation))
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def current_directives() -> tuple[Directives, StepDirectives | None]:
    """The run's directives and those aimed at the step executing now."""
    scope = _scope.get()
    if scope is None:
        return Directives(), None
    return scope.directives, scope.here


def next_model_call() -> tuple[int, ModelResponse | None]:
    """Count one model call in this step; its index, and the response forced for it if any.

    Model backends call this once per request they would send (outside a step: (0, None)).
    """
    scope = _scope.get()
    if scope is None:
        return 0, None
    with scope._lock:
        index = scope.model_calls
        scope.model_calls += 1
    forced = next((r for r in (scope.here.model_responses if scope.here else []) if r.call == index), None)
    return index, forced


_MISSING = object()


def tool_result_for(name: str, arguments: Any) -> tuple[bool, Any]:
    """(True, result) when a tool call must not run: a result forced at this step, or a
    recorded identical call being reused; else (False, None)."""
    scope = _scope.get()
    if scope is None:
        return False, None
    if scope.here is not None and scope.here.tool_results:
        for key in (tool_call_key(name, arguments), name):  # these arguments' forced result first
            if key in scope.here.tool_results:
                return True, scope.here.tool_results[key]
    if scope.here is not None and name in scope.here.kept_handoffs:
        with scope._lock:  # the handoff the step made is not made; a later one goes through
            first = name not in scope.kept
            scope.kept.add(name)
        if first:
            return True, scope.here.kept_handoffs[name]
    recorded = scope.directives.reuse_tool_results.get(tool_call_key(name, arguments), _MISSING)
    return (False, None) if recorded is _MISSING else (True, recorded)


def tool_changes_for(agent: str) -> list[ToolChange]:
    """The tool changes in force for `agent` (or node) at the step executing now, in order."""
    scope = _scope.get()
    if scope is None:
        return []
    address = scope.address
    return [
        change
        for change in scope.directives.tool_changes
        if change.agent == agent and _at_or_after(address, change.from_step)
    ]


def step_seed() -> int | None:
    """The seed a model call in this step should use: the step's own, or one derived from the
    replay's base seed."""
    scope = _scope.get()
    if scope is None:
        return None
    if scope.here is not None and scope.here.seed is not None:
        return scope.here.seed
    if scope.directives.seed is None:
        return None
    return derive_seed(scope.directives.seed, scope.address.node, scope.address.invocation)


def step_temperature() -> float | None:
    """The temperature a replay sets for model calls in this step (the step's own, else the
    whole replay's), or None to keep the model's."""
    directives, here = current_directives()
    if here is not None and here.temperature is not None:
        return here.temperature
    return directives.temperature


def recorded_reply() -> str | None:
    """What the replayed run's model answered to the step's model call counted last, if the
    replay carries it: only a guess at this call's answer (its prompt may differ now), which a
    local model checks against its own greedy choices rather than trusts."""
    scope = _scope.get()
    if scope is None or scope.model_calls == 0:
        return None
    replies = scope.directives.recorded_replies.get(step_key(scope.address.node, scope.address.invocation), [])
    index = scope.model_calls - 1
    return replies[index] if index < len(replies) else None


def step_instruction() -> str | None:
    """The note a replay gives the models of this step to read before they answer."""
    _, here = current_directives()
    return here.instruction if here is not None and here.instruction else None


def rewrite_prompt(text: str) -> str:
    """`text` (instructions, a tool's description) with the replay's prompt changes made."""
    scope = _scope.get()
    if scope is None:
        return text
    for change in scope.directives.prompt_changes:
        text = text.replace(change.old, change.new)
    return text


def prompts_rewritten() -> bool:
    """Whether the replay changes prompts at all (so requests are rewritten only then)."""
    scope = _scope.get()
    return scope is not None and bool(scope.directives.prompt_changes)


def _at_or_after(address: StepAddress, step: str) -> bool:
    node, _, invocation = step.partition("#")
    return address.node == node and address.invocation >= int(invocation or 0)
