"""Where a store's database is and how it is opened: the URL from a path or `COUNTERFACT_DB`,
the engine its dialect makes, and messages that never show a password."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from counterfact._errors import CounterfactError
from counterfact.store._dialects import DIALECTS, Dialect

DEFAULT_DB = "counterfact.db"


class StoreError(CounterfactError):
    """A store could not be used as asked; the message is one line meant for a person."""


def resolve_url(db: str | None = None) -> str:
    """A SQLAlchemy URL from a file path or URL (`--db`, then `COUNTERFACT_DB`, then default)."""
    target = db or os.environ.get("COUNTERFACT_DB") or DEFAULT_DB
    if "://" in target:
        if target.startswith("postgresql://"):  # psycopg 3 is the driver we ship
            target = "postgresql+psycopg://" + target.removeprefix("postgresql://")
        return target
    return f"sqlite:///{Path(target).expanduser().resolve()}"


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages (SQLAlchemy renders it)."""
    try:
        parsed = make_url(url)
        secret = {k: "***" for k in parsed.query if k.lower() in ("password", "sslpassword")}
        return parsed.update_query_dict(secret).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL given"  # unparseable: say nothing of what may be a secret


def open_engine(url: str) -> tuple[Engine, Dialect]:
    """The engine for `url`, made by its dialect, once a connection to it has opened."""
    try:
        name = make_url(url).get_backend_name()
        dialect = DIALECTS.get(name)
        if dialect is None:
            raise ArgumentError(f"counterfact stores runs in {' or '.join(DIALECTS)}, not {name}")
        engine = dialect.create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {safe_url(url)}: {exc}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        reason = str(exc.orig if hasattr(exc, "orig") and exc.orig else exc).splitlines()[0]
        raise StoreError(f"cannot open database {safe_url(url)}: {reason}") from None
    return engine, dialect
