"""Paging what a tool returns: a model context is small, a run is not.

Lists are paged by position (or, for runs, by a keyset cursor that stays right while new runs
arrive); one large value (a step with its histories, a debug report) is paged as its JSON text,
`TEXT_PAGE` characters at a time; long texts inside a listing are clipped with a note of how
much was left out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from counterfact._errors import CounterfactError

TEXT_PAGE = 20_000  # characters of JSON text per page
CLIP = 500  # characters kept of one text in a listing


class TextPage(BaseModel):
    """A slice of one value's JSON text; read on from `next_offset` until it is None."""

    text: str
    offset: int
    next_offset: int | None
    total_chars: int


def text_page(value: Any, offset: int, size: int = TEXT_PAGE) -> TextPage:
    text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
    if offset < 0 or (offset and offset >= len(text)):
        raise CounterfactError(f"offset {offset} is outside the text (0 to {len(text) - 1})")
    end = offset + size
    return TextPage(text=text[offset:end], offset=offset, next_offset=end if end < len(text) else None, total_chars=len(text))


def clip(value: Any, limit: int = CLIP) -> Any:
    """`value` with every string longer than `limit` cut, saying how much was cut."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {k: clip(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [clip(v, limit) for v in value]
    return value


def run_cursor(created_at: datetime, run_id: str) -> str:
    return f"{created_at.isoformat()}|{run_id}"


def parse_run_cursor(cursor: str) -> tuple[datetime, str]:
    created, sep, run_id = cursor.partition("|")
    try:
        if not sep or not run_id:
            raise ValueError
        return datetime.fromisoformat(created), run_id
    except ValueError:
        raise CounterfactError(f"cursor {cursor!r} is not one a list_runs page gave") from None
