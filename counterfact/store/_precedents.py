"""Precedents of a tool call: what the same tool, called with the same arguments, returned in
other recorded runs. Payloads are content-addressed, so equal arguments share one digest and a
precedent is found by an index lookup, not by reading runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from counterfact.store._blobs import BlobReader
from counterfact.store._models import RunStatus
from counterfact.store.schema import Run, Step, ToolCall


class ToolPrecedent(BaseModel):
    """One earlier call of a tool with the same arguments: the run it was in, and what it
    returned (or the error it raised)."""

    run_id: str
    run_status: RunStatus
    run_labels: dict[str, Any] = Field(default_factory=dict)
    step: int
    result: Any = None
    error: str | None = None


def read_precedents(conn: Connection, name: str, arguments_digest: str, *, excluding: str,
                    limit: int) -> list[ToolPrecedent]:
    """Calls of tool `name` with these arguments in original runs (not replays, whose results
    may be the recorded ones reused) other than `excluding`, newest first."""
    rows = conn.execute(
        select(Run.id, Run.status, Run.labels, Step.index, ToolCall.result_digest, ToolCall.error)
        .select_from(ToolCall.__table__)
        .join(Step, Step.id == ToolCall.step_id)
        .join(Run, Run.id == Step.run_id)
        .where(ToolCall.name == name, ToolCall.arguments_digest == arguments_digest,
               Run.parent_run_id.is_(None), Run.id != excluding)
        .order_by(Run.created_at.desc(), Run.id.desc(), Step.index, ToolCall.seq)
        .limit(limit)
    ).all()
    reader = BlobReader(conn)
    reader.prefetch([row.result_digest for row in rows if row.result_digest])
    return [
        ToolPrecedent(run_id=row.id, run_status=row.status, run_labels=row.labels or {}, step=row.index,
                      result=reader.load(row.result_digest) if row.result_digest else None, error=row.error)
        for row in rows
    ]
