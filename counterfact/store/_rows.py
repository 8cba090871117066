"""Rows by id, with one-line errors that name what is missing: what every record kept in the
store's database (the store's own, and the debugger's sessions) is read and checked with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from counterfact.store._engine import StoreError


def require_row(conn: Connection, table: Any, record_id: str, what: str, where: str) -> None:
    """Raise StoreError unless `table` has a row with id `record_id` (`where`: the database,
    as people may read its URL)."""
    if conn.execute(select(table.id).where(table.id == record_id)).first() is None:
        raise StoreError(f"no {what} with id {record_id!r} in {where}")


def row_of(conn: Connection, table: Any, record_id: str, what: str, where: str) -> dict[str, Any]:
    """The row of `table` with id `record_id`, or a StoreError naming it."""
    row = conn.execute(select(table.__table__).where(table.id == record_id)).mappings().one_or_none()
    if row is None:
        raise StoreError(f"no {what} with id {record_id!r} in {where}")
    return dict(row)
