"""The recording hot path's SQL, built once per dialect, and run on the DBAPI cursor.

Statements built per call cost SQLAlchemy a fresh cache key each time; these are built when a
store opens and reused for every step, with values passed as bind parameters. On the hot path
(`execute`) a statement is rendered to SQL once per dialect and set of columns, and then sent
straight to the DBAPI cursor with its values converted by the columns' own bind processors (so
what is stored is exactly what `Connection.execute` would store): SQLAlchemy's per-execution
work (cache key, execution context, result object) was a good part of a step's cost.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.engine import Dialect as SQLDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

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


class _Rendered:
    """One statement as SQL text for one dialect and set of columns, with how each row's
    values become the DBAPI's parameters (positional or named, as the driver takes them)."""

    def __init__(self, statement: Insert, dialect: SQLDialect, keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self.sql = compiled.string
        names = list(compiled.positiontup) if compiled.positiontup is not None else list(compiled.binds)
        for name in names:  # a column left out of the rows would be filled by SQLAlchemy
            if name not in keys:
                raise ValueError(f"rows for {statement.table} must give {name!r}")
        processors: dict[str, Callable[[Any], Any]] = {}
        for name in names:
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        self._steps = [(name, processors.get(name)) for name in names]
        escaped = compiled.escaped_bind_names or {}
        self._positional = compiled.positiontup is not None
        self._targets = [escaped.get(name, name) for name in names]

    def parameters(self, row: Mapping[str, Any]) -> Any:
        values = [row[name] if process is None else process(row[name]) for name, process in self._steps]
        return tuple(values) if self._positional else dict(zip(self._targets, values, strict=True))


_RENDERED: weakref.WeakKeyDictionary[Insert, dict[tuple[str, tuple[str, ...]], _Rendered]] = weakref.WeakKeyDictionary()


def execute(conn: Connection, statement: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run `statement` for each of `rows` (all naming the same columns) on the connection's
    DBAPI cursor, in the caller's transaction. Driver errors surface as SQLAlchemy's
    (`IntegrityError`, `OperationalError`...), a lost connection marked as such, as from
    `Connection.execute`."""
    if not rows:
        return
    dialect = conn.dialect
    keys = tuple(rows[0])
    cache = _RENDERED.setdefault(statement, {})
    rendered = cache.get((dialect.name, keys))
    if rendered is None:
        rendered = cache[(dialect.name, keys)] = _Rendered(statement, dialect, keys)
    params = [rendered.parameters(row) for row in rows]
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    many = len(params) > 1
    try:
        if conn.dispatch.before_cursor_execute:  # listeners (statement counts) see it as usual
            conn.dispatch.before_cursor_execute(conn, cursor, rendered.sql, params, None, many)
        if many:
            cursor.executemany(rendered.sql, params)
        else:
            cursor.execute(rendered.sql, params[0])
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            rendered.sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
            connection_invalidated=dialect.is_disconnect(exc, raw, cursor), dialect=dialect,
        ) from exc
    finally:
        cursor.close()
