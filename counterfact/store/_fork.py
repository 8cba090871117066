"""Forking a recorded run just before one of its steps: the store side of a replay.

The child run gets copies of the parent's steps before the fork (same content, so the same
chain links: the child's chain visibly starts with its parent's), and, in its own LangGraph
thread, a copy of the checkpoint the target step started from, with the writes of the other
tasks of that super-step (so parallel siblings are not run again) but not the target's own.
Everything is done in SQL, in one transaction: forking a 100-step run copies rows, it does
not decode them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, func, insert, literal, select, update

from counterfact.store._base import Store
from counterfact.store._chain import GENESIS
from counterfact.store._engine import StoreError
from counterfact.store._models import RunRecord
from counterfact.store._steps import checkpoint_after
from counterfact.store.schema import (
    Checkpoint,
    CheckpointWrite,
    ModelCall,
    Run,
    Step,
    ToolCall,
)


class ForkPoint(BaseModel):
    """Where a child run starts: its thread's copied checkpoint, and the target step."""

    child_run_id: str
    parent_run_id: str
    step: int
    node: str
    agent: str | None
    invocation: int
    kind: str
    task_id: str | None
    checkpoint_id: str


def fork_run(store: Store, parent_id: str, step: int, child: RunRecord) -> ForkPoint:
    """Create `child` as a fork of `parent_id` just before its step `step`."""
    steps = store.steps(parent_id, payloads=False)
    if not 0 <= step < len(steps):
        raise StoreError(f"step {step} is out of range: run {parent_id} has steps 0..{len(steps) - 1}")
    target = steps[step]
    if target.checkpoint_before is None:
        raise StoreError(f"step {step} of run {parent_id} has no checkpoint to fork from")
    child = child.model_copy(update={"parent_run_id": parent_id, "fork_step": step})
    s, c = Step.__table__, Step.__table__.alias("child")
    with store.begin() as conn:
        exists = conn.execute(
            select(Checkpoint.checkpoint_id).where(
                Checkpoint.thread_id == parent_id,
                Checkpoint.checkpoint_ns == "",
                Checkpoint.checkpoint_id == target.checkpoint_before,
            )
        ).first()
        if exists is None:
            raise StoreError(f"the checkpoint before step {step} of run {parent_id} is missing")
        store.create_run(child, conn)
        copied = [col for col in s.columns if col.name not in ("id", "run_id", "checkpoint_after")]
        conn.execute(
            insert(s).from_select(
                ["run_id", "checkpoint_after", *[col.name for col in copied]],
                select(
                    literal(child.id),
                    _after(s),
                    *copied,
                ).where(s.c.run_id == parent_id, s.c.index < step),
            )
        )
        pairs = (
            select(s.c.id.label("old"), c.c.id.label("new"))
            .join(c, and_(c.c.run_id == child.id, c.c.index == s.c.index))
            .where(s.c.run_id == parent_id, s.c.index < step)
            .subquery()
        )
        for table in (ModelCall.__table__, ToolCall.__table__):
            columns = [col for col in table.columns if col.name not in ("id", "step_id")]
            conn.execute(
                insert(table).from_select(
                    ["step_id", *[col.name for col in columns]],
                    select(pairs.c.new, *columns).join(pairs, pairs.c.old == table.c.step_id),
                )
            )
        head = steps[step - 1].digest if step > 0 else GENESIS
        conn.execute(
            update(Run.__table__).where(Run.id == child.id).values(step_count=step, head_digest=head)
        )
        for table in (Checkpoint.__table__, CheckpointWrite.__table__):
            where = [
                table.c.thread_id == parent_id,
                table.c.checkpoint_ns == "",
                table.c.checkpoint_id == target.checkpoint_before,
            ]
            if table is CheckpointWrite.__table__:  # the target runs again: not its own writes
                where.append(table.c.task_id != (target.task_id or ""))
            columns = [
                literal(child.id).label("thread_id") if col.name == "thread_id" else col
                for col in table.columns
            ]
            conn.execute(
                insert(table).from_select([col.name for col in table.columns], select(*columns).where(*where))
            )
    return ForkPoint(
        child_run_id=child.id,
        parent_run_id=parent_id,
        step=step,
        node=target.node,
        agent=target.agent,
        invocation=target.invocation,
        kind=target.kind,
        task_id=target.task_id,
        checkpoint_id=target.checkpoint_before,
    )


def _after(steps: Any) -> Any:
    """A copied step keeps its own next checkpoint (in the parent's thread)."""
    return func.coalesce(steps.c.checkpoint_after, checkpoint_after(steps.c))
