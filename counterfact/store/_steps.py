"""Reading a run's steps back: their rows, their calls, their payloads batched, and the
checkpoint each step produced (derived, never written on the recording hot path)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.store._blobs import BlobReader
from counterfact.store._models import StepRecord
from counterfact.store.schema import Blob, Checkpoint, ModelCall, Step, ToolCall


def checkpoint_after(step: Any) -> Any:
    """The checkpoint a step produced: the child of its checkpoint in the run's own thread.

    Derived rather than written, so that recording a step needs no second statement once
    LangGraph has stored the next checkpoint (the two are written concurrently).
    """
    return (
        select(Checkpoint.checkpoint_id)
        .where(
            Checkpoint.thread_id == step.run_id,
            Checkpoint.checkpoint_ns == "",
            Checkpoint.parent_checkpoint_id == step.checkpoint_before,
        )
        .order_by(Checkpoint.checkpoint_id)
        .limit(1)
        .scalar_subquery()
    )


def calls_by_step(conn: Connection, table: Any, step_ids: list[int]) -> dict[int, list[Any]]:
    """A call table's rows for the given steps, grouped by step, in call order."""
    grouped: dict[int, list[Any]] = {i: [] for i in step_ids}
    if step_ids:
        rows = conn.execute(
            select(table).where(table.c.step_id.in_(step_ids)).order_by(table.c.step_id, table.c.seq)
        ).mappings()
        for row in rows:
            grouped[row["step_id"]].append(row)
    return grouped


def read_steps(
    conn: Connection, run_id: str, *, payloads: bool, histories: bool, indices: Sequence[int] | None
) -> list[StepRecord]:
    """A run's steps in order (see `TraceStore.steps` for what the flags leave out)."""
    query = select(Step.__table__, checkpoint_after(Step).label("derived_after")).where(Step.run_id == run_id)
    if indices is not None:
        query = query.where(Step.index.in_(list(indices)))
    rows = conn.execute(query.order_by(Step.index)).mappings().all()
    step_ids = [r["id"] for r in rows]
    mcalls = calls_by_step(conn, ModelCall.__table__, step_ids)
    tcalls = calls_by_step(conn, ToolCall.__table__, step_ids)
    reader = BlobReader(conn)
    if payloads:
        reader.prefetch(
            [r[k] for r in rows for k in ("output_digest", "delta_digest")]
            + [c[k] for calls in tcalls.values() for c in calls for k in ("arguments_digest", "result_digest")]
            + ([r["input_digest"] for r in rows]
               + [c[k] for calls in mcalls.values() for c in calls for k in ("request_digest", "response_digest")]
               if histories else [])
        )
    load: Callable[[str | None], Any] = (lambda d: reader.load(d) if d else None) if payloads else (lambda d: None)
    history: Callable[[str | None], Any] = load if histories else (lambda d: None)
    return [
        StepRecord(
            index=r["index"],
            node=r["node"],
            agent=r["agent"],
            invocation=r["invocation"],
            kind=r["kind"],
            input=history(r["input_digest"]),
            output=load(r["output_digest"]),
            delta=load(r["delta_digest"]),
            checkpoint_before=r["checkpoint_before"],
            checkpoint_after=r["checkpoint_after"] or r["derived_after"],
            task_id=r["task_id"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            error=r["error"],
            digest=r["digest"],
            model_calls=[
                ModelCallRecord(
                    backend=m["backend"],
                    model=m["model"],
                    params=m["params"],
                    request=history(m["request_digest"]) or [],
                    response=history(m["response_digest"]) or {},
                    finish_reason=m["finish_reason"],
                    prompt_tokens=m["prompt_tokens"],
                    completion_tokens=m["completion_tokens"],
                    latency_ms=m["latency_ms"],
                    offset_ms=m["offset_ms"],
                    agent=m["agent"],
                )
                for m in mcalls[r["id"]]
            ],
            tool_calls=[
                ToolCallRecord(
                    name=t["name"],
                    arguments=load(t["arguments_digest"]) or {},
                    result=load(t["result_digest"]),
                    error=t["error"],
                    latency_ms=t["latency_ms"],
                    offset_ms=t["offset_ms"],
                    agent=t["agent"],
                    handoff=t["handoff"],
                )
                for t in tcalls[r["id"]]
            ],
        )
        for r in rows
    ]


def read_activations(conn: Connection, run_id: str, index: int) -> list[bytes | None]:
    """The activations captured during each model call of one step (see
    `TraceStore.step_activations`)."""
    rows = conn.execute(
        select(Blob.data, Blob.redacted)
        .select_from(ModelCall.__table__)
        .join(Step, Step.id == ModelCall.step_id)
        .outerjoin(Blob, Blob.digest == ModelCall.activations_digest)
        .where(Step.run_id == run_id, Step.index == index)
        .order_by(ModelCall.seq)
    ).all()
    return [None if row.data is None or row.redacted else bytes(row.data) for row in rows]
