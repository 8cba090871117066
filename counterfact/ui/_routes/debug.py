"""Stored debug sessions: a session's report as JSON (`api`) and as a page (`pages`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from counterfact.interventions import render_html, session_report
from counterfact.ui._routes.state import ViewerDep

api = APIRouter()
pages = APIRouter()


@api.get("/api/debug/{session_id}")
def api_debug(ui: ViewerDep, session_id: str) -> Any:
    return session_report(ui.store, session_id).model_dump(mode="json")


@pages.get("/debug/{session_id}", response_class=HTMLResponse)
def page_debug(request: Request, ui: ViewerDep, session_id: str) -> Response:
    report = session_report(ui.store, session_id)
    body = Markup(render_html(report, standalone=False))
    return ui.templates.TemplateResponse(request, "debug.html", {"report": report, "body": body})
