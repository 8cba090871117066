"""The recording hot path's SQL, built once per dialect.

Statements built per call cost SQLAlchemy a fresh cache key each time; these are built when a
store opens and reused for every step, with values passed as bind parameters.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select

from counterfact.store._dialects import Dialect
from counterfact.store.schema import (
    Blob,
    Checkpoint,
    CheckpointWrite,
    ModelCall,
    Run,
    Step,
    ToolCall,
)

_CP = Checkpoint.__table__
_WR = CheckpointWrite.__table__
_WRITE_KEYS = ["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"]


class Statements:
    """Prebuilt statements for one SQL dialect."""

    def __init__(self, dialect: Dialect) -> None:
        cp = dialect.upsert(_CP)
        self.upsert_checkpoint = cp.on_conflict_do_update(
            index_elements=["thread_id", "checkpoint_ns", "checkpoint_id"],
            set_={
                c.name: cp.excluded[c.name] for c in _CP.columns if not c.primary_key
            },
        )
        wr = dialect.upsert(_WR)
        self.insert_writes = wr.on_conflict_do_nothing(index_elements=_WRITE_KEYS)
        # special channels (errors, interrupts) are replaced, as LangGraph expects
        self.replace_writes = wr.on_conflict_do_update(
            index_elements=_WRITE_KEYS,
            set_={k: wr.excluded[k] for k in ("channel", "type", "value", "task_path")},
        )
        self.insert_blobs = dialect.upsert(Blob.__table__).on_conflict_do_nothing(index_elements=["digest"])
        # Nothing is read back (no implicit RETURNING of the new id): a step's calls find it by
        # (run_id, step_index), so that a step's statements can all go out in one round trip.
        self.insert_step = insert(Step.__table__).inline()
        step_id = (
            select(Step.id)
            .where(Step.run_id == bindparam("run_id"), Step.index == bindparam("step_index"))
            .scalar_subquery()
        )
        self.insert_model_calls = insert(ModelCall.__table__).values(step_id=step_id).inline()
        self.insert_tool_calls = insert(ToolCall.__table__).values(step_id=step_id).inline()
        self.insert_run = insert(Run.__table__)
