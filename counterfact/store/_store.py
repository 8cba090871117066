"""The trace store: one SQLAlchemy database holding runs, steps, calls, blobs and checkpoints,
and the interventions, verdicts, debug sessions and hypotheses made of runs.

A store is opened from a file path or a SQLAlchemy URL (`COUNTERFACT_DB`, default
./counterfact.db). Opening applies pending alembic migrations. Writes go through short
transactions on SQLAlchemy Core (the ORM classes describe the schema; Core keeps the per-step
cost low on the recording hot path).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Text,
    and_,
    case,
    cast,
    create_engine,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from counterfact._errors import CounterfactError
from counterfact.capture._payloads import (
    canonical_json,
    digest_of,
    sha256_hex,
    to_jsonable,
)
from counterfact.capture._records import ModelCallRecord, ToolCallRecord
from counterfact.store._models import (
    DebugSessionRecord,
    DebugSpend,
    DebugStatus,
    HypothesisRecord,
    HypothesisStatus,
    InterventionRecord,
    Outcome,
    RunRecord,
    RunStatus,
    StepRecord,
    VerdictKind,
    VerdictRecord,
    utcnow,
)
from counterfact.store._redact import Redactor
from counterfact.store._schema import (
    Blob,
    Checkpoint,
    DebugSession,
    Hypothesis,
    Intervention,
    ModelCall,
    Run,
    Step,
    ToolCall,
    Verdict,
)
from counterfact.store._statements import Statements

DEFAULT_DB = "counterfact.db"
MESSAGES_MEDIA_TYPE = "application/vnd.counterfact.messages+json"
JSON_MEDIA_TYPE = "application/json"
GENESIS = "0" * 64  # the link before a run's first step
_NEW_BLOBS = "cf_new_blobs"  # connection info: blobs inserted by the open transaction
_AFTER_COMMIT = "cf_after_commit"  # connection info: what to do once the transaction commits
MANIFEST_CHUNK = 16


class StoreListener(Protocol):
    """Told of what a store wrote once it is committed (never of a rolled-back step): the
    live telemetry export. Formats hang on the store through the
    `counterfact.store_listeners` entry points, so the store imports none of them."""

    def step(self, redact: Callable[[Any], Any], run_id: str, step: StepRecord) -> None: ...

    def run_finished(self, store: TraceStore, run: RunRecord) -> None: ...

    def verification(self, redact: Callable[[Any], Any], verdict: VerdictRecord, replays: Sequence[RunRecord],
                     fork_step: int | None) -> None: ...

    def flush(self, timeout_millis: int = 30_000) -> bool: ...


LISTENER_GROUP = "counterfact.store_listeners"  # the entry points that name listener factories


@cache
def listeners() -> tuple[Callable[[], StoreListener | None], ...]:
    """The listener factories installed packages declare (the OTel live export among them),
    loaded when the first store opens, so that a user who only records gets them too. Each is
    asked in order as a store opens; the first listener given is the store's `live` one."""
    return tuple(point.load() for point in entry_points(group=LISTENER_GROUP))


def manifest_children(data: bytes) -> list[str]:
    """The digests a message manifest points at: its messages and its prefix manifest."""
    value = json.loads(data)
    return [*value["messages"], *([value["prefix"]] if value["prefix"] else [])]


class StoreError(CounterfactError):
    """A store could not be used as asked; the message is one line meant for a person."""


def _is_message_object(value: Any) -> bool:
    return hasattr(value, "content") and hasattr(value, "type") and hasattr(value, "id")


def resolve_url(db: str | None = None) -> str:
    """A SQLAlchemy URL from a file path or URL (`--db`, then `COUNTERFACT_DB`, then default)."""
    target = db or os.environ.get("COUNTERFACT_DB") or DEFAULT_DB
    if "://" in target:
        if target.startswith("postgresql://"):  # psycopg 3 is the driver we ship
            target = "postgresql+psycopg://" + target.removeprefix("postgresql://")
        return target
    return f"sqlite:///{Path(target).expanduser().resolve()}"


_LABEL_FUNCTION = "counterfact_label"  # an older SQLite's label read by Python (see _label_is)


@cache
def _sqlite_json_keeps_nul() -> bool:
    """Whether this SQLite's JSON functions keep a NUL inside a string (3.51 does; 3.40 ends
    the string there, so 'ab\\u0000zz' reads as 'ab')."""
    with closing(sqlite3.connect(":memory:")) as db:
        return db.execute("""SELECT json_extract('["a\\u0000b"]', '$[0]') = 'a' || char(0) || 'b'""").fetchone()[0] == 1


def _label_of(labels: str | None, key: str) -> Any:
    """The value of label `key` of a run's labels (JSON text) as SQLite would read it."""
    parsed = json.loads(labels) if labels else None
    value = parsed.get(key) if isinstance(parsed, dict) else None
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    if not _sqlite_json_keeps_nul():  # what label filters fall back on (see _label_is)
        dbapi_connection.create_function(_LABEL_FUNCTION, 2, _label_of, deterministic=True)


def _make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {_safe_url(url)}: {exc}") from None


def _safe_url(url: str) -> str:
    """The URL with its password hidden, for messages (SQLAlchemy renders it)."""
    try:
        parsed = make_url(url)
        secret = {k: "***" for k in parsed.query if k.lower() in ("password", "sslpassword")}
        return parsed.update_query_dict(secret).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL given"  # unparseable: say nothing of what may be a secret


class _PipelineMode:
    """psycopg's pipeline mode on a connection, held from one transaction to the next."""

    def __init__(self, raw: Any) -> None:
        self._stack = ExitStack()
        self.sync = self._stack.enter_context(raw.pipeline()).sync

    def close(self) -> None:
        self._stack.close()


class TraceStore:
    """Runs, steps, calls and blobs in one database. Thread-safe; share one per process."""

    def __init__(self, url: str, *, redactor: Redactor | None = None, migrate: bool = True) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.redact = redactor or Redactor()
        self._known_blobs: set[str] = set()
        self._message_cache: OrderedDict[Any, tuple[Any, tuple[str, bytes, str]]] = OrderedDict()
        self._chunk_cache: OrderedDict[Any, tuple[list[Any], list[tuple[str, bytes, str]]]] = OrderedDict()
        self._known_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._write_conn: Connection | None = None
        self._pipeline: _PipelineMode | None = None  # the write connection's, while it is on
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as exc:
            reason = str(exc.orig if hasattr(exc, "orig") and exc.orig else exc).splitlines()[0]
            raise StoreError(f"cannot open database {_safe_url(url)}: {reason}") from None
        self.sql = Statements(self.dialect)
        event.listen(self.engine, "commit", self._blobs_committed)
        event.listen(self.engine, "rollback", lambda conn: conn.info.pop(_NEW_BLOBS, None))
        # Spans of what was written, sent only once it is committed (never a rolled-back step).
        self.live: StoreListener | None = next((live for open_ in listeners() if (live := open_()) is not None), None)
        if self.live is not None:
            event.listen(self.engine, "commit", _run_after_commit)
            event.listen(self.engine, "rollback", lambda conn: conn.info.pop(_AFTER_COMMIT, None))
        if migrate:
            from counterfact.store._migrate import upgrade

            upgrade(self.engine)

    @classmethod
    def open(cls, db: str | None = None, **kwargs: Any) -> TraceStore:
        return cls(resolve_url(db), **kwargs)

    @property
    def display_url(self) -> str:
        """The store's URL for people to read: the password hidden."""
        return _safe_url(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def schema_revision(self) -> str | None:
        """The migration the store's tables are at (alembic is loaded only when asked)."""
        from counterfact.store._migrate import current_revision

        return current_revision(self.engine)

    def close(self) -> None:
        with self._write_lock:
            if self._write_conn is not None:
                if self._pipeline is not None:
                    self._set_pipeline(self._write_conn, False)
                self._write_conn.close()
                self._write_conn = None
        self.engine.dispose()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def begin(self, *, blind: bool = False) -> Iterator[Connection]:
        """One write transaction, on this store's one write connection.

        Writers of this process queue on a Python lock (on SQLite, its busy handler sleeps in
        coarse steps, which made LangGraph's concurrent put/put_writes wait milliseconds for
        each other); other processes queue on the database's own locking. Keeping one
        connection also saves a pool checkout per transaction on the recording hot path.

        `blind`: the transaction only writes and reads nothing back (the recording hot path).
        On PostgreSQL it then runs in psycopg's pipeline mode, in one round trip (see
        `_pipelined`).
        """
        with self._write_lock:
            conn = self._write_connection()
            if self.dialect == "postgresql":
                self._set_pipeline(conn, blind)
            try:
                with conn.begin(), self._pipelined(conn, self._pipeline) if self._pipeline else nullcontext():
                    yield conn
            except SQLAlchemyError:
                self._drop_write_connection()  # a broken connection is replaced on the next write
                raise

    def _write_connection(self) -> Connection:
        if self._write_conn is None or self._write_conn.closed or self._write_conn.invalidated:
            self._drop_write_connection()
            self._write_conn = self.engine.connect()
            if self.dialect == "sqlite":
                # Take the write lock at BEGIN, so that writers of several processes queue
                # on busy_timeout instead of failing when a read lock cannot be upgraded.
                self._write_conn.connection.dbapi_connection.isolation_level = "IMMEDIATE"
            else:
                # Commits do not wait for the WAL flush: a killed client loses nothing
                # committed, a server crash may lose the last few transactions whole (never
                # half of one): the guarantee SQLite's WAL with synchronous=NORMAL gives.
                self._write_conn.exec_driver_sql("SET synchronous_commit = off")
                self._write_conn.commit()
        return self._write_conn

    def _set_pipeline(self, conn: Connection, on: bool) -> None:
        """Put the (idle) PostgreSQL write connection in or out of psycopg's pipeline mode.

        It stays in the mode from one blind transaction to the next: leaving it costs a round
        trip. In the mode the connection is in autocommit: `_pipelined` delimits transactions
        by the pipeline's syncs (psycopg would wait for the result of a BEGIN of its own).
        """
        raw = conn.connection.driver_connection
        if on and self._pipeline is None:
            raw.autocommit = True
            self._pipeline = _PipelineMode(raw)
        elif not on and self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            pipeline.close()
            raw.autocommit = False

    @contextmanager
    def _pipelined(self, conn: Connection, pipeline: _PipelineMode) -> Iterator[None]:
        """A transaction in pipeline mode: the statements are queued and sent together, and
        only the commit waits for the server, once, where each statement would wait for its
        own round trip. The BEGIN and COMMIT are queued like the statements: the transaction
        must be explicit, because psycopg syncs inside it (its executemany runs in a nested
        pipeline, which syncs on exit) and a sync ends an implicit transaction, so a step could
        be committed without its checkpoint writes when the connection died between the two
        (a test drops the connection mid-run). A statement's error undoes all of it, and so
        does the ROLLBACK sent when the block raises."""
        error = conn.dialect.loaded_dbapi.Error
        raw = conn.connection.driver_connection
        raw.execute("BEGIN")
        try:
            yield
        except BaseException:
            # the block's exception is the one to report, whatever the (perhaps lost)
            # connection makes of the rollback
            with suppress(Exception):
                raw.execute("ROLLBACK")
                pipeline.sync()
            raise
        try:
            raw.execute("COMMIT")
            pipeline.sync()
        except error as exc:
            raise DBAPIError.instance("COMMIT", None, exc, error) from None

    def _drop_write_connection(self) -> None:
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            with suppress(Exception):  # the connection may be broken: it is discarded anyway
                pipeline.close()
        if self._write_conn is not None and not self._write_conn.closed:
            self._write_conn.invalidate()
        self._write_conn = None

    # -- blobs ------------------------------------------------------------------------------

    def put_blobs(self, conn: Connection, blobs: Sequence[tuple[str, bytes, str]]) -> None:
        """Store (digest, data, media type) rows that are not stored yet."""
        with self._known_lock:
            fresh = {d: (d, b, m) for d, b, m in blobs if d not in self._known_blobs}
        if not fresh:
            return
        conn.execute(
            self.sql.insert_blobs,
            [
                {"digest": d, "media_type": m, "size": len(b), "data": b, "redacted": False}
                for d, b, m in fresh.values()
            ],
        )
        conn.info.setdefault(_NEW_BLOBS, set()).update(fresh)

    def _blobs_committed(self, conn: Connection) -> None:
        """Once a transaction commits, its blobs need no insert attempt again."""
        new = conn.info.pop(_NEW_BLOBS, set())
        with self._known_lock:
            if len(self._known_blobs) > 200_000:
                self._known_blobs.clear()
            self._known_blobs.update(new)

    def encode_value(self, value: Any) -> tuple[str, bytes, str]:
        data = canonical_json(self.redact(to_jsonable(value)))
        return sha256_hex(data), data, JSON_MEDIA_TYPE

    def _encode_message(self, message: Any) -> tuple[str, bytes, str]:
        """`encode_value` for one message, remembered: histories repeat at every step.

        A LangChain message object is remembered by identity (checked through a weak
        reference, so a recycled id() never matches); a plain role/content dict by its values.
        """
        if _is_message_object(message):
            key: Any = ("obj", id(message))
        elif isinstance(message, dict) and all(
            isinstance(v, (str, type(None))) for v in message.values()
        ):
            key = ("dict", tuple(sorted(message.items())))
        else:
            return self.encode_value(message)
        with self._known_lock:
            hit = self._message_cache.get(key)
            if hit is not None and (hit[0] is None or hit[0]() is message):
                self._message_cache.move_to_end(key)
                return hit[1]
        row = self.encode_value(message)
        ref = weakref.ref(message) if key[0] == "obj" else None
        with self._known_lock:
            self._message_cache[key] = (ref, row)
            if len(self._message_cache) > 20_000:
                self._message_cache.popitem(last=False)
        return row

    def encode_messages(self, messages: Sequence[Any]) -> list[tuple[str, bytes, str]]:
        """Each message as its own blob, plus manifests listing them; the head manifest last.

        Manifests form a chain of fixed chunks ({"prefix": previous manifest, "messages": up to
        MANIFEST_CHUNK digests}), so a history resent at every step shares all its full chunks
        with the previous step: the store grows linearly with the run, not quadratically.
        A chunk whose manifest is already stored is left out of the rows (its messages were
        stored with it), so the cost of a step does not grow with the history either.
        """
        rows: list[tuple[str, bytes, str]] = []
        prefix: str | None = None
        for start in range(0, max(len(messages), 1), MANIFEST_CHUNK):
            chunk = list(messages[start : start + MANIFEST_CHUNK])
            chunk_rows = self._encode_chunk(prefix, chunk)
            prefix = chunk_rows[-1][0]
            with self._known_lock:
                stored = prefix in self._known_blobs
            if not stored:
                rows.extend(chunk_rows)
        if not rows:  # the head manifest is the caller's digest of the history
            rows.append(chunk_rows[-1])
        return rows

    def _encode_chunk(self, prefix: str | None, chunk: list[Any]) -> list[tuple[str, bytes, str]]:
        """One chunk's message rows and its manifest (last). A full chunk of message objects
        is remembered by the identity of its messages (checked through weak references: one
        that died may have left its id to another object), as the same objects come back in
        the history of every later step."""
        key = (prefix, *map(id, chunk)) if len(chunk) == MANIFEST_CHUNK else None
        if key is not None:
            with self._known_lock:
                hit = self._chunk_cache.get(key)
                if hit is not None:
                    self._chunk_cache.move_to_end(key)
            if hit is not None and all(ref() is m for ref, m in zip(hit[0], chunk, strict=True)):
                return hit[1]
        rows = [self._encode_message(m) for m in chunk]
        body = canonical_json({"prefix": prefix, "messages": [d for d, _, _ in rows]})
        rows.append((sha256_hex(body), body, MESSAGES_MEDIA_TYPE))
        if key is not None and all(_is_message_object(m) for m in chunk):
            refs = [weakref.ref(m) for m in chunk]
            with self._known_lock:
                self._chunk_cache[key] = (refs, rows)
                if len(self._chunk_cache) > 2_000:
                    self._chunk_cache.popitem(last=False)
        return rows

    def get_value(self, digest: str | None) -> Any:
        """A stored payload, with message manifests resolved; redacted blobs read as a marker."""
        if digest is None:
            return None
        with self.engine.connect() as conn:
            return BlobReader(conn).load(digest)

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, record: RunRecord, conn: Connection | None = None) -> RunRecord:
        values = self._run_values(record)
        if conn is not None:
            conn.execute(self.sql.insert_run, values)
        else:
            with self.begin() as c:
                c.execute(self.sql.insert_run, values)
        return record

    def _run_values(self, record: RunRecord) -> dict[str, Any]:
        values = record.model_dump(exclude={"outcome"})
        values["task_input"] = self.redact(to_jsonable(record.task_input))
        values["labels"] = self.redact(to_jsonable(record.labels))
        values["outcome"] = record.outcome.model_dump() if record.outcome else None
        values["search_text"] = search_text_of(record.id, record.workflow, values["task_input"])
        return values

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        outcome: Outcome | None = None,
        error: str | None = None,
    ) -> None:
        """Close a run: status, outcome, totals from its model calls, end time."""
        with self.begin() as conn:
            tokens, latency = conn.execute(
                select(
                    func.coalesce(
                        func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0
                    ),
                    func.coalesce(func.sum(ModelCall.latency_ms), 0.0),
                )
                .join(Step, Step.id == ModelCall.step_id)
                .where(Step.run_id == run_id)
            ).one()
            values: dict[str, Any] = {
                "status": status,
                "ended_at": utcnow(),
                "total_tokens": int(tokens),
                "total_latency_ms": float(latency),
                "error": error,
            }
            if outcome is not None:
                values["outcome"] = outcome.model_dump()
            conn.execute(update(Run.__table__).where(Run.id == run_id).values(**values))
            self.seal_run(conn, run_id)
        if self.live is not None:
            run = self.get_run(run_id)
            self.live.run_finished(self, run)

    def seal_run(self, conn: Connection, run_id: str) -> None:
        """Anchor the run's chain: its step count and last link, so a deleted tail shows.

        Done when a run finishes rather than at every step, which keeps one statement off the
        recording hot path; a run still running (or crashed) is verified up to its last step.
        """
        count, head = _chain_end(conn, run_id)
        conn.execute(
            update(Run.__table__).where(Run.id == run_id).values(step_count=count, head_digest=head)
        )

    def set_outcome(self, run_id: str, outcome: Outcome, status: RunStatus) -> None:
        with self.begin() as conn:
            conn.execute(
                update(Run.__table__)
                .where(Run.id == run_id)
                .values(outcome=outcome.model_dump(), status=status)
            )

    def set_labels(self, run_id: str, labels: dict[str, Any]) -> None:
        with self.begin() as conn:
            conn.execute(
                update(Run.__table__)
                .where(Run.id == run_id)
                .values(labels=self.redact(to_jsonable(labels)))
            )

    def resolve_run_id(self, ref: str) -> str:
        """The full id of the run that `ref` (an id or a unique prefix of one) names."""
        with self.engine.connect() as conn:
            if conn.execute(select(Run.id).where(Run.id == ref)).first():
                return ref
            if len(ref) >= 4:
                ids = conn.execute(
                    select(Run.id).where(Run.id.startswith(ref, autoescape=True)).limit(2)
                ).scalars().all()
                if len(ids) == 1:
                    return ids[0]
                if len(ids) > 1:
                    raise StoreError(f"run id prefix {ref!r} is ambiguous; give more characters")
        raise StoreError(f"no run with id {ref!r} in {_safe_url(self.url)}")

    def get_run(self, ref: str) -> RunRecord:
        run_id = self.resolve_run_id(ref)
        with self.engine.connect() as conn:
            row = conn.execute(select(Run.__table__).where(Run.id == run_id)).mappings().one()
        return _run_record(row)

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
        query = select(Run.__table__)
        if status:
            query = query.where(Run.status == status)
        if workflow:
            query = query.where(Run.workflow == workflow)
        if source:
            query = query.where(Run.source == source)
        if since:
            query = query.where(Run.created_at >= since)
        if parent:
            query = query.where(Run.parent_run_id == parent)
        if agent:
            query = query.where(Run.id.in_(select(Step.run_id).where(Step.agent == agent)))
        label_filters = [self._label_is(key, value) for key, value in (labels or {}).items()]
        query = query.where(*label_filters)
        if text:
            query = query.where(Run.search_text.contains(text.lower(), autoescape=True))
        if before:
            created, run_id = before
            query = query.where(
                or_(Run.created_at < created, and_(Run.created_at == created, Run.id < run_id))
            )
        query = query.order_by(Run.created_at.desc(), Run.id.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_run_record(row) for row in conn.execute(query).mappings()]

    def _label_is(self, key: str, value: str) -> ColumnElement[bool]:
        """Runs whose label `key` is `value` (a label that is not a string: its text form),
        with key and value bound parameters: no key or value can change the query."""
        if self.dialect != "sqlite":
            return Run.labels[key].as_string() == value  # labels ->> :key = :value
        label = func.json_each(Run.labels).table_valued("key", "value", joins_implicitly=True)
        match = exists().where(label.c.key == key, cast(label.c.value, Text) == value)
        if _sqlite_json_keeps_nul():
            return match
        # an older SQLite cuts a string at a NUL (\u0000) when it decodes JSON: rows holding one
        # (rare) have their label read by Python instead; every other row stays in SQL
        has_nul = func.instr(cast(Run.labels, Text), literal("\\u0000", Text)) > 0
        exact = cast(getattr(func, _LABEL_FUNCTION)(cast(Run.labels, Text), key), Text) == value
        return case((has_nul, exact), else_=match)

    def existing_run_ids(self, run_ids: Sequence[str]) -> set[str]:
        """Which of these exact run ids the store already holds (for imports to skip or refuse)."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(Run.id).where(Run.id.in_(list(run_ids)))).scalars())

    def step_activations(self, run_ref: str, index: int) -> list[bytes | None]:
        """The activations captured during each model call of one step (safetensors bytes, or
        None where the call captured none or the blob was redacted), in call order."""
        run_id = self.resolve_run_id(run_ref)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Blob.data, Blob.redacted)
                .select_from(ModelCall.__table__)
                .join(Step, Step.id == ModelCall.step_id)
                .outerjoin(Blob, Blob.digest == ModelCall.activations_digest)
                .where(Step.run_id == run_id, Step.index == index)
                .order_by(ModelCall.seq)
            ).all()
        return [None if row.data is None or row.redacted else bytes(row.data) for row in rows]

    # -- steps ------------------------------------------------------------------------------

    def steps(
        self,
        run_ref: str,
        *,
        payloads: bool = True,
        histories: bool = True,
        indices: Sequence[int] | None = None,
    ) -> list[StepRecord]:
        """A run's steps in order (only those at `indices`, when given), with their calls and
        (by default) their payloads.

        With `payloads=False` the payload fields are left empty: a cheap structural read. With
        `histories=False` the messages a step saw and its model calls' requests and responses
        are left empty, and its output, state update and tool calls are read: what a long
        run's overview needs, without the histories that grow with every step.
        """
        run_id = self.resolve_run_id(run_ref)
        query = select(Step.__table__, checkpoint_after(Step).label("derived_after")).where(Step.run_id == run_id)
        if indices is not None:
            query = query.where(Step.index.in_(list(indices)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(Step.index)).mappings().all()
            step_ids = [r["id"] for r in rows]
            mcalls = calls_by_step(conn, ModelCall.__table__, step_ids)
            tcalls = calls_by_step(conn, ToolCall.__table__, step_ids)
            reader = BlobReader(conn)
            if payloads:
                reader.prefetch(
                    [r[k] for r in rows for k in ("output_digest", "delta_digest")]
                    + [c[k] for calls in tcalls.values() for c in calls for k in ("arguments_digest", "result_digest")]
                    + ([r["input_digest"] for r in rows]
                       + [c[k] for calls in mcalls.values() for c in calls for k in ("request_digest", "response_digest")]
                       if histories else [])
                )
            load = (lambda d: reader.load(d) if d else None) if payloads else (lambda d: None)
            history = load if histories else (lambda d: None)
            return [
                StepRecord(
                    index=r["index"],
                    node=r["node"],
                    agent=r["agent"],
                    invocation=r["invocation"],
                    kind=r["kind"],
                    input=history(r["input_digest"]),
                    output=load(r["output_digest"]),
                    delta=load(r["delta_digest"]),
                    checkpoint_before=r["checkpoint_before"],
                    checkpoint_after=r["checkpoint_after"] or r["derived_after"],
                    task_id=r["task_id"],
                    started_at=r["started_at"],
                    ended_at=r["ended_at"],
                    error=r["error"],
                    digest=r["digest"],
                    model_calls=[
                        ModelCallRecord(
                            backend=m["backend"],
                            model=m["model"],
                            params=m["params"],
                            request=history(m["request_digest"]) or [],
                            response=history(m["response_digest"]) or {},
                            finish_reason=m["finish_reason"],
                            prompt_tokens=m["prompt_tokens"],
                            completion_tokens=m["completion_tokens"],
                            latency_ms=m["latency_ms"],
                            offset_ms=m["offset_ms"],
                            agent=m["agent"],
                        )
                        for m in mcalls[r["id"]]
                    ],
                    tool_calls=[
                        ToolCallRecord(
                            name=t["name"],
                            arguments=load(t["arguments_digest"]) or {},
                            result=load(t["result_digest"]),
                            error=t["error"],
                            latency_ms=t["latency_ms"],
                            offset_ms=t["offset_ms"],
                            agent=t["agent"],
                            handoff=t["handoff"],
                        )
                        for t in tcalls[r["id"]]
                    ],
                )
                for r in rows
            ]

    def write_run(
        self, run: RunRecord, steps: Sequence[StepRecord], conn: Connection | None = None
    ) -> list[StepRecord]:
        """Write a whole run with its steps (an import), in `conn`'s transaction or a new one.

        Step indices must be dense from 0; the chain is rebuilt from the content, so a run
        written from an export gets back exactly the digests it had.
        """
        for expected, step in enumerate(steps):
            if step.index is not None and step.index != expected:
                raise StoreError(
                    f"run {run.id}: step {step.index} out of order (expected index {expected})"
                )
        if conn is None:
            with self.begin() as c:
                return self.write_run(run, steps, c)
        self.create_run(run, conn)
        writer = RunWriter(self, run.id, 0, GENESIS, {})
        written = [writer.write(conn, step) for step in steps]
        self.seal_run(conn, run.id)
        return written

    def run_writer(self, run_id: str) -> RunWriter:
        """A writer that appends steps to `run_id`, continuing its chain (also on resume)."""
        with self.engine.connect() as conn:
            count, head = _chain_end(conn, run_id)
            invocations: dict[str, set[int]] = {}
            for node, invocation in [*conn.execute(
                select(Step.node, Step.invocation).where(Step.run_id == run_id)
            ), *_fork_siblings(conn, run_id)]:
                invocations.setdefault(node, set()).add(invocation)
        return RunWriter(self, run_id, count, head or GENESIS, invocations)

    # -- interventions and verdicts ---------------------------------------------------------

    def _require(self, conn: Connection, table: Any, record_id: str, what: str) -> None:
        """Raise StoreError unless `table` has a row with id `record_id`."""
        if conn.execute(select(table.id).where(table.id == record_id)).first() is None:
            raise StoreError(f"no {what} with id {record_id!r} in {_safe_url(self.url)}")

    def _row(self, conn: Connection, table: Any, record_id: str, what: str) -> dict[str, Any]:
        """The row of `table` with id `record_id`, or a StoreError naming it."""
        row = conn.execute(select(table.__table__).where(table.id == record_id)).mappings().one_or_none()
        if row is None:
            raise StoreError(f"no {what} with id {record_id!r} in {_safe_url(self.url)}")
        return dict(row)

    def add_intervention(
        self, run_id: str, fork_step: int, spec: dict[str, Any]
    ) -> InterventionRecord:
        """Store an edit of `run_id` at step `fork_step`; replays name it by the record's id."""
        record = InterventionRecord(run_id=run_id, fork_step=fork_step, spec=spec)
        with self.begin() as conn:
            self._require(conn, Run, run_id, "run")
            conn.execute(insert(Intervention.__table__), record.model_dump())
        return record

    def get_intervention(self, intervention_id: str) -> InterventionRecord:
        with self.engine.connect() as conn:
            return InterventionRecord.model_validate(self._row(conn, Intervention, intervention_id, "intervention"))

    def add_verdict(
        self,
        intervention_id: str,
        run_id: str,
        verdict: VerdictKind,
        reason: str,
        stats: dict[str, Any],
        *,
        verdict_id: str | None = None,
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
            self._require(conn, Intervention, intervention_id, "intervention")
            self._require(conn, Run, run_id, "run")
            conn.execute(insert(Verdict.__table__), record.model_dump())
        if self.live is not None:
            replays = self.list_runs(parent=run_id, labels={"verification_id": record.id}, limit=None)
            self.live.verification(self.redact, record, replays, replays[0].fork_step if replays else None)
        return record

    def verdicts(
        self, *, run_id: str | None = None, intervention_id: str | None = None
    ) -> list[VerdictRecord]:
        """Verdicts on `run_id`'s interventions and/or of one intervention, oldest first."""
        query = select(Verdict.__table__).order_by(Verdict.created_at, Verdict.id)
        if run_id is not None:
            query = query.where(Verdict.run_id == run_id)
        if intervention_id is not None:
            query = query.where(Verdict.intervention_id == intervention_id)
        with self.engine.connect() as conn:
            return [VerdictRecord.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def get_verdict(self, verdict_id: str) -> VerdictRecord:
        with self.engine.connect() as conn:
            return VerdictRecord.model_validate(self._row(conn, Verdict, verdict_id, "verdict"))

    # -- debug sessions and hypotheses ------------------------------------------------------

    def create_debug_session(
        self, run_id: str, strategies: Sequence[str], settings: dict[str, Any]
    ) -> DebugSessionRecord:
        """Start a running debug session of `run_id`, with nothing spent or completed."""
        record = DebugSessionRecord(run_id=run_id, strategies=list(strategies), settings=settings)
        with self.begin() as conn:
            self._require(conn, Run, run_id, "run")
            conn.execute(insert(DebugSession.__table__), record.model_dump())
        return record

    def unfinished_debug_session(
        self, run_id: str, strategies: Sequence[str]
    ) -> DebugSessionRecord | None:
        """The newest running session of `run_id` with the same set of strategies (in any
        order), to resume; None when there is none."""
        return next(iter(self.debug_sessions(run_id, strategies, status="running")), None)

    def debug_sessions(
        self, run_id: str, strategies: Sequence[str] | None = None, *, status: DebugStatus | None = None
    ) -> list[DebugSessionRecord]:
        """The sessions of `run_id`, newest first; only those with this set of strategies (in
        any order) and this status, when given."""
        query = select(DebugSession.__table__).where(DebugSession.run_id == run_id)
        if status is not None:
            query = query.where(DebugSession.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(DebugSession.created_at.desc(), DebugSession.id.desc())).mappings()
            return [
                DebugSessionRecord.model_validate(dict(row))
                for row in rows
                if strategies is None or set(row["strategies"]) == set(strategies)
            ]

    def resolve_debug_session_id(self, ref: str) -> str:
        """The full id of the debug session that `ref` (an id or a unique prefix) names."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(DebugSession.id).where(DebugSession.id.startswith(ref, autoescape=True)).limit(2)
            ).scalars().all()
        if ref in ids or len(ids) == 1:
            return ref if ref in ids else ids[0]
        if ids:
            raise StoreError(f"debug session id prefix {ref!r} is ambiguous; give more characters")
        raise StoreError(f"no debug session with id {ref!r} in {_safe_url(self.url)}")

    def get_debug_session(self, session_id: str) -> DebugSessionRecord:
        with self.engine.connect() as conn:
            return DebugSessionRecord.model_validate(self._row(conn, DebugSession, session_id, "debug session"))

    def update_debug_session(
        self,
        session_id: str,
        *,
        spent: DebugSpend | None = None,
        completed: Sequence[str] | None = None,
        status: DebugStatus | None = None,
    ) -> DebugSessionRecord:
        """Replace the fields given (`completed` as a whole list); returns the session as stored."""
        values: dict[str, Any] = {}
        if spent is not None:
            values["spent"] = DebugSpend.model_validate(spent).model_dump()
        if completed is not None:
            values["completed"] = [str(stage) for stage in completed]
        if status is not None:
            values["status"] = _one_of(status, DebugStatus, "debug session status")
        with self.begin() as conn:
            if values:
                conn.execute(
                    update(DebugSession.__table__)
                    .where(DebugSession.id == session_id)
                    .values(**values)
                )
            return DebugSessionRecord.model_validate(self._row(conn, DebugSession, session_id, "debug session"))

    def add_hypothesis(
        self,
        session_id: str,
        *,
        strategy: str,
        segment: int,
        step: int | None,
        agent: str | None,
        reason: str,
        intervention: dict[str, Any] | None,
        status: HypothesisStatus = "proposed",
        note: str = "",
        reference_run_id: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> HypothesisRecord:
        """Add a hypothesis to a session, numbered (`seq`) after the session's others.

        Concurrent writers get distinct, dense numbers: on PostgreSQL the session's row is
        locked first (SELECT ... FOR UPDATE), so writers to one session queue; the number is
        counted by the INSERT itself, which on SQLite runs under the database's write lock
        (Python's sqlite3 begins the transaction at the first write, not at the first read,
        so a count read before the insert could be stale). A unique (session_id, seq)
        constraint backs this up.
        """
        record = HypothesisRecord(
            session_id=session_id, seq=0, strategy=strategy, segment=segment, step=step,
            agent=agent, reason=reason, intervention=intervention, status=status, note=note,
            reference_run_id=reference_run_id, evidence=evidence or {},
        )
        count = (
            select(func.count())
            .select_from(Hypothesis)
            .where(Hypothesis.session_id == session_id)
            .scalar_subquery()
        )
        with self.begin() as conn:
            locked = conn.execute(
                select(DebugSession.id).where(DebugSession.id == session_id).with_for_update()
            ).first()
            if locked is None:
                raise StoreError(f"no debug session with id {session_id!r} in {_safe_url(self.url)}")
            if reference_run_id is not None:
                self._require(conn, Run, reference_run_id, "run")
            seq = conn.execute(
                insert(Hypothesis.__table__)
                .values(**record.model_dump(exclude={"seq"}), seq=count)
                .returning(Hypothesis.seq)
            ).scalar_one()
        return record.model_copy(update={"seq": seq})

    def hypotheses(self, session_id: str) -> list[HypothesisRecord]:
        """A session's hypotheses in the order they were proposed."""
        with self.engine.connect() as conn:
            self._require(conn, DebugSession, session_id, "debug session")
            rows = conn.execute(
                select(Hypothesis.__table__)
                .where(Hypothesis.session_id == session_id)
                .order_by(Hypothesis.seq)
            ).mappings()
            return [HypothesisRecord.model_validate(dict(r)) for r in rows]

    def update_hypothesis(
        self,
        hypothesis_id: str,
        *,
        status: HypothesisStatus | None = None,
        verdict_id: str | None = None,
        note: str | None = None,
        intervention: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> HypothesisRecord:
        """Set the fields given; returns the hypothesis as stored."""
        values: dict[str, Any] = {}
        if intervention is not None:
            values["intervention"] = intervention
        if evidence is not None:
            values["evidence"] = evidence
        if status is not None:
            values["status"] = _one_of(status, HypothesisStatus, "hypothesis status")
        if verdict_id is not None:
            values["verdict_id"] = verdict_id
        if note is not None:
            values["note"] = note
        with self.begin() as conn:
            self._require(conn, Hypothesis, hypothesis_id, "hypothesis")
            if verdict_id is not None:
                self._require(conn, Verdict, verdict_id, "verdict")
            if values:
                conn.execute(
                    update(Hypothesis.__table__).where(Hypothesis.id == hypothesis_id).values(**values)
                )
            return HypothesisRecord.model_validate(self._row(conn, Hypothesis, hypothesis_id, "hypothesis"))


def checkpoint_after(step: Any) -> Any:
    """The checkpoint a step produced: the child of its checkpoint in the run's own thread.

    Derived rather than written, so that recording a step needs no second statement once
    LangGraph has stored the next checkpoint (the two are written concurrently).
    """
    return (
        select(Checkpoint.checkpoint_id)
        .where(
            Checkpoint.thread_id == step.run_id,
            Checkpoint.checkpoint_ns == "",
            Checkpoint.parent_checkpoint_id == step.checkpoint_before,
        )
        .order_by(Checkpoint.checkpoint_id)
        .limit(1)
        .scalar_subquery()
    )


class BlobReader:
    """Reads payloads on one connection; `prefetch` reads many blobs (and the manifests and
    messages they point to) in a few batched queries, so that a long run's steps, whose
    histories share most of their messages, load without a round trip per message."""

    _BATCH = 500

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: dict[str, Any] = {}

    def fetch(self, digests: Sequence[str]) -> None:
        """Read these blobs' rows (those not read yet) in batched queries; a digest with no
        blob is left out of `rows`."""
        pending = [d for d in dict.fromkeys(digests) if d not in self.rows]
        for start in range(0, len(pending), self._BATCH):
            chunk = pending[start : start + self._BATCH]
            for row in self.conn.execute(
                select(Blob.digest, Blob.data, Blob.media_type, Blob.redacted).where(Blob.digest.in_(chunk))
            ):
                self.rows[row.digest] = row

    def prefetch(self, digests: Sequence[str | None]) -> None:
        """Read these payloads' blobs and, level by level, the manifests and messages they
        point to."""
        pending = [d for d in dict.fromkeys(digests) if d and d not in self.rows]
        while pending:
            self.fetch(pending)
            following: list[str] = []
            for digest in pending:
                row = self.rows.get(digest)
                if row is not None and row.media_type == MESSAGES_MEDIA_TYPE and row.data is not None and not row.redacted:
                    manifest = json.loads(row.data)
                    following.extend(manifest["messages"])
                    if manifest["prefix"] is not None:
                        following.append(manifest["prefix"])
            pending = [d for d in dict.fromkeys(following) if d not in self.rows]

    def _row(self, digest: str) -> Any:
        if digest not in self.rows:
            self.rows[digest] = self.conn.execute(
                select(Blob.digest, Blob.data, Blob.media_type, Blob.redacted).where(Blob.digest == digest)
            ).one_or_none()
        return self.rows[digest]

    def load(self, digest: str) -> Any:
        row = self._row(digest)
        if row is None:
            raise StoreError(f"blob {digest[:12]} is missing from the store")
        if row.redacted or row.data is None:
            return {"redacted": digest}
        value = json.loads(row.data)
        if row.media_type == MESSAGES_MEDIA_TYPE:
            chunks = [value["messages"]]
            while value["prefix"] is not None:
                manifest = self._row(value["prefix"])
                if manifest is None or manifest.data is None or manifest.redacted:
                    raise StoreError(f"message manifest {value['prefix'][:12]} is missing or redacted")
                value = json.loads(manifest.data)
                chunks.append(value["messages"])
            return [self.load(d) for chunk in reversed(chunks) for d in chunk]
        return value


def _run_after_commit(conn: Connection) -> None:
    for action in conn.info.pop(_AFTER_COMMIT, []):
        action()


def calls_by_step(conn: Connection, table: Any, step_ids: list[int]) -> dict[int, list[Any]]:
    """A call table's rows for the given steps, grouped by step, in call order."""
    grouped: dict[int, list[Any]] = {i: [] for i in step_ids}
    if step_ids:
        rows = conn.execute(
            select(table).where(table.c.step_id.in_(step_ids)).order_by(table.c.step_id, table.c.seq)
        ).mappings()
        for row in rows:
            grouped[row["step_id"]].append(row)
    return grouped


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


def _chain_end(conn: Connection, run_id: str) -> tuple[int, str]:
    """How many steps a run has, and the last link of its chain."""
    last = conn.execute(
        select(Step.index, Step.digest).where(Step.run_id == run_id).order_by(Step.index.desc()).limit(1)
    ).first()
    return (last.index + 1, last.digest) if last else (0, GENESIS)


def _one_of(value: str, kind: Any, what: str) -> str:
    """`value` if it is one of the Literal `kind`'s values, else a StoreError naming them."""
    allowed = get_args(kind)
    if value not in allowed:
        raise StoreError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


SEARCH_CHARS = 2000  # as migration 0005 fills runs.search_text


def search_text_of(run_id: str, workflow: str, task_input: Any) -> str:
    """What the runs list's text search matches: id, workflow and task input, lower-cased."""
    text = f"{run_id} {workflow} {json.dumps(task_input, ensure_ascii=False, default=str)}"
    return text[:SEARCH_CHARS].lower()


def _run_record(row: Any) -> RunRecord:
    data = dict(row)
    data.pop("search_text", None)
    data.pop("head_digest", None)
    return RunRecord.model_validate(data)


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


@dataclass
class PreparedStep:
    """A step encoded for writing: payload digests and blob rows computed outside any
    transaction, so that the write lock is held only for the inserts."""

    step: StepRecord
    fields: dict[str, Any]
    model_rows: list[dict[str, Any]]
    tool_rows: list[dict[str, Any]]
    blobs: list[tuple[str, bytes, str]]


PLACEMENT = ("offset_ms", "agent", "handoff")  # call columns hashed only when set (added in 0006)


_UNPLACED = {"offset_ms": None, "agent": None}  # every row of one insert names the same columns


def _placed(call: ModelCallRecord | ToolCallRecord) -> dict[str, Any]:
    """A call's place in its step, as columns; unset ones are left out of the row (and so of
    the hash chain), so the links of calls recorded before these columns existed still hold."""
    return {k: v for k in PLACEMENT if (v := getattr(call, k, None)) is not None}


def prepare_step(
    store: TraceStore, step: StepRecord, input_messages: Sequence[Any] | None = None
) -> PreparedStep:
    """Encode `step`'s payloads; `input_messages` (raw state messages) replaces `step.input`."""
    blobs: list[tuple[str, bytes, str]] = []

    def put(value: Any) -> str | None:
        if value is None:
            return None
        row = store.encode_value(value)
        blobs.append(row)
        return row[0]

    def put_messages(messages: Sequence[Any] | None) -> str | None:
        if messages is None:
            return None
        rows = store.encode_messages(messages)
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
        self,
        store: TraceStore,
        run_id: str,
        next_index: int,
        head: str,
        invocations: dict[str, set[int]],
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.next_index = next_index
        self.head = head
        self._invocations = invocations
        self._lock = threading.Lock()

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
            content = step_content_digest(
                {**fields, "model_calls": prepared.model_rows, "tool_calls": prepared.tool_rows}
            )
            link = chain_link(self.head, content)
            self.store.put_blobs(conn, prepared.blobs)
            row = {
                **fields,
                "run_id": self.run_id,
                "checkpoint_after": record.checkpoint_after,
                "started_at": record.started_at,
                "ended_at": record.ended_at,
                "digest": link,
            }
            sql = self.store.sql
            conn.execute(sql.insert_step, row)
            key = {"run_id": self.run_id, "step_index": index}
            if prepared.model_rows:
                conn.execute(sql.insert_model_calls, [{**_UNPLACED, **m, **key} for m in prepared.model_rows])
            if prepared.tool_rows:
                conn.execute(sql.insert_tool_calls, [{**_UNPLACED, "handoff": None, **t, **key} for t in prepared.tool_rows])
            self.next_index = index + 1
            self.head = link
            written = record.model_copy(update={"index": index, "digest": link})
            if self.store.live is not None:
                conn.info.setdefault(_AFTER_COMMIT, []).append(
                    partial(self.store.live.step, self.store.redact, self.run_id, written)
                )
            return written
