"""The audit list (each run's chain checked) and the imported runs with their attribution
scores, as JSON and as pages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from counterfact.ui._lists import RunFilters, audit_page, imports_page
from counterfact.ui._routes.state import ViewerDep

router = APIRouter()


@router.get("/api/audit")
def api_audit(ui: ViewerDep, status: str | None = None, workflow: str | None = None, cursor: str | None = None) -> Any:
    filters = RunFilters(status=status or None, workflow=workflow or None)
    return audit_page(ui.store, filters, cursor=cursor or None).model_dump(mode="json")


@router.get("/audit", response_class=HTMLResponse)
def page_audit(request: Request, ui: ViewerDep, status: str | None = None, workflow: str | None = None,
               cursor: str | None = None) -> Response:
    filters = RunFilters(status=status or None, workflow=workflow or None)
    page = audit_page(ui.store, filters, cursor=cursor or None)
    return ui.templates.TemplateResponse(request, "audit.html", {"page": page, "filters": filters})


@router.get("/api/imports")
def api_imports(ui: ViewerDep, workflow: str | None = None, cursor: str | None = None) -> Any:
    return imports_page(ui.store, workflow=workflow or None, cursor=cursor or None).model_dump(mode="json")


@router.get("/imports", response_class=HTMLResponse)
def page_imports(request: Request, ui: ViewerDep, workflow: str | None = None, cursor: str | None = None) -> Response:
    page = imports_page(ui.store, workflow=workflow or None, cursor=cursor or None)
    return ui.templates.TemplateResponse(request, "imports.html", {"page": page, "workflow": workflow or ""})
