"""Auditing a stored run: re-walk its hash chain, check its blobs, and redact payloads later.

Each step's link is sha256(previous link : digest of the step's content), where payloads enter
by their content digests. An edited, deleted or reordered step breaks the chain at that step;
an edited blob no longer hashes to its digest. Redaction drops a blob's bytes but keeps its
digest, so a redacted run still verifies: what was there can no longer be read, and what is
left can still be proven untouched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, select, update

from counterfact.capture import sha256_hex
from counterfact.store._base import Store
from counterfact.store._blobs import MESSAGES_MEDIA_TYPE, BlobReader, manifest_children
from counterfact.store._chain import GENESIS, PLACEMENT, chain_link, step_content_digest
from counterfact.store._engine import StoreError
from counterfact.store._steps import calls_by_step
from counterfact.store.schema import Blob, ModelCall, Run, Step, ToolCall


class ChainReport(BaseModel):
    """The result of verifying one run."""

    run_id: str
    steps: int
    ok: bool
    first_bad_step: int | None = None
    problem: str | None = None
    redacted_blobs: int = 0


def verify_run(store: Store, run_ref: str) -> ChainReport:
    """Re-walk `run_ref`'s chain and blobs; report the first step where it breaks.

    The calls and blobs of the whole run are read in a few batched queries (a blob that many
    steps share, such as a resent history, is checked once), so a long run verifies in one
    pass rather than in several round trips per step.
    """
    run_id = store.resolve_run_id(run_ref)
    with store.connect() as conn:
        count, head, status = conn.execute(
            select(Run.step_count, Run.head_digest, Run.status).where(Run.id == run_id)
        ).one()
        steps = conn.execute(
            select(Step.__table__).where(Step.run_id == run_id).order_by(Step.index)
        ).mappings().all()
        step_ids = [row["id"] for row in steps]
        models = _hashed_calls(calls_by_step(conn, ModelCall.__table__, step_ids))
        tools = _hashed_calls(calls_by_step(conn, ToolCall.__table__, step_ids))
        per_step = [_step_digests(row, models.get(row["id"], []), tools.get(row["id"], [])) for row in steps]
        # step inputs and model requests were written as message lists (manifests)
        lists = {row["input_digest"] for row in steps} | {m["request_digest"] for ms in models.values() for m in ms}
        problems, redacted = _blob_problems(conn, [d for digests in per_step for d in digests], lists)
    previous = GENESIS
    for position, row in enumerate(steps):
        bad = lambda why: ChainReport(  # noqa: E731 - a report at this position
            run_id=run_id, steps=len(steps), ok=False, first_bad_step=position, problem=why
        )
        if row["index"] != position:
            return bad(f"step index {row['index']} found where {position} was expected "
                       "(a step was deleted or reordered)")
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
            "model_calls": models.get(row["id"], []),
            "tool_calls": tools.get(row["id"], []),
        }
        link = chain_link(previous, step_content_digest(fields))
        if link != row["digest"]:
            return bad("step content does not match its chain link (edited, or moved)")
        problem = next((problems[d] for d in per_step[position] if d in problems), None)
        if problem:
            return bad(problem)
        previous = link
    if status == "running":
        # an unfinished run is anchored only as far as it was when it was made: nothing for a
        # new run, the copied steps for a fork (a replay cut off goes on past them)
        cut = len(steps) < count or (count > 0 and steps[count - 1]["digest"] != head)
    else:
        cut = len(steps) != count or (bool(steps) and previous != head)
    if cut:
        return ChainReport(
            run_id=run_id,
            steps=len(steps),
            ok=False,
            first_bad_step=len(steps),
            problem=f"run records {count} steps ending in {head[:12]}, found {len(steps)} "
            "(steps were deleted from the end)",
        )
    return ChainReport(run_id=run_id, steps=len(steps), ok=True, redacted_blobs=len(redacted))


def _hashed_calls(by_step: dict[int, list[Any]]) -> dict[int, list[dict[str, Any]]]:
    """Calls as the writer hashed them: their columns without the row and step ids."""
    return {
        step_id: [
            {k: v for k, v in row.items() if k not in ("id", "step_id") and not (k in PLACEMENT and v is None)}
            for row in rows
        ]
        for step_id, rows in by_step.items()
    }


def _step_digests(row: Any, model_rows: list[dict[str, Any]], tool_rows: list[dict[str, Any]]) -> list[str]:
    digests = [row["input_digest"], row["output_digest"], row["delta_digest"]]
    digests += [d for m in model_rows for d in (m["request_digest"], m["response_digest"], m["activations_digest"])]
    digests += [d for t in tool_rows for d in (t["arguments_digest"], t["result_digest"])]
    return [d for d in digests if d]


def _blob_problems(
    conn: Connection, digests: Sequence[str], lists: set[str | None]
) -> tuple[dict[str, str], set[str]]:
    """What is wrong with each blob (a message manifest inherits its first bad child's
    problem), and which blobs are redacted. Every blob is read once, level by level.

    `lists` are the digests written as message lists, and so are their prefixes: only they may
    be read as manifests. The media type is not hashed, so a manifest retyped as a plain value
    would hide its messages from the check (and a value retyped as a manifest would not parse).
    """
    lists = set(lists)
    problems: dict[str, str] = {}
    redacted: set[str] = set()
    children: dict[str, list[str]] = {}
    reader = BlobReader(conn)
    level = list(dict.fromkeys(digests))
    while level:
        reader.fetch(level)
        following: list[str] = []
        for digest in level:
            row = reader.rows.get(digest)
            if row is None:
                problems[digest] = f"payload {digest[:12]} is missing"
            elif row.redacted:
                redacted.add(digest)
            elif row.data is None or sha256_hex(row.data) != digest:
                problems[digest] = f"payload {digest[:12]} was altered (its bytes no longer match its digest)"
            elif (row.media_type == MESSAGES_MEDIA_TYPE) != (digest in lists):
                problems[digest] = f"payload {digest[:12]} has the wrong media type {row.media_type} (it was changed)"
            elif row.media_type == MESSAGES_MEDIA_TYPE:
                lists.add(json.loads(row.data)["prefix"])
                children[digest] = manifest_children(row.data)
                following.extend(c for c in children[digest] if c not in reader.rows and c not in problems)
        level = list(dict.fromkeys(following))

    def resolve(digest: str, path: frozenset[str]) -> str | None:
        if digest in problems or digest not in children or digest in path:
            return problems.get(digest)
        inherited = next((p for c in children[digest] if (p := resolve(c, path | {digest}))), None)
        if inherited:
            problems[digest] = inherited
        return inherited

    for digest in list(children):
        resolve(digest, frozenset())
    return problems, redacted


def redact_blobs(store: Store, digests: Sequence[str], note: str) -> int:
    """Drop the bytes of the given payloads for good, keeping their digests in the chain."""
    with store.begin() as conn:
        result = conn.execute(
            update(Blob.__table__)
            .where(Blob.digest.in_(list(digests)))
            .values(data=None, redacted=True, redaction_note=note)
        )
        return int(result.rowcount or 0)


def redact_run_text(store: Store, run_ref: str, needle: str, note: str) -> int:
    """Redact every payload of a run whose stored text contains `needle`.

    Payloads are content-addressed, so the same bytes in another run are redacted with them.
    """
    if not needle:
        raise StoreError("nothing to redact: give the text to remove")
    run_id = store.resolve_run_id(run_ref)
    with store.connect() as conn:
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
