"""Pydantic records of what happens inside one step, and the context that collects them.

Agents and tools report their calls with `report_model_call` / `report_tool_call`; the recorder
opens a `StepCalls` context around each node execution, so the calls land under the right step
without agents knowing about the store.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, Field


class ModelCallRecord(BaseModel):
    """One request to a chat model and its response."""

    backend: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)  # max_tokens, temperature, seed, ...
    request: list[dict[str, Any]]  # the messages sent
    response: dict[str, Any]  # the assistant message (content, tool calls)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    offset_ms: float | None = None  # when it started, from the step's start (the step's timeline)
    agent: str | None = None  # the nested agent that made it ("team/researcher"); None: the step's own
    # Activations captured during the call, as safetensors bytes; stored as a blob, not inline.
    activations: bytes | None = Field(default=None, exclude=True, repr=False)


class ToolCallRecord(BaseModel):
    """One tool invocation; `error` is set instead of `result` when the tool raised."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    offset_ms: float | None = None  # when it started, from the step's start
    agent: str | None = None  # the nested agent that made it; None: the step's own
    handoff: str | None = None  # the agent control went to, when the tool handed off (a Command)


_Call = TypeVar("_Call", ModelCallRecord, ToolCallRecord)


class StepCalls(BaseModel):
    """The calls made while one node executed, each list in the order the calls ended."""

    model_calls: list[ModelCallRecord] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    started: float = Field(default_factory=time.perf_counter)  # the step's start, perf_counter

    def placed(self, record: _Call, started: float | None = None) -> _Call:
        """`record` with its place in the step: when it started (given, else its end less its
        latency) and the nested agent that made it, unless it says so itself."""
        start = started if started is not None else time.perf_counter() - record.latency_ms / 1000
        update: dict[str, Any] = {}
        if record.offset_ms is None:
            update["offset_ms"] = round(max(0.0, (start - self.started) * 1000), 3)
        if record.agent is None:
            update["agent"] = nested_agent()
        return record.model_copy(update=update) if update else record


def nested_agent(namespace: str | None = None) -> str | None:
    """The path of the graphs nested in a step that a call runs in ("team/researcher"), read
    from LangGraph's checkpoint namespace ("team:ID|researcher:ID|agent:ID": the last part is
    the node making the call); None for a call made by the step's own node."""
    if namespace is None:
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get() or {}
        namespace = (config.get("metadata") or {}).get("langgraph_checkpoint_ns") or (
            config.get("configurable") or {}
        ).get("checkpoint_ns")
    parts = [part.split(":")[0] for part in str(namespace or "").split("|") if part]
    return "/".join(parts[1:-1]) or None


def timeline(model_calls: list[ModelCallRecord], tool_calls: list[ToolCallRecord]) -> list[ModelCallRecord | ToolCallRecord]:
    """A step's calls in the order they started (calls of old records, which kept no start,
    model calls first)."""
    calls: list[ModelCallRecord | ToolCallRecord] = [*model_calls, *tool_calls]
    if any(c.offset_ms is None for c in calls):
        return calls
    return sorted(calls, key=lambda c: c.offset_ms or 0.0)


_current: contextvars.ContextVar[StepCalls | None] = contextvars.ContextVar(
    "counterfact_step_calls", default=None
)


@contextmanager
def collect_calls() -> Iterator[StepCalls]:
    """Collect every model and tool call reported inside the block."""
    calls = StepCalls()
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)


def report_model_call(record: ModelCallRecord, started: float | None = None) -> None:
    """Attach a model call to the step being recorded (a no-op outside a recorded step);
    `started` is its perf_counter start, when the reporter knows it."""
    if (calls := _current.get()) is not None:
        calls.model_calls.append(calls.placed(record, started))


def report_tool_call(record: ToolCallRecord, started: float | None = None) -> None:
    """Attach a tool call to the step being recorded (a no-op outside a recorded step)."""
    if (calls := _current.get()) is not None:
        calls.tool_calls.append(calls.placed(record, started))


class StepAddress(BaseModel):
    """Which step is executing: a run, a node, and the nth invocation of that node in the run.

    Node code reads it (`current_step()`) to find the replay directives aimed at this step.
    """

    run_id: str
    node: str
    invocation: int


_address: contextvars.ContextVar[StepAddress | None] = contextvars.ContextVar(
    "counterfact_step_address", default=None
)


@contextmanager
def at_step(address: StepAddress) -> Iterator[StepAddress]:
    token = _address.set(address)
    try:
        yield address
    finally:
        _address.reset(token)


def current_step() -> StepAddress | None:
    """The step being recorded in this context, if any."""
    return _address.get()
