"""A LangGraph checkpoint saver on the trace store's SQLAlchemy engine.

Besides being a complete `BaseCheckpointSaver` (including delete_for_runs, copy_thread and
prune), it is where recorded steps become durable: the recorder stages each finished node's
step, and the saver writes it in one transaction with that node's checkpoint writes and the
checkpoint that follows (`put`), or, when another task of its super-step is still running,
with its checkpoint writes at once (`put_writes`; see `RecordedThreads`). A crash therefore
never leaves a step without the writes that let LangGraph resume past it, nor writes without
their step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from sqlalchemy import delete, insert, select

from counterfact.capture import to_jsonable
from counterfact.store._chain import PreparedStep, RunWriter
from counterfact.store._checkpoint_rows import (
    CP,
    WR,
    checkpoint_tuple,
    delete_checkpoints,
    pending_writes,
)
from counterfact.store._recording import RecordedThreads
from counterfact.store._statements import execute
from counterfact.store._store import TraceStore


class SQLAlchemySaver(BaseCheckpointSaver[str]):
    """Checkpoints in the trace store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: TraceStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.recorded = RecordedThreads(store)

    # -- the recorder's side (see RecordedThreads) ----------------------------------------------

    def attach(self, thread_id: str, writer: RunWriter) -> None:
        """Record steps of `thread_id` into `writer`'s run."""
        self.recorded.attach(thread_id, writer)

    def detach(self, thread_id: str) -> None:
        """Stop recording `thread_id`, writing any step still staged."""
        self.recorded.detach(thread_id)

    def writer(self, thread_id: str) -> RunWriter | None:
        """The writer recording `thread_id`, if it is being recorded."""
        return self.recorded.writer(thread_id)

    def start_task(self, thread_id: str, checkpoint_id: str, task_id: str) -> None:
        """A recorded node started (its super-step's writes wait for it before being held)."""
        self.recorded.start(thread_id, checkpoint_id, task_id)

    def stage_step(self, thread_id: str, task_id: str, step: PreparedStep) -> None:
        """Hold a finished node's step until its writes or next checkpoint are stored."""
        self.recorded.stage(thread_id, task_id, step)

    # -- BaseCheckpointSaver --------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        query = select(CP).where(
            CP.c.thread_id == str(conf["thread_id"]),
            CP.c.checkpoint_ns == conf.get("checkpoint_ns", ""),
        )
        if checkpoint_id := get_checkpoint_id(config):
            query = query.where(CP.c.checkpoint_id == checkpoint_id)
        else:
            query = query.order_by(CP.c.checkpoint_id.desc()).limit(1)
        with self.store.connect() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            writes = pending_writes(conn, self.serde, [row])
        return checkpoint_tuple(self.serde, row, writes)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        query = select(CP)
        if config is not None:
            conf = config["configurable"]
            if "thread_id" in conf:
                query = query.where(CP.c.thread_id == str(conf["thread_id"]))
            if "checkpoint_ns" in conf:
                query = query.where(CP.c.checkpoint_ns == conf["checkpoint_ns"])
            if checkpoint_id := get_checkpoint_id(config):
                query = query.where(CP.c.checkpoint_id == checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            query = query.where(CP.c.checkpoint_id < before_id)
        query = query.order_by(CP.c.checkpoint_id.desc())
        if limit is not None and not filter:
            query = query.limit(limit)
        with self.store.connect() as conn:
            rows = conn.execute(query).mappings().all()
            if filter:
                wanted = to_jsonable(filter)
                rows = [
                    r
                    for r in rows
                    if all((r["metadata"] or {}).get(k) == v for k, v in wanted.items())
                ]
                if limit is not None:
                    rows = rows[:limit]
            writes = pending_writes(conn, self.serde, rows)
        for row in rows:
            yield checkpoint_tuple(self.serde, row, writes)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        parent_id = conf.get("checkpoint_id")
        type_, data = self.serde.dumps_typed(checkpoint)
        meta = to_jsonable(get_checkpoint_metadata(config, metadata))
        row = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": parent_id,
            "run_id": str(meta["run_id"]) if meta.get("run_id") is not None else None,
            "type": type_,
            "checkpoint": data,
            "metadata": meta,
        }
        writer = self.recorded.writer(thread_id) if ns == "" else None
        with self.recorded.transaction(thread_id, writer) as conn:
            if writer is not None:
                self.recorded.write_held(conn, thread_id, writer)
            execute(conn, self.store.sql.upsert_checkpoint, [row])
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        rows = [
            {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": str(conf["checkpoint_id"]),
                "task_id": task_id,
                "task_path": task_path,
                "idx": WRITES_IDX_MAP.get(channel, idx),
                "channel": channel,
                "type": type_,
                "value": value,
            }
            for idx, (channel, val) in enumerate(writes)
            for type_, value in [self.serde.dumps_typed(val)]
        ]
        special = all(w[0] in WRITES_IDX_MAP for w in writes)
        writer = self.recorded.writer(thread_id) if ns == "" else None
        checkpoint_id = str(conf["checkpoint_id"])
        if writer is not None and self.recorded.hold_writes(thread_id, checkpoint_id, task_id, rows, special):
            return  # stored with the next checkpoint, in one transaction with the step
        with self.recorded.transaction(thread_id, writer, writes_of=checkpoint_id) as conn:
            sql = self.store.sql
            execute(conn, sql.replace_writes if special else sql.insert_writes, rows)
            if writer is not None:
                for step in self.recorded.take_staged(thread_id, task_id):
                    writer.write(conn, step)

    def delete_thread(self, thread_id: str) -> None:
        with self.store.begin() as conn:
            conn.execute(delete(WR).where(WR.c.thread_id == str(thread_id)))
            conn.execute(delete(CP).where(CP.c.thread_id == str(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with self.store.begin() as conn:
            keys = conn.execute(
                select(CP.c.thread_id, CP.c.checkpoint_ns, CP.c.checkpoint_id).where(
                    CP.c.run_id.in_([str(r) for r in run_ids])
                )
            ).all()
            delete_checkpoints(conn, [tuple(k) for k in keys])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self.store.begin() as conn:
            cps = conn.execute(
                select(CP).where(CP.c.thread_id == str(source_thread_id))
            ).mappings().all()
            wrs = conn.execute(
                select(WR).where(WR.c.thread_id == str(source_thread_id))
            ).mappings().all()
            if cps:
                conn.execute(
                    insert(CP), [{**r, "thread_id": str(target_thread_id)} for r in cps]
                )
            if wrs:
                conn.execute(
                    insert(WR), [{**r, "thread_id": str(target_thread_id)} for r in wrs]
                )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use keep_latest or delete")
        if not thread_ids:
            return
        with self.store.begin() as conn:
            rows = conn.execute(
                select(CP.c.thread_id, CP.c.checkpoint_ns, CP.c.checkpoint_id)
                .where(CP.c.thread_id.in_([str(t) for t in thread_ids]))
                .order_by(CP.c.checkpoint_id.desc())
            ).all()
            doomed: list[tuple[str, str, str]] = []
            seen: set[tuple[str, str]] = set()
            for thread_id, ns, checkpoint_id in rows:
                if strategy == "keep_latest" and (thread_id, ns) not in seen:
                    seen.add((thread_id, ns))  # newest of its namespace: kept
                    continue
                doomed.append((thread_id, ns, checkpoint_id))
            delete_checkpoints(conn, doomed)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Zero-padded, sortable versions, as LangGraph's own SQL savers make them."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- async: the same work on a worker thread ------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

def state_at(store: TraceStore, run_id: str, checkpoint_id: str | None) -> dict[str, Any] | None:
    """The graph's state (its channel values, as JSON) at one checkpoint of a run's own
    thread; None when the run kept no such checkpoint (an imported log, say)."""
    if checkpoint_id is None:
        return None
    found = SQLAlchemySaver(store).get_tuple(
        {"configurable": {"thread_id": run_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}
    )
    if found is None:
        return None
    values = found.checkpoint.get("channel_values", {})
    return {k: to_jsonable(v) for k, v in values.items() if not k.startswith("branch:")}
