"""Pydantic records of what happens inside one step, and the context that collects them.

Agents and tools report their calls with `report_model_call` / `report_tool_call`; the recorder
opens a `StepCalls` context around each node execution, so the calls land under the right step
without agents knowing about the store.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
    # Activations captured during the call, as safetensors bytes; stored as a blob, not inline.
    activations: bytes | None = Field(default=None, exclude=True, repr=False)


class ToolCallRecord(BaseModel):
    """One tool invocation; `error` is set instead of `result` when the tool raised."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    latency_ms: float = 0.0


class StepCalls(BaseModel):
    """The calls made while one node executed, in order."""

    model_calls: list[ModelCallRecord] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)


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


def report_model_call(record: ModelCallRecord) -> None:
    """Attach a model call to the step being recorded (a no-op outside a recorded step)."""
    if (calls := _current.get()) is not None:
        calls.model_calls.append(record)


def report_tool_call(record: ToolCallRecord) -> None:
    """Attach a tool call to the step being recorded (a no-op outside a recorded step)."""
    if (calls := _current.get()) is not None:
        calls.tool_calls.append(record)


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
