"""The relational schema of the trace store (SQLAlchemy 2 typed ORM).

Runs own steps; steps own model and tool calls. Payloads (messages, outputs, state deltas,
activations) live in `blobs`, addressed by the SHA-256 of their bytes, so a message resent at
every step is stored once. LangGraph checkpoints live in `checkpoints` / `checkpoint_writes`
of the same database, which lets a step and the checkpoint writes it produced commit together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    workflow_hash: Mapped[str] = mapped_column(String(64), default="")
    task_input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed | error
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    source: Mapped[str] = mapped_column(String(32), default="recorded")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    parent_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), default=None
    )
    fork_step: Mapped[int | None] = mapped_column(Integer, default=None)
    intervention_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    head_digest: Mapped[str] = mapped_column(String(64), default="")  # last link of the chain
    # id, workflow and task input, lower-cased: what the runs list's text search scans
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (
        Index("ix_runs_created_id", "created_at", "id"),
        Index("ix_runs_status_created", "status", "created_at"),
        Index("ix_runs_workflow_created", "workflow", "created_at"),
        Index("ix_runs_parent", "parent_run_id"),
    )


class Step(Base):
    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)  # dense, 0-based within the run
    node: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str | None] = mapped_column(String(200), default=None)
    invocation: Mapped[int] = mapped_column(Integer)  # nth execution of `node` in the run
    kind: Mapped[str] = mapped_column(String(16))  # agent | tool | router | plan | input
    input_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    output_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    delta_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    checkpoint_before: Mapped[str | None] = mapped_column(String(64), default=None)
    # Set only where a step's next checkpoint is not derivable (imports); recorded steps leave
    # it empty and readers take the child of checkpoint_before (see _steps.checkpoint_after).
    checkpoint_after: Mapped[str | None] = mapped_column(String(64), default=None)
    task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    digest: Mapped[str] = mapped_column(String(64))  # hash chain link over content + previous

    __table_args__ = (
        UniqueConstraint("run_id", "index", name="uq_steps_run_index"),
        Index("ix_steps_agent_run", "agent", "run_id"),
    )


class ModelCall(Base):
    __tablename__ = "model_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_digest: Mapped[str] = mapped_column(String(64))
    response_digest: Mapped[str] = mapped_column(String(64))
    activations_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    offset_ms: Mapped[float | None] = mapped_column(Float, default=None)  # start, from the step's
    agent: Mapped[str | None] = mapped_column(String(200), default=None)  # nested agent path


class ToolCall(Base):
    __tablename__ = "tool_calls"
    # the same tool with the same arguments in other runs: what a tool result is compared with
    __table_args__ = (Index("ix_tool_calls_arguments", "arguments_digest", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    arguments_digest: Mapped[str] = mapped_column(String(64))
    result_digest: Mapped[str | None] = mapped_column(String(64), default=None)  # None: it raised
    error: Mapped[str | None] = mapped_column(Text, default=None)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    offset_ms: Mapped[float | None] = mapped_column(Float, default=None)
    agent: Mapped[str | None] = mapped_column(String(200), default=None)
    handoff: Mapped[str | None] = mapped_column(String(200), default=None)  # the agent it handed to


class Blob(Base):
    """Content-addressed payload. A redacted blob keeps its digest and loses its bytes."""

    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    redaction_note: Mapped[str | None] = mapped_column(Text, default=None)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    thread_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    checkpoint_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_checkpoint_id: Mapped[str | None] = mapped_column(String(64), default=None)
    run_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    type: Mapped[str | None] = mapped_column(String(32), default=None)
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType, default=dict)

    __table_args__ = (
        Index("ix_checkpoints_parent", "thread_id", "checkpoint_ns", "parent_checkpoint_id"),
    )


class CheckpointWrite(Base):
    __tablename__ = "checkpoint_writes"

    thread_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    checkpoint_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(200))
    type: Mapped[str | None] = mapped_column(String(32), default=None)
    value: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    task_path: Mapped[str] = mapped_column(String(200), default="")


class Intervention(Base):
    """An edit of a recorded run at one step (its spec as JSON), which replays were made of."""

    __tablename__ = "interventions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    fork_step: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Verdict(Base):
    """What replays against a control arm said of an intervention, with the numbers."""

    __tablename__ = "verdicts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    intervention_id: Mapped[str] = mapped_column(
        ForeignKey("interventions.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))  # validated | refuted | inconclusive
    reason: Mapped[str] = mapped_column(Text, default="")
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime)


# The debugger's tables: read and written by `counterfact.interventions._records` alone, kept
# here because one database has one schema, migrated as a whole.


class DebugSession(Base):
    """One `counterfact debug` of a failed run: its strategies and budget, and how far it got."""

    __tablename__ = "debug_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    strategies: Mapped[list[Any]] = mapped_column(default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # budget, pairs, samples, temperature
    status: Mapped[str] = mapped_column(String(16))  # running | done
    spent: Mapped[dict[str, Any]] = mapped_column(default=dict)  # replays, tokens, seconds
    # the stages finished (strategies, then "patch-layers"), so a resumed session skips them
    completed: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Hypothesis(Base):
    """A suspected cause of a failure (agent, step, reason) and the edit that tests it."""

    __tablename__ = "hypotheses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("debug_sessions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(16))  # llm | resample | patch
    # the segment of the run (split at planning steps) the step lies in; `trial` before 0004
    segment: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    agent: Mapped[str | None] = mapped_column(String(200), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    intervention: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    status: Mapped[str] = mapped_column(String(16))  # proposed | verified | undecided | skipped
    verdict_id: Mapped[str | None] = mapped_column(
        ForeignKey("verdicts.id", ondelete="SET NULL"), default=None
    )
    note: Mapped[str] = mapped_column(Text, default="")  # why skipped, or what it cost
    # the successful run a patch hypothesis transplants from
    reference_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL", name="fk_hypotheses_reference_run_id_runs"),
        default=None,
        index=True,
    )
    # free-form details a strategy shows in the report (an unsupported claim, say)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")

    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_hypotheses_session_seq"),)
