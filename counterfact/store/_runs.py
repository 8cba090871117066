"""A run's row: what is written when it starts (redacted, with the text the runs list
searches) and when it ends (totals of its model calls), and its record as read back."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select

from counterfact.capture import to_jsonable
from counterfact.store._models import Outcome, RunRecord, RunStatus, utcnow
from counterfact.store._redact import Redactor
from counterfact.store.schema import ModelCall, Step

SEARCH_CHARS = 2000  # as migration 0005 fills runs.search_text


def search_text_of(run_id: str, workflow: str, task_input: Any) -> str:
    """What the runs list's text search matches: id, workflow and task input, lower-cased."""
    text = f"{run_id} {workflow} {json.dumps(task_input, ensure_ascii=False, default=str)}"
    return text[:SEARCH_CHARS].lower()


def run_values(record: RunRecord, redact: Redactor) -> dict[str, Any]:
    """A new run's row: task input and labels redacted."""
    values = record.model_dump(exclude={"outcome"})
    values["task_input"] = redact(to_jsonable(record.task_input))
    values["labels"] = redact(to_jsonable(record.labels))
    values["outcome"] = record.outcome.model_dump() if record.outcome else None
    values["search_text"] = search_text_of(record.id, record.workflow, values["task_input"])
    return values


def finished_values(
    conn: Connection, run_id: str, status: RunStatus, outcome: Outcome | None, error: str | None
) -> dict[str, Any]:
    """What a run's row gets when it ends: status, end time, outcome, and the totals of its
    model calls."""
    tokens, latency = conn.execute(
        select(
            func.coalesce(func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0),
            func.coalesce(func.sum(ModelCall.latency_ms), 0.0),
        )
        .join(Step, Step.id == ModelCall.step_id)
        .where(Step.run_id == run_id)
    ).one()
    values: dict[str, Any] = {
        "status": status, "ended_at": utcnow(), "total_tokens": int(tokens), "total_latency_ms": float(latency),
        "error": error,
    }
    if outcome is not None:
        values["outcome"] = outcome.model_dump()
    return values


def run_record(row: Any) -> RunRecord:
    """A run's row as its record (the columns kept for search and the chain left out)."""
    return RunRecord.model_validate({k: v for k, v in row.items() if k not in ("search_text", "head_digest")})
