"""The trace store: one SQLAlchemy database holding runs, steps, calls, blobs and checkpoints,
and the interventions and verdicts made of runs.

A store is opened from a file path or a SQLAlchemy URL (`COUNTERFACT_DB`, default
./counterfact.db). Opening applies pending alembic migrations. Writes go through short
transactions on SQLAlchemy Core (the ORM classes describe the schema; Core keeps the per-step
cost low on the recording hot path). `TraceStore` keeps the connections, the transactions and
the runs; it composes the rest: the dialect (`_dialects`), the blobs (`_blobs`), the hash
chain (`_chain`) and the reading of steps (`_steps`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from counterfact.capture import to_jsonable
from counterfact.store._blobs import BlobCodec, BlobReader
from counterfact.store._chain import GENESIS, RunWriter, seal_run
from counterfact.store._engine import StoreError, open_engine, resolve_url, safe_url
from counterfact.store._listeners import live_listener
from counterfact.store._models import (
    InterventionRecord,
    Outcome,
    RunRecord,
    RunStatus,
    StepRecord,
    VerdictKind,
    VerdictRecord,
)
from counterfact.store._precedents import ToolPrecedent, read_precedents
from counterfact.store._redact import Redactor
from counterfact.store._rows import require_row, row_of
from counterfact.store._runs import finished_values, run_record, run_values
from counterfact.store._statements import Statements
from counterfact.store._steps import read_activations, read_steps
from counterfact.store.schema import Intervention, Run, Step, Verdict


class TraceStore:
    """Runs, steps, calls and blobs in one database: the SQLAlchemy `Store`. Thread-safe;
    share one per process."""

    def __init__(self, url: str, *, redactor: Redactor | None = None, migrate: bool = True) -> None:
        self.url = url
        self.engine, self.backend = open_engine(url)
        self._write_lock = threading.RLock()
        self._write_conn: Connection | None = None
        self.sql = Statements(self.backend)
        self.blobs = BlobCodec(self.engine, self.sql.insert_blobs, redactor or Redactor())
        # Spans of what was written, sent only once it is committed (never a rolled-back step).
        self.live = live_listener(self.engine)
        if migrate:
            from counterfact.store._migrate import upgrade

            upgrade(self.engine)

    @classmethod
    def open(cls, db: str | None = None, **kwargs: Any) -> TraceStore:
        return cls(resolve_url(db), **kwargs)

    @property
    def redact(self) -> Redactor:
        """What is hidden of payloads, task inputs and labels before they are stored."""
        return self.blobs.redact

    @redact.setter
    def redact(self, redactor: Redactor) -> None:
        self.blobs.redact = redactor

    @property
    def display_url(self) -> str:
        """The store's URL for people to read: the password hidden."""
        return safe_url(self.url)

    @property
    def dialect(self) -> str:
        """The database's name in SQLAlchemy (sqlite, postgresql); `backend` is its `Dialect`."""
        return self.backend.name

    @property
    def schema_revision(self) -> str | None:
        """The migration the store's tables are at (alembic is loaded only when asked)."""
        from counterfact.store._migrate import current_revision

        return current_revision(self.engine)

    def close(self) -> None:
        with self._write_lock:
            if self._write_conn is not None:
                self.backend.close_writer(self._write_conn)
                self._write_conn.close()
                self._write_conn = None
        self.engine.dispose()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> Connection:
        """A connection to read on (a context manager; it returns to the pool on exit)."""
        return self.engine.connect()

    @contextmanager
    def begin(self, *, blind: bool = False) -> Iterator[Connection]:
        """One write transaction, on this store's one write connection.

        Writers of this process queue on a Python lock (on SQLite, its busy handler sleeps in
        coarse steps, which made LangGraph's concurrent put/put_writes wait milliseconds for
        each other); other processes queue on the database's own locking. Keeping one
        connection also saves a pool checkout per transaction on the recording hot path.

        `blind`: the transaction only writes and reads nothing back (the recording hot path),
        which the dialect may send in one round trip (PostgreSQL's pipeline mode).
        """
        with self._write_lock:
            conn = self._write_connection()
            try:
                with self.backend.transaction(conn, blind=blind):
                    yield conn
            except SQLAlchemyError:
                self._drop_write_connection()  # a broken connection is replaced on the next write
                raise

    def _write_connection(self) -> Connection:
        if self._write_conn is None or self._write_conn.closed or self._write_conn.invalidated:
            self._drop_write_connection()
            self._write_conn = self.engine.connect()
            self.backend.open_writer(self._write_conn)
        return self._write_conn

    def _drop_write_connection(self) -> None:
        if self._write_conn is not None:
            self.backend.close_writer(self._write_conn)
            if not self._write_conn.closed:
                self._write_conn.invalidate()
        self._write_conn = None

    def get_value(self, digest: str | None) -> Any:
        """A stored payload, with message manifests resolved; redacted blobs read as a marker."""
        if digest is None:
            return None
        with self.connect() as conn:
            return BlobReader(conn).load(digest)

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, record: RunRecord, conn: Connection | None = None) -> RunRecord:
        values = run_values(record, self.redact)
        if conn is not None:
            conn.execute(self.sql.insert_run, values)
        else:
            with self.begin() as c:
                c.execute(self.sql.insert_run, values)
        return record

    def finish_run(
        self, run_id: str, status: RunStatus, *, outcome: Outcome | None = None, error: str | None = None
    ) -> None:
        """Close a run: status, outcome, totals from its model calls, end time."""
        with self.begin() as conn:
            values = finished_values(conn, run_id, status, outcome, error)
            conn.execute(update(Run.__table__).where(Run.id == run_id).values(**values))
            seal_run(conn, run_id)
        if self.live is not None:
            self.live.run_finished(self, self.get_run(run_id))

    def set_outcome(self, run_id: str, outcome: Outcome, status: RunStatus) -> None:
        with self.begin() as conn:
            conn.execute(update(Run.__table__).where(Run.id == run_id).values(outcome=outcome.model_dump(), status=status))

    def set_labels(self, run_id: str, labels: dict[str, Any]) -> None:
        with self.begin() as conn:
            conn.execute(update(Run.__table__).where(Run.id == run_id).values(labels=self.redact(to_jsonable(labels))))

    def resolve_run_id(self, ref: str) -> str:
        """The full id of the run that `ref` (an id or a unique prefix of one) names."""
        with self.connect() as conn:
            if conn.execute(select(Run.id).where(Run.id == ref)).first():
                return ref
            if len(ref) >= 4:
                ids = conn.execute(select(Run.id).where(Run.id.startswith(ref, autoescape=True)).limit(2)).scalars().all()
                if len(ids) == 1:
                    return ids[0]
                if len(ids) > 1:
                    raise StoreError(f"run id prefix {ref!r} is ambiguous; give more characters")
        raise StoreError(f"no run with id {ref!r} in {self.display_url}")

    def get_run(self, ref: str) -> RunRecord:
        run_id = self.resolve_run_id(ref)
        with self.connect() as conn:
            return run_record(conn.execute(select(Run.__table__).where(Run.id == run_id)).mappings().one())

    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        labels: dict[str, str] | None = None,
        since: datetime | None = None,
        parent: str | None = None,
        text: str | None = None,
        source: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[RunRecord]:
        """Runs, newest first, matching every filter given.

        `text` matches (case-insensitively) the run's id, workflow or task input;
        `before` is a page's keyset cursor: runs older than this (created_at, id).
        """
        query = select(Run.__table__).where(
            *(column == value for column, value in ((Run.status, status), (Run.workflow, workflow),
                                                     (Run.source, source), (Run.parent_run_id, parent)) if value),
            *(self.backend.label_is(key, value) for key, value in (labels or {}).items()),
        )
        if since:
            query = query.where(Run.created_at >= since)
        if agent:
            query = query.where(Run.id.in_(select(Step.run_id).where(Step.agent == agent)))
        if text:
            query = query.where(Run.search_text.contains(text.lower(), autoescape=True))
        if before:
            created, run_id = before
            query = query.where(or_(Run.created_at < created, and_(Run.created_at == created, Run.id < run_id)))
        query = query.order_by(Run.created_at.desc(), Run.id.desc())
        if limit:
            query = query.limit(limit)
        with self.connect() as conn:
            return [run_record(row) for row in conn.execute(query).mappings()]

    def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of these exact run ids the store already holds (for imports to skip or refuse)."""
        with self.connect() as conn:
            return set(conn.execute(select(Run.id).where(Run.id.in_(list(run_ids)))).scalars())

    # -- steps ------------------------------------------------------------------------------

    def steps(
        self, run_ref: str, *, payloads: bool = True, histories: bool = True, indices: Sequence[int] | None = None
    ) -> list[StepRecord]:
        """A run's steps in order (only those at `indices`, when given), with their calls and
        (by default) their payloads.

        With `payloads=False` the payload fields are left empty: a cheap structural read. With
        `histories=False` the messages a step saw and its model calls' requests and responses
        are left empty, and its output, state update and tool calls are read: what a long
        run's overview needs, without the histories that grow with every step.
        """
        run_id = self.resolve_run_id(run_ref)
        with self.connect() as conn:
            return read_steps(conn, run_id, payloads=payloads, histories=histories, indices=indices)

    def tool_precedents(self, name: str, arguments: Any, *, excluding: str, limit: int = 50) -> list[ToolPrecedent]:
        """What tool `name` returned when called with these `arguments` in other original runs
        (not `excluding`, not replays), newest first: what a tool result is compared with."""
        digest = self.blobs.encode_value(arguments)[0]
        with self.connect() as conn:
            return read_precedents(conn, name, digest, excluding=excluding, limit=limit)

    def step_activations(self, run_ref: str, index: int) -> list[bytes | None]:
        """The activations captured during each model call of one step (safetensors bytes, or
        None where the call captured none or the blob was redacted), in call order."""
        run_id = self.resolve_run_id(run_ref)
        with self.connect() as conn:
            return read_activations(conn, run_id, index)

    def write_run(self, run: RunRecord, steps: Sequence[StepRecord], conn: Connection | None = None) -> list[StepRecord]:
        """Write a whole run with its steps (an import), in `conn`'s transaction or a new one.

        Step indices must be dense from 0; the chain is rebuilt from the content, so a run
        written from an export gets back exactly the digests it had.
        """
        for expected, step in enumerate(steps):
            if step.index is not None and step.index != expected:
                raise StoreError(f"run {run.id}: step {step.index} out of order (expected index {expected})")
        if conn is None:
            with self.begin() as c:
                return self.write_run(run, steps, c)
        self.create_run(run, conn)
        writer = RunWriter(self, run.id, 0, GENESIS, {})
        written = [writer.write(conn, step) for step in steps]
        seal_run(conn, run.id)
        return written

    def run_writer(self, run_id: str) -> RunWriter:
        """A writer that appends steps to `run_id`, continuing its chain (also on resume)."""
        return RunWriter.resume(self, run_id)

    # -- interventions and verdicts ---------------------------------------------------------

    def add_intervention(self, run_id: str, fork_step: int, spec: dict[str, Any]) -> InterventionRecord:
        """Store an edit of `run_id` at step `fork_step`; replays name it by the record's id."""
        record = InterventionRecord(run_id=run_id, fork_step=fork_step, spec=spec)
        with self.begin() as conn:
            require_row(conn, Run, run_id, "run", self.display_url)
            conn.execute(insert(Intervention.__table__), record.model_dump())
        return record

    def get_intervention(self, intervention_id: str) -> InterventionRecord:
        with self.connect() as conn:
            return InterventionRecord.model_validate(row_of(conn, Intervention, intervention_id, "intervention", self.display_url))

    def add_verdict(
        self, intervention_id: str, run_id: str, verdict: VerdictKind, reason: str, stats: dict[str, Any],
        *, verdict_id: str | None = None,
    ) -> VerdictRecord:
        """Store what the replays of an intervention of `run_id` said of it.

        `verdict_id` is for a caller that named the verdict before it existed (replays are
        labelled with the id of the verification they belong to); by default a new one.
        """
        record = VerdictRecord(
            intervention_id=intervention_id, run_id=run_id, verdict=verdict, reason=reason, stats=stats,
            **({"id": verdict_id} if verdict_id is not None else {}),
        )
        with self.begin() as conn:
            require_row(conn, Intervention, intervention_id, "intervention", self.display_url)
            require_row(conn, Run, run_id, "run", self.display_url)
            conn.execute(insert(Verdict.__table__), record.model_dump())
        if self.live is not None:
            replays = self.list_runs(parent=run_id, labels={"verification_id": record.id}, limit=None)
            self.live.verification(self.redact, record, replays, replays[0].fork_step if replays else None)
        return record

    def verdicts(self, *, run_id: str | None = None, intervention_id: str | None = None) -> list[VerdictRecord]:
        """Verdicts on `run_id`'s interventions and/or of one intervention, oldest first."""
        query = select(Verdict.__table__).order_by(Verdict.created_at, Verdict.id)
        if run_id is not None:
            query = query.where(Verdict.run_id == run_id)
        if intervention_id is not None:
            query = query.where(Verdict.intervention_id == intervention_id)
        with self.connect() as conn:
            return [VerdictRecord.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def get_verdict(self, verdict_id: str) -> VerdictRecord:
        with self.connect() as conn:
            return VerdictRecord.model_validate(row_of(conn, Verdict, verdict_id, "verdict", self.display_url))
