"""LangGraph checkpoint rows: read back as `CheckpointTuple`s with their pending writes, and
deleted with their writes, in batches of keys."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy import Connection, delete, select, tuple_

from counterfact.store.schema import Checkpoint as CheckpointRow
from counterfact.store.schema import CheckpointWrite

CP = CheckpointRow.__table__
WR = CheckpointWrite.__table__
_BATCH = 500

Key = tuple[str, str, str]  # thread_id, checkpoint_ns, checkpoint_id


def pending_writes(conn: Connection, serde: SerializerProtocol, rows: Sequence[Any]) -> dict[Key, list[tuple[str, str, Any]]]:
    """The writes of these checkpoints' tasks, by checkpoint, in task order."""
    keys = [(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"]) for r in rows]
    found: dict[Key, list[tuple[str, str, Any]]] = defaultdict(list)
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        for w in conn.execute(
            select(WR)
            .where(tuple_(WR.c.thread_id, WR.c.checkpoint_ns, WR.c.checkpoint_id).in_(chunk))
            .order_by(WR.c.task_path, WR.c.task_id, WR.c.idx)
        ).mappings():
            found[(w["thread_id"], w["checkpoint_ns"], w["checkpoint_id"])].append(
                (w["task_id"], w["channel"], serde.loads_typed((w["type"], w["value"])))
            )
    return found


def checkpoint_tuple(serde: SerializerProtocol, row: Any, writes: dict[Key, Any]) -> CheckpointTuple:
    """A checkpoint row as LangGraph reads it, with its parent's config and pending writes."""
    key = (row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"])
    parent = row["parent_checkpoint_id"]

    def config(checkpoint_id: str) -> Any:
        return {"configurable": {"thread_id": row["thread_id"], "checkpoint_ns": row["checkpoint_ns"],
                                 "checkpoint_id": checkpoint_id}}

    return CheckpointTuple(
        config=config(row["checkpoint_id"]),
        checkpoint=serde.loads_typed((row["type"], row["checkpoint"])),
        metadata=row["metadata"] or {},
        parent_config=config(parent) if parent else None,
        pending_writes=writes.get(key, []),
    )


def delete_checkpoints(conn: Connection, keys: list[Key]) -> None:
    """Delete these checkpoints and their writes."""
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        for table in (WR, CP):
            conn.execute(
                delete(table).where(tuple_(table.c.thread_id, table.c.checkpoint_ns, table.c.checkpoint_id).in_(chunk))
            )
