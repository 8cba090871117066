"""Writing steps into a run's hash chain: a step is encoded outside any transaction
(`prepare_step`), then appended by its run's `RunWriter`, which numbers it and links it to the
step before (`chain_link` of the previous link and the step's `step_content_digest`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Connection, select, update

from counterfact.capture import (
    ModelCallRecord,
    ToolCallRecord,
    digest_of,
    sha256_hex,
    to_jsonable,
)
from counterfact.store._blobs import BlobCodec, BlobRow
from counterfact.store._listeners import StoreListener, after_commit
from counterfact.store._models import StepRecord
from counterfact.store._redact import Redactor
from counterfact.store._statements import Statements, execute
from counterfact.store.schema import Run, Step


class ChainedStore(Protocol):
    """What writing a chain needs of a store (the SQLAlchemy `TraceStore` has it)."""

    blobs: BlobCodec
    sql: Statements
    live: StoreListener | None

    @property
    def redact(self) -> Redactor: ...

    def connect(self) -> AbstractContextManager[Connection]: ...


GENESIS = "0" * 64  # the link before a run's first step
PLACEMENT = ("offset_ms", "agent", "handoff")  # call columns hashed only when set (added in 0006)
_UNPLACED = {"offset_ms": None, "agent": None}  # every row of one insert names the same columns


def step_content_digest(fields: dict[str, Any]) -> str:
    """The digest of a step's content, as the hash chain covers it.

    Payloads enter by their digests, so redacting a blob later leaves the chain intact.
    `checkpoint_after` is left out (it is known only once the next checkpoint exists), and so
    is the run id: a replay copies its parent's steps before the fork, and its chain then
    starts with exactly its parent's links, which shows the shared prefix is untouched. The
    run's `head_digest` anchors the chain to the run.
    """
    return digest_of(fields)


def chain_link(previous: str, content_digest: str) -> str:
    return sha256_hex(f"{previous}:{content_digest}".encode())


def chain_end(conn: Connection, run_id: str) -> tuple[int, str]:
    """How many steps a run has, and the last link of its chain."""
    last = conn.execute(
        select(Step.index, Step.digest).where(Step.run_id == run_id).order_by(Step.index.desc()).limit(1)
    ).first()
    return (last.index + 1, last.digest) if last else (0, GENESIS)


def seal_run(conn: Connection, run_id: str) -> None:
    """Anchor the run's chain: its step count and last link, so a deleted tail shows.

    Done when a run finishes rather than at every step, which keeps one statement off the
    recording hot path; a run still running (or crashed) is verified up to its last step.
    """
    count, head = chain_end(conn, run_id)
    conn.execute(update(Run.__table__).where(Run.id == run_id).values(step_count=count, head_digest=head))


@dataclass
class PreparedStep:
    """A step encoded for writing: payload digests and blob rows computed outside any
    transaction, so that the write lock is held only for the inserts."""

    step: StepRecord
    fields: dict[str, Any]
    model_rows: list[dict[str, Any]]
    tool_rows: list[dict[str, Any]]
    blobs: list[BlobRow]


def _placed(call: ModelCallRecord | ToolCallRecord) -> dict[str, Any]:
    """A call's place in its step, as columns; unset ones are left out of the row (and so of
    the hash chain), so the links of calls recorded before these columns existed still hold."""
    fields = type(call).model_fields  # (a missing attribute costs pydantic an exception)
    return {k: v for k in PLACEMENT if k in fields and (v := getattr(call, k)) is not None}


def prepare_step(store: ChainedStore, step: StepRecord, input_messages: Sequence[Any] | None = None) -> PreparedStep:
    """Encode `step`'s payloads; `input_messages` (raw state messages) replaces `step.input`."""
    blobs: list[BlobRow] = []

    def put(value: Any) -> str | None:
        if value is None:
            return None
        row = store.blobs.encode_value(value)
        blobs.append(row)
        return row[0]

    def put_messages(messages: Sequence[Any] | None) -> str | None:
        if messages is None:
            return None
        rows = store.blobs.encode_messages(messages)
        blobs.extend(rows)
        return rows[-1][0]

    fields: dict[str, Any] = {
        "node": step.node,
        "agent": step.agent,
        "invocation": step.invocation,
        "kind": step.kind,
        "input_digest": put_messages(input_messages if input_messages is not None else step.input),
        "output_digest": put(step.output),
        "delta_digest": put(step.delta),
        "checkpoint_before": step.checkpoint_before,
        "task_id": step.task_id,
        "started_at": step.started_at.isoformat(),
        "ended_at": step.ended_at.isoformat(),
        "error": store.redact.text(step.error) if step.error else None,
    }
    model_rows = []
    for seq, call in enumerate(step.model_calls):
        activations = None
        if call.activations is not None:
            activations = sha256_hex(call.activations)
            blobs.append((activations, call.activations, "application/safetensors"))
        model_rows.append(
            {
                "seq": seq,
                "backend": call.backend,
                "model": call.model,
                "params": store.redact(to_jsonable(call.params)),
                "request_digest": put_messages(call.request),
                "response_digest": put(call.response),
                "activations_digest": activations,
                "finish_reason": call.finish_reason,
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "latency_ms": call.latency_ms,
                **_placed(call),
            }
        )
    tool_rows = [
        {
            "seq": seq,
            "name": call.name,
            "arguments_digest": put(call.arguments),
            "result_digest": put(call.result),
            "error": store.redact.text(call.error) if call.error else None,
            "latency_ms": call.latency_ms,
            **_placed(call),
        }
        for seq, call in enumerate(step.tool_calls)
    ]
    return PreparedStep(step, fields, model_rows, tool_rows, blobs)


class RunWriter:
    """Appends steps to one run: dense indices, invocation counts, and the hash chain."""

    def __init__(
        self, store: ChainedStore, run_id: str, next_index: int, head: str, invocations: dict[str, set[int]]
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.next_index = next_index
        self.head = head
        self._invocations = invocations
        self._lock = threading.Lock()

    @classmethod
    def resume(cls, store: ChainedStore, run_id: str) -> RunWriter:
        """A writer that appends steps to `run_id`, continuing its chain and its numbering."""
        with store.connect() as conn:
            count, head = chain_end(conn, run_id)
            invocations: dict[str, set[int]] = {}
            for node, invocation in [
                *conn.execute(select(Step.node, Step.invocation).where(Step.run_id == run_id)),
                *_fork_siblings(conn, run_id),
            ]:
                invocations.setdefault(node, set()).add(invocation)
        return cls(store, run_id, count, head or GENESIS, invocations)

    def next_invocation(self, node: str) -> int:
        """The nth-invocation number for a new execution of `node`: the smallest not taken.

        In a fork, the re-executed step gets its parent's number back even when a parallel
        sibling of a higher number finished (and was copied) before it."""
        with self._lock:
            used = self._invocations.setdefault(node, set())
            n = next(i for i in range(len(used) + 1) if i not in used)
            used.add(n)
            return n

    def write(self, conn: Connection, step: StepRecord | PreparedStep) -> StepRecord:
        """Write `step` (and its calls and payloads) in the caller's transaction."""
        prepared = step if isinstance(step, PreparedStep) else prepare_step(self.store, step)
        record = prepared.step
        with self._lock:
            index = self.next_index if record.index is None else record.index
            fields = {"index": index, **prepared.fields}
            content = step_content_digest({**fields, "model_calls": prepared.model_rows, "tool_calls": prepared.tool_rows})
            link = chain_link(self.head, content)
            self.store.blobs.put(conn, prepared.blobs)
            row = {
                **fields,
                "run_id": self.run_id,
                "checkpoint_after": record.checkpoint_after,
                "started_at": record.started_at,
                "ended_at": record.ended_at,
                "digest": link,
            }
            sql = self.store.sql
            execute(conn, sql.insert_step, [row])
            key = {"run_id": self.run_id, "step_index": index}
            execute(conn, sql.insert_model_calls, [{**_UNPLACED, **m, **key} for m in prepared.model_rows])
            execute(conn, sql.insert_tool_calls, [{**_UNPLACED, "handoff": None, **t, **key} for t in prepared.tool_rows])
            self.next_index = index + 1
            self.head = link
            written = record.model_copy(update={"index": index, "digest": link})
            if self.store.live is not None:
                after_commit(conn, partial(self.store.live.step, self.store.redact, self.run_id, written))
            return written


def _fork_siblings(conn: Connection, run_id: str) -> list[tuple[str, int]]:
    """For a fork: the (node, invocation) of the parallel siblings of its fork step. Their
    writes were copied, so they never run again in the child, and their numbers stay taken
    even where they finished after the fork step and so were not copied as steps."""
    fork = conn.execute(select(Run.parent_run_id, Run.fork_step).where(Run.id == run_id)).first()
    if fork is None or fork.parent_run_id is None or fork.fork_step is None:
        return []
    target = conn.execute(
        select(Step.checkpoint_before).where(Step.run_id == fork.parent_run_id, Step.index == fork.fork_step)
    ).first()
    if target is None or target.checkpoint_before is None:
        return []
    return [
        (row.node, row.invocation)
        for row in conn.execute(
            select(Step.node, Step.invocation).where(
                Step.run_id == fork.parent_run_id,
                Step.checkpoint_before == target.checkpoint_before,
                Step.index != fork.fork_step,
            )
        )
    ]
