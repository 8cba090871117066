"""Pydantic views of stored records: runs and steps (what the store reads, writes, exports and
imports), and the interventions, verdicts, debug sessions and hypotheses made of them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from counterfact.capture._records import ModelCallRecord, ToolCallRecord

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


# -- interventions, verdicts and debug sessions ---------------------------------------------

VerdictKind = Literal["validated", "refuted", "inconclusive"]
DebugStatus = Literal["running", "done"]
# verified: decided by its verdict; undecided: fixes tried, none decided it (the note says why)
HypothesisStatus = Literal["proposed", "verified", "undecided", "skipped"]


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


class DebugSpend(BaseModel):
    """What a debug session has used of its budget so far."""

    replays: int = 0
    tokens: int = 0
    seconds: float = 0.0


class DebugSessionRecord(BaseModel):
    """One debug session of a failed run: its strategies, settings, spend and progress."""

    id: str = Field(default_factory=new_id)
    run_id: str
    strategies: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)  # budget, pairs, samples, temperature
    status: DebugStatus = "running"
    spent: DebugSpend = Field(default_factory=DebugSpend)
    completed: list[str] = Field(default_factory=list)  # the stages finished, in order
    created_at: datetime = Field(default_factory=utcnow)


class HypothesisRecord(BaseModel):
    """A suspected cause of a failure (agent, step, reason) and the edit that tests it."""

    id: str = Field(default_factory=new_id)
    session_id: str
    seq: int  # 0-based, in the order the session proposed them
    strategy: str  # grounded | llm | resample | patch: the first that proposed it
    segment: int = 0  # the segment of the run (between planning steps) the step lies in
    step: int | None = None
    agent: str | None = None
    reason: str = ""
    intervention: dict[str, Any] | None = None
    status: HypothesisStatus = "proposed"
    verdict_id: str | None = None
    note: str = ""  # why skipped, or what it cost
    reference_run_id: str | None = None  # the successful run a patch hypothesis draws on
    evidence: dict[str, Any] = Field(default_factory=dict)  # details for the report
