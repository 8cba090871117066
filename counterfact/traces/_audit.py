"""Auditing a stored run: re-walk its hash chain, check its blobs, and redact payloads later.

Each step's link is sha256(previous link : digest of the step's content), where payloads enter
by their content digests. An edited, deleted or reordered step breaks the chain at that step;
an edited blob no longer hashes to its digest. Redaction drops a blob's bytes but keeps its
digest, so a redacted run still verifies: what was there can no longer be read, and what is
left can still be proven untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy import Connection, select, update

from counterfact.traces._payloads import sha256_hex
from counterfact.traces._schema import Blob, ModelCall, Run, Step, ToolCall
from counterfact.traces._store import (
    GENESIS,
    MESSAGES_MEDIA_TYPE,
    StoreError,
    TraceStore,
    chain_link,
    manifest_children,
    step_content_digest,
)


class ChainReport(BaseModel):
    """The result of verifying one run."""

    run_id: str
    steps: int
    ok: bool
    first_bad_step: int | None = None
    problem: str | None = None
    redacted_blobs: int = 0


def verify_run(store: TraceStore, run_ref: str) -> ChainReport:
    """Re-walk `run_ref`'s chain and blobs; report the first step where it breaks."""
    run_id = store.resolve_run_id(run_ref)
    with store.engine.connect() as conn:
        count, head, status = conn.execute(
            select(Run.step_count, Run.head_digest, Run.status).where(Run.id == run_id)
        ).one()
        steps = conn.execute(
            select(Step.__table__).where(Step.run_id == run_id).order_by(Step.index)
        ).mappings().all()
        previous = GENESIS
        redacted = 0
        for position, row in enumerate(steps):
            bad = lambda why: ChainReport(  # noqa: E731 - a report at this position
                run_id=run_id, steps=len(steps), ok=False, first_bad_step=position, problem=why
            )
            if row["index"] != position:
                return bad(f"step index {row['index']} found where {position} was expected "
                           "(a step was deleted or reordered)")
            model_rows, tool_rows = _call_rows(conn, row["id"])
            fields = {
                "index": row["index"],
                "node": row["node"],
                "agent": row["agent"],
                "invocation": row["invocation"],
                "kind": row["kind"],
                "input_digest": row["input_digest"],
                "output_digest": row["output_digest"],
                "delta_digest": row["delta_digest"],
                "checkpoint_before": row["checkpoint_before"],
                "task_id": row["task_id"],
                "started_at": row["started_at"].isoformat(),
                "ended_at": row["ended_at"].isoformat(),
                "error": row["error"],
                "model_calls": model_rows,
                "tool_calls": tool_rows,
            }
            link = chain_link(previous, step_content_digest(fields))
            if link != row["digest"]:
                return bad("step content does not match its chain link (edited, or moved)")
            digests = [row["input_digest"], row["output_digest"], row["delta_digest"]]
            digests += [d for m in model_rows for d in (m["request_digest"], m["response_digest"],
                                                        m["activations_digest"])]
            digests += [d for t in tool_rows for d in (t["arguments_digest"], t["result_digest"])]
            problem, n_redacted = _check_blobs(conn, [d for d in digests if d])
            if problem:
                return bad(problem)
            redacted += n_redacted
            previous = link
        sealed = status != "running" or count > 0  # an unfinished run has no anchor yet
        if sealed and (len(steps) != count or (steps and previous != head)):
            return ChainReport(
                run_id=run_id,
                steps=len(steps),
                ok=False,
                first_bad_step=len(steps),
                problem=f"run records {count} steps ending in {head[:12]}, found {len(steps)} "
                "(steps were deleted from the end)",
            )
    return ChainReport(run_id=run_id, steps=len(steps), ok=True, redacted_blobs=redacted)


def _call_rows(conn: Connection, step_id: int) -> tuple[list[dict], list[dict]]:
    """A step's calls as the writer hashed them."""
    models = [
        {k: v for k, v in m.items() if k not in ("id", "step_id")}
        for m in conn.execute(
            select(ModelCall.__table__).where(ModelCall.step_id == step_id).order_by(ModelCall.seq)
        ).mappings()
    ]
    tools = [
        {k: v for k, v in t.items() if k not in ("id", "step_id")}
        for t in conn.execute(
            select(ToolCall.__table__).where(ToolCall.step_id == step_id).order_by(ToolCall.seq)
        ).mappings()
    ]
    return models, tools


def _check_blobs(conn: Connection, digests: Sequence[str]) -> tuple[str | None, int]:
    """Every referenced blob exists and hashes to its digest (or is marked redacted)."""
    redacted = 0
    pending = list(digests)
    while pending:
        digest = pending.pop()
        row = conn.execute(
            select(Blob.data, Blob.redacted, Blob.media_type).where(Blob.digest == digest)
        ).one_or_none()
        if row is None:
            return f"payload {digest[:12]} is missing", redacted
        if row.redacted:
            redacted += 1
            continue
        if row.data is None or sha256_hex(row.data) != digest:
            return f"payload {digest[:12]} was altered (its bytes no longer match its digest)", redacted
        if row.media_type == MESSAGES_MEDIA_TYPE:
            pending.extend(manifest_children(row.data))
    return None, redacted


def redact_blobs(store: TraceStore, digests: Sequence[str], note: str) -> int:
    """Drop the bytes of the given payloads for good, keeping their digests in the chain."""
    with store.begin() as conn:
        result = conn.execute(
            update(Blob.__table__)
            .where(Blob.digest.in_(list(digests)))
            .values(data=None, redacted=True, redaction_note=note)
        )
        return int(result.rowcount or 0)


def redact_run_text(store: TraceStore, run_ref: str, needle: str, note: str) -> int:
    """Redact every payload of a run whose stored text contains `needle`.

    Payloads are content-addressed, so the same bytes in another run are redacted with them.
    """
    if not needle:
        raise StoreError("nothing to redact: give the text to remove")
    run_id = store.resolve_run_id(run_ref)
    with store.engine.connect() as conn:
        step_ids = select(Step.id).where(Step.run_id == run_id).scalar_subquery()
        frontier: list[str] = [
            d
            for query in (
                select(Step.input_digest, Step.output_digest, Step.delta_digest).where(
                    Step.run_id == run_id
                ),
                select(ModelCall.request_digest, ModelCall.response_digest).where(
                    ModelCall.step_id.in_(step_ids)
                ),
                select(ToolCall.arguments_digest, ToolCall.result_digest).where(
                    ToolCall.step_id.in_(step_ids)
                ),
            )
            for row in conn.execute(query)
            for d in row
            if d
        ]
        hits: list[str] = []
        seen: set[str] = set()
        while frontier:
            digest = frontier.pop()
            if digest in seen:
                continue
            seen.add(digest)
            row = conn.execute(
                select(Blob.data, Blob.media_type).where(Blob.digest == digest)
            ).one_or_none()
            if row is None or row.data is None:
                continue
            if row.media_type == MESSAGES_MEDIA_TYPE:
                frontier.extend(manifest_children(row.data))
            elif needle.encode() in row.data:
                hits.append(digest)
    return redact_blobs(store, hits, note) if hits else 0
