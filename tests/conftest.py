"""Fixtures shared by the whole suite: stores on a SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from counterfact.traces import TraceStore

PG_ADMIN_URL = os.environ.get(
    "COUNTERFACT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_available() -> bool:
    try:
        with create_engine(PG_ADMIN_URL).connect():
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, dropped afterwards."""
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (see .ci/run)")
    name = f"cf_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "trace.db")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    """A fresh, migrated store on each backend."""
    if request.param == "sqlite":
        s = TraceStore.open(str(tmp_path / "trace.db"))
    else:
        s = TraceStore.open(request.getfixturevalue("pg_url"))
        _truncate(s)
    yield s
    s.close()


def _truncate(store: TraceStore) -> None:
    with store.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE runs, steps, model_calls, tool_calls, blobs, checkpoints, "
                "checkpoint_writes CASCADE"
            )
        )
