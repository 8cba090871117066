"""A live Arize Phoenix as a source of runs: `phoenix://HOST:PORT/PROJECT` reads the project's
spans over Phoenix's REST API (`GET /v1/projects/{project}/spans`, page by page) and imports
them as the OpenTelemetry importer does OTLP files: a trace is a run, the root's children its
steps, LLM and TOOL spans their calls. Runs counterfact exported to Phoenix come back under
their own ids; traces already stored are skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from counterfact._errors import validation_message
from counterfact.formats._base import (
    FormatError,
    ImportReport,
    Progress,
    Skipped,
    register_source,
)
from counterfact.formats._imported import NOTHING, naive_utc
from counterfact.formats._otel_import import Span, import_spans
from counterfact.store import TraceStore

PAGE = 1000
TIMEOUT = 30.0


class SpanContext(BaseModel):
    trace_id: str
    span_id: str


class PhoenixSpan(BaseModel):
    """A span as Phoenix's REST API gives it."""

    name: str
    context: SpanContext
    span_kind: str | None = None
    parent_id: str | None = None
    start_time: datetime
    end_time: datetime | None = None
    status_code: str | None = None
    status_message: str | None = None
    attributes: dict[str, Any] = {}


def _api(url: str) -> tuple[str, str]:
    """The HTTP root and the project a phoenix:// URL names."""
    parts = urlsplit(url)
    project = unquote(parts.path.strip("/"))
    if not parts.netloc or not project or "/" in project:
        raise FormatError(f"{url}: expected phoenix://HOST:PORT/PROJECT; {NOTHING}")
    return f"http://{parts.netloc}", project


def _page(client: httpx.Client, url: str, path: str, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": PAGE, "sort": "start_time", "order": "asc"}
    if cursor:
        params["cursor"] = cursor
    try:
        answer = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise FormatError(f"{url}: cannot reach Phoenix ({exc.__class__.__name__}: {exc}); {NOTHING}") from None
    if answer.status_code == 404:
        raise FormatError(f"{url}: Phoenix has no project of that name; {NOTHING}")
    if answer.status_code != 200:
        raise FormatError(f"{url}: Phoenix answered {answer.status_code} {answer.reason_phrase}; {NOTHING}")
    try:
        return answer.json()
    except ValueError:
        raise FormatError(f"{url}: Phoenix's answer is not JSON; {NOTHING}") from None


def read_phoenix(url: str) -> list[Span]:
    """Every span of the project, as the OTel importer's `Span`s."""
    root, project = _api(url)
    path = f"/v1/projects/{quote(project, safe='')}/spans"
    spans: list[Span] = []
    cursor: str | None = None
    with httpx.Client(base_url=root, timeout=TIMEOUT, trust_env=False) as client:
        while True:
            page = _page(client, url, path, cursor)
            for number, raw in enumerate(page.get("data") or [], start=len(spans) + 1):
                try:
                    span = PhoenixSpan.model_validate(raw)
                except ValidationError as exc:
                    raise FormatError(f"{url}: span {number} is not a Phoenix span ({validation_message(exc, raw)}); "
                                      f"expected name, context and start_time; {NOTHING}") from None
                attributes = dict(span.attributes)
                if span.span_kind and "openinference.span.kind" not in attributes:
                    attributes["openinference.span.kind"] = span.span_kind
                spans.append(Span(
                    trace_id=span.context.trace_id, span_id=span.context.span_id, parent_id=span.parent_id or None,
                    name=span.name, start=naive_utc(span.start_time), end=naive_utc(span.end_time or span.start_time),
                    attributes=attributes,
                    error=(span.status_message or "error") if span.status_code == "ERROR" else None,
                    source=f"{url} span {number}"))
            cursor = page.get("next_cursor")
            if not cursor:
                return spans


class PhoenixSource:
    """A live Arize Phoenix, read over its REST API."""

    scheme = "phoenix"
    summary = "a live Arize Phoenix project (phoenix://HOST:PORT/PROJECT): its traces as runs, by the OTel mapping"

    def read(self, store: TraceStore, url: str, on_progress: Progress | None = None) -> ImportReport:
        spans = read_phoenix(url)
        if not spans:
            raise FormatError(f"{url}: the project has no spans; {NOTHING}")
        report = import_spans(store, spans)
        if on_progress is not None:
            on_progress(1, 1)
        return ImportReport(
            format="phoenix", files=[url], run_ids=report.runs, steps=report.steps,
            skipped=[Skipped(what=f"run {run_id}", reason="already in the store") for run_id in report.existing],
            notes=[f"{report.spans} spans: {report.model_calls} model calls, {report.tool_calls} tool calls"],
        )


register_source(PhoenixSource())
