"""What differs between the databases a store runs on, in one place per database.

A `Dialect` answers every question the store would otherwise ask as `if dialect == ...`: how
to open the engine, how to upsert, how the write connection queues writers and runs a
transaction, how to filter runs by a label, and whether other processes can share the
database. `DIALECTS` finds one by SQLAlchemy's dialect name.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import (
    AbstractContextManager,
    ExitStack,
    closing,
    contextmanager,
    suppress,
)
from functools import cache
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    Text,
    case,
    cast,
    create_engine,
    event,
    exists,
    func,
    literal,
)
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from counterfact.store.schema import Run

_PIPELINE = "cf_pipeline"  # connection info: the psycopg pipeline the write connection is in


class Dialect(Protocol):
    """One database's answers to what the store asks of it."""

    name: str
    single_machine: bool  # only processes of one machine can open it (a file)

    def create_engine(self, url: str) -> Engine: ...

    def upsert(self, table: Table) -> PgInsert | SqliteInsert:
        """An INSERT with this database's ON CONFLICT clauses."""
        ...

    def open_writer(self, conn: Connection) -> None:
        """Set up a new write connection (how it queues behind other writers)."""
        ...

    def transaction(self, conn: Connection, *, blind: bool) -> AbstractContextManager[None]:
        """One transaction on the write connection; `blind`: it reads nothing back."""
        ...

    def close_writer(self, conn: Connection) -> None:
        """Undo what the transactions left on the write connection before it closes."""
        ...

    def label_is(self, key: str, value: str) -> ColumnElement[bool]:
        """Runs whose label `key` is `value` (a label that is not a string: its text form),
        with key and value bound parameters: no key or value can change the query."""
        ...

    def shared_by_processes(self, url: URL) -> bool:
        """Whether other processes (Ray workers) can open the database at `url` too."""
        ...


_LABEL_FUNCTION = "counterfact_label"  # an older SQLite's label read by Python (see label_is)


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
    if not _sqlite_json_keeps_nul():  # what label filters fall back on (see label_is)
        dbapi_connection.create_function(_LABEL_FUNCTION, 2, _label_of, deterministic=True)


class SQLiteDialect:
    """A SQLite file in WAL mode: writers of several processes queue on its busy timeout."""

    name = "sqlite"
    single_machine = True

    def create_engine(self, url: str) -> Engine:
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def upsert(self, table: Table) -> SqliteInsert:
        return sqlite_insert(table)

    def open_writer(self, conn: Connection) -> None:
        # Take the write lock at BEGIN, so that writers of several processes queue on
        # busy_timeout instead of failing when a read lock cannot be upgraded.
        conn.connection.dbapi_connection.isolation_level = "IMMEDIATE"  # type: ignore[union-attr]

    def transaction(self, conn: Connection, *, blind: bool) -> AbstractContextManager[None]:
        return _plain(conn)

    def close_writer(self, conn: Connection) -> None:
        pass

    def label_is(self, key: str, value: str) -> ColumnElement[bool]:
        label = func.json_each(Run.labels).table_valued("key", "value", joins_implicitly=True)
        match = exists().where(label.c.key == key, cast(label.c.value, Text) == value)
        if _sqlite_json_keeps_nul():
            return match
        # an older SQLite cuts a string at a NUL (\u0000) when it decodes JSON: rows holding one
        # (rare) have their label read by Python instead; every other row stays in SQL
        has_nul = func.instr(cast(Run.labels, Text), literal("\\u0000", Text)) > 0
        exact = cast(getattr(func, _LABEL_FUNCTION)(cast(Run.labels, Text), key), Text) == value
        return case((has_nul, exact), else_=match)

    def shared_by_processes(self, url: URL) -> bool:
        return url.database not in (None, "", ":memory:")


@contextmanager
def _plain(conn: Connection) -> Iterator[None]:
    with conn.begin():
        yield


class _PipelineMode:
    """psycopg's pipeline mode on a connection, held from one transaction to the next."""

    def __init__(self, raw: Any) -> None:
        self._stack = ExitStack()
        self.sync = self._stack.enter_context(raw.pipeline()).sync

    def close(self) -> None:
        self._stack.close()


class PostgreSQLDialect:
    """PostgreSQL through psycopg 3: a pooled engine, blind transactions pipelined."""

    name = "postgresql"
    single_machine = False

    def create_engine(self, url: str) -> Engine:
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    def upsert(self, table: Table) -> PgInsert:
        return pg_insert(table)

    def open_writer(self, conn: Connection) -> None:
        # Commits do not wait for the WAL flush: a killed client loses nothing committed, a
        # server crash may lose the last few transactions whole (never half of one): the
        # guarantee SQLite's WAL with synchronous=NORMAL gives.
        conn.exec_driver_sql("SET synchronous_commit = off")
        conn.commit()

    def transaction(self, conn: Connection, *, blind: bool) -> AbstractContextManager[None]:
        """A blind transaction runs in psycopg's pipeline mode, in one round trip (see
        `_pipelined`); the connection stays in the mode from one blind transaction to the
        next, as leaving it costs a round trip."""
        self._set_pipeline(conn, blind)
        pipeline: _PipelineMode | None = conn.info.get(_PIPELINE)
        return _pipelined(conn, pipeline) if pipeline else _plain(conn)

    def close_writer(self, conn: Connection) -> None:
        pipeline: _PipelineMode | None = conn.info.pop(_PIPELINE, None)
        if pipeline is not None:
            with suppress(Exception):  # the connection may be broken: it is discarded anyway
                pipeline.close()
                conn.connection.driver_connection.autocommit = False  # type: ignore[union-attr]

    def _set_pipeline(self, conn: Connection, on: bool) -> None:
        """Put the (idle) write connection in or out of pipeline mode. In the mode the
        connection is in autocommit: `_pipelined` delimits transactions by the pipeline's
        syncs (psycopg would wait for the result of a BEGIN of its own)."""
        if on and _PIPELINE not in conn.info:
            raw = conn.connection.driver_connection
            raw.autocommit = True  # type: ignore[union-attr]
            conn.info[_PIPELINE] = _PipelineMode(raw)
        elif not on and _PIPELINE in conn.info:
            conn.info.pop(_PIPELINE).close()
            conn.connection.driver_connection.autocommit = False  # type: ignore[union-attr]

    def label_is(self, key: str, value: str) -> ColumnElement[bool]:
        return Run.labels[key].as_string() == value  # labels ->> :key = :value

    def shared_by_processes(self, url: URL) -> bool:
        return True


@contextmanager
def _pipelined(conn: Connection, pipeline: _PipelineMode) -> Iterator[None]:
    """A transaction in pipeline mode: the statements are queued and sent together, and only
    the commit waits for the server, once, where each statement would wait for its own round
    trip. The BEGIN and COMMIT are queued like the statements: the transaction must be
    explicit, because psycopg syncs inside it (its executemany runs in a nested pipeline,
    which syncs on exit) and a sync ends an implicit transaction, so a step could be committed
    without its checkpoint writes when the connection died between the two (a test drops the
    connection mid-run). A statement's error undoes all of it, and so does the ROLLBACK sent
    when the block raises."""
    error = conn.dialect.loaded_dbapi.Error
    raw: Any = conn.connection.driver_connection
    with conn.begin():
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
            # A sync raises the first error among the results that have arrived; those still
            # on their way (the aborted COMMIT's) would make the rollback below raise
            # PipelineAborted in its place. One more sync waits for them.
            with suppress(error):
                pipeline.sync()
            raise DBAPIError.instance("COMMIT", None, exc, error) from None


DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLiteDialect(), PostgreSQLDialect())}
