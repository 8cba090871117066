"""The root of the errors a person can fix: the CLI prints these as one line, not a traceback."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class CounterfactError(Exception):
    """Bad input or configuration, with a one-line message naming what was wrong."""


def validation_message(exc: ValidationError, data: Any = None, *, every: bool = False, skip: tuple[str, ...] = ()) -> str:
    """A pydantic validation error as one line, `where: what was wrong` (the first error, or
    every one joined by "; "). A list item of `data` is named by its `name` or `id`, so the
    line says `agents[1] (solver).settings.temperature`, not `agents.1.settings.temperature`;
    location parts in `skip` (such as FastAPI's "body") are left out."""
    errors = exc.errors() if every else exc.errors()[:1]
    line = "; ".join(f"{_where(e['loc'], data, skip)}: {e['msg']}" for e in errors)
    return " ".join(line.split())  # names and values from the input may hold line breaks


def _where(location: tuple[int | str, ...], data: Any, skip: tuple[str, ...]) -> str:
    where, value = "", data
    for part in location:
        if part in skip:
            continue
        if isinstance(part, int):
            item = value[part] if isinstance(value, list) and 0 <= part < len(value) else None
            label = (item.get("name") or item.get("id")) if isinstance(item, dict) else None
            where += f"[{part}]" + (f" ({label})" if label else "")
            value = item
        else:
            where += ("." if where else "") + str(part)
            value = value.get(part) if isinstance(value, dict) else None
    return where or "(top level)"
