"""Schema migrations with alembic, applied when a store is opened or by `counterfact db upgrade`."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, attempts: int = 5) -> str | None:
    """Bring the schema to the newest revision; a no-op when it is there already.

    Several processes may open a new database at once: a loser of the race to create the
    tables retries after the winner has committed.
    """
    head = head_revision()
    for attempt in range(attempts):
        if current_revision(engine) == head:
            return head
        try:
            command.upgrade(alembic_config(engine), "head")
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return head
