"""Pydantic views of stored records: runs and steps (what the store reads, writes, exports and
imports), and the interventions and verdicts made of them. The debugger's sessions and
hypotheses are its own (`counterfact.interventions._records`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from counterfact.capture import ModelCallRecord, ToolCallRecord

RunStatus = Literal["running", "succeeded", "failed", "error"]
StepKind = Literal["agent", "tool", "router", "plan", "input"]


def utcnow() -> datetime:
    """Naive UTC now: the store keeps naive UTC timestamps on every backend."""
    return datetime.now(UTC).replace(tzinfo=None)


class Outcome(BaseModel):
    """How a run ended against its task's checker."""

    success: bool
    score: float = 0.0
    milestones: list[str] = Field(default_factory=list)
    detail: str | None = None


class RunRecord(BaseModel):
    id: str
    workflow: str
    workflow_hash: str = ""
    task_input: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = "running"
    outcome: Outcome | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    total_tokens: int = 0
    total_latency_ms: float = 0.0
    source: str = "recorded"
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    parent_run_id: str | None = None
    fork_step: int | None = None
    intervention_id: str | None = None
    error: str | None = None
    # How many steps the store holds for the run: read, never written from here or exported.
    step_count: int = Field(default=0, exclude=True)


class StepRecord(BaseModel):
    """One node execution with its payloads inline (the store keeps them as blobs)."""

    index: int | None = None
    node: str
    agent: str | None = None
    invocation: int = 0
    kind: StepKind = "agent"
    input: list[dict[str, Any]] | None = None  # the messages the agent saw
    output: Any = None  # its output: a message, a plan update, a routing decision
    delta: Any = None  # the state update the node returned
    checkpoint_before: str | None = None
    checkpoint_after: str | None = None
    task_id: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime = Field(default_factory=utcnow)
    error: str | None = None
    model_calls: list[ModelCallRecord] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    digest: str | None = None  # the hash-chain link, set when written


# -- interventions and verdicts -----------------------------------------------------------

VerdictKind = Literal["validated", "refuted", "inconclusive"]


def new_id() -> str:
    return uuid.uuid4().hex


class InterventionRecord(BaseModel):
    """An edit of a recorded run at one step (its spec as JSON), which replays were made of."""

    id: str = Field(default_factory=new_id)
    run_id: str
    fork_step: int
    spec: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)


class VerdictRecord(BaseModel):
    """What replays against a control arm said of an intervention, with the numbers."""

    id: str = Field(default_factory=new_id)
    intervention_id: str
    run_id: str  # the run the intervention edits
    verdict: VerdictKind
    reason: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
