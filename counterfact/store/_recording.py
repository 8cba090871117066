"""The recorder's side of the checkpoint saver: which LangGraph threads are recorded into runs,
the steps staged until their node's writes (or the next checkpoint) are stored, the checkpoint
writes held for the next checkpoint, and the threads whose recording stopped at a failed write.

A recorded step commits once: its checkpoint writes, its row, calls and blobs, and the
checkpoint that follows it, in one transaction (`put` of that checkpoint). LangGraph stores a
task's writes on their own so that, after a crash, the tasks of a super-step that had finished
are not run again; so writes are held only when no other task of their super-step is still
running (`hold_writes`): then nothing runs between them and the checkpoint LangGraph stores
next, and a crash in between leaves the previous checkpoint, whose task runs again, with no
step recorded for it. Writes that cannot wait are written at once, with their step.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from counterfact.store._chain import PreparedStep, RunWriter
from counterfact.store._checkpoint_rows import CP, delete_checkpoints
from counterfact.store._engine import StoreError
from counterfact.store._statements import execute
from counterfact.store._store import TraceStore


class RecordedThreads:
    """Recorded threads, their staged steps and failed writes. Thread-safe."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._writers: dict[str, RunWriter] = {}
        self._staged: dict[str, dict[str, PreparedStep]] = defaultdict(dict)
        # Recorded threads whose write failed, with the error. LangGraph stores a task's
        # writes in the background and goes on with the next step: after a failed write the
        # run must stop there, or it would go on recording with a step missing.
        self._failed: dict[str, BaseException] = {}
        self._thread_locks: dict[str, threading.Lock] = {}
        # recorded tasks running now: thread -> {(checkpoint the task started from, task id)}
        self._running: dict[str, set[tuple[str, str]]] = defaultdict(set)
        # checkpoint writes held for the thread's next checkpoint: (rows, replace special ones)
        self._held: dict[str, list[tuple[list[dict[str, Any]], bool]]] = defaultdict(list)
        self._lock = threading.Lock()

    def attach(self, thread_id: str, writer: RunWriter) -> None:
        """Record steps of `thread_id` into `writer`'s run."""
        with self._lock:
            self._writers[thread_id] = writer
            self._failed.pop(thread_id, None)

    def detach(self, thread_id: str) -> None:
        """Stop recording `thread_id`, writing any step and checkpoint writes still held (a
        run that ended at an error or an interrupt has no checkpoint after them)."""
        writer = self.writer(thread_id)
        with self._lock:
            pending = bool(self._held.get(thread_id) or self._staged.get(thread_id))
        try:
            if writer is not None and pending and self._failed.get(thread_id) is None:
                with self.transaction(thread_id, writer) as conn:
                    self.write_held(conn, thread_id, writer)
        finally:
            with self._lock:
                self._writers.pop(thread_id, None)
                self._staged.pop(thread_id, None)
                self._held.pop(thread_id, None)
                self._running.pop(thread_id, None)
                self._failed.pop(thread_id, None)
                self._thread_locks.pop(thread_id, None)

    def writer(self, thread_id: str) -> RunWriter | None:
        """The writer recording `thread_id`, if it is being recorded."""
        return self._writers.get(thread_id)

    def start(self, thread_id: str, checkpoint_id: str, task_id: str) -> None:
        """A recorded task of `thread_id` started from `checkpoint_id`."""
        with self._lock:
            self._running[thread_id].add((checkpoint_id, task_id))

    def stage(self, thread_id: str, task_id: str, step: PreparedStep) -> None:
        """Hold a finished node's step until its writes or next checkpoint are stored."""
        with self._lock:
            self._staged[thread_id][task_id] = step
            self._running[thread_id].discard((step.step.checkpoint_before or "", task_id))

    def hold_writes(self, thread_id: str, checkpoint_id: str, task_id: str, rows: list[dict[str, Any]], special: bool) -> bool:
        """Hold a task's checkpoint writes for the thread's next checkpoint, unless another
        task of the same super-step is still running (a crash meanwhile would lose them, and
        LangGraph would run the finished task again); whether they are held."""
        with self._lock:
            if any(c == checkpoint_id and t != task_id for c, t in self._running.get(thread_id, ())):
                return False
            self._held[thread_id].append((rows, special))
            return True

    def write_held(self, conn: Connection, thread_id: str, writer: RunWriter) -> None:
        """Write the thread's held checkpoint writes and all its staged steps in the caller's
        transaction: writes first, as LangGraph stored them, then the steps, in the order they
        finished."""
        with self._lock:
            held = self._held.pop(thread_id, None) or []
        sql = self.store.sql
        for rows, special in held:
            execute(conn, sql.replace_writes if special else sql.insert_writes, rows)
        for step in self.take_staged(thread_id, None):
            writer.write(conn, step)

    def take_staged(self, thread_id: str, task_id: str | None) -> list[PreparedStep]:
        """The staged steps of `thread_id` (of one task, or all when `task_id` is None),
        no longer staged."""
        with self._lock:
            staged = self._staged.get(thread_id)
            if not staged:
                return []
            if task_id is None:
                steps = list(staged.values())
                staged.clear()
                return steps
            step = staged.pop(task_id, None)
            return [step] if step is not None else []

    @contextmanager
    def transaction(self, thread_id: str, writer: RunWriter | None, writes_of: str | None = None) -> Iterator[Connection]:
        """A write transaction for a thread; for a recorded run, none after one failed.

        `writes_of`: the checkpoint whose task writes these are. If they fail, a later
        checkpoint that LangGraph stored meanwhile (it stores a task's writes in the background)
        would make a resume skip the task whose step and writes were lost: such checkpoints
        are removed, so the resume runs that task again."""
        if writer is None:
            with self.store.begin(blind=True) as conn:
                yield conn
            return
        with self._thread_lock(thread_id):  # a write of this run waits for the last to settle
            failed = self._failed.get(thread_id)
            if failed is not None:
                raise StoreError(
                    f"recording of run {thread_id} stopped at a failed write; nothing after it is stored"
                ) from failed
            try:
                with self.store.begin(blind=True) as conn:
                    yield conn
            except SQLAlchemyError as exc:
                self._failed[thread_id] = exc
                if writes_of is not None:
                    with suppress(SQLAlchemyError):  # best effort: the database may be away
                        self._forget_after(thread_id, writes_of)
                raise

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        with self._lock:
            return self._thread_locks.setdefault(thread_id, threading.Lock())

    def _forget_after(self, thread_id: str, checkpoint_id: str) -> None:
        """Remove the thread's checkpoints newer than `checkpoint_id` (ids sort by time)."""
        with self.store.begin() as conn:
            later = conn.execute(
                select(CP.c.thread_id, CP.c.checkpoint_ns, CP.c.checkpoint_id).where(
                    CP.c.thread_id == thread_id, CP.c.checkpoint_ns == "", CP.c.checkpoint_id > checkpoint_id
                )
            ).all()
            delete_checkpoints(conn, [tuple(k) for k in later])
