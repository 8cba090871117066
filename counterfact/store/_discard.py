"""Discarding what a lost attempt wrote, so that a retried unit of work is stored once.

A worker that dies in the middle of a run leaves a run row, some steps and checkpoints. When
the run is retried under the same id, the first attempt's rows go first, in one transaction:
the store then holds exactly one run per unit asked for, never a half-written one beside it.
"""

from __future__ import annotations

from sqlalchemy import delete, or_, select

from counterfact.store._base import Store
from counterfact.store.schema import Checkpoint, CheckpointWrite, Run


def discard_run(store: Store, run_id: str) -> bool:
    """Delete run `run_id` with its steps, calls and checkpoints; False when there is none.

    Blobs stay: they are content-addressed and may be shared with other runs."""
    with store.begin() as conn:
        if conn.execute(select(Run.id).where(Run.id == run_id)).first() is None:
            return False
        conn.execute(delete(CheckpointWrite).where(CheckpointWrite.thread_id == run_id))
        conn.execute(delete(Checkpoint).where(or_(Checkpoint.thread_id == run_id, Checkpoint.run_id == run_id)))
        conn.execute(delete(Run).where(Run.id == run_id))  # steps and calls go by cascade
    return True
