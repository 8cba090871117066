"""Suite runs (what `counterfact suite runs` lists) and two of them compared per task (what
`counterfact compare` prints), as JSON and as pages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from counterfact.graphs import suite_runs
from counterfact.ui._routes.state import ViewerDep
from counterfact.ui._suites import suite_compare_page

router = APIRouter()


@router.get("/api/suite-runs")
def api_suite_runs(ui: ViewerDep) -> Any:
    return [s.model_dump(mode="json") for s in suite_runs(ui.store)]


@router.get("/api/suite-runs/compare")
def api_suite_compare(ui: ViewerDep, a: str, b: str) -> Any:
    return suite_compare_page(ui.store, a, b).model_dump(mode="json")


@router.get("/suites", response_class=HTMLResponse)
def page_suites(request: Request, ui: ViewerDep) -> Response:
    return ui.templates.TemplateResponse(request, "suites.html", {"suites": suite_runs(ui.store)})


@router.get("/suites/compare", response_class=HTMLResponse)
def page_suite_compare(request: Request, ui: ViewerDep, a: str, b: str) -> Response:
    return ui.templates.TemplateResponse(request, "suite_compare.html", {"c": suite_compare_page(ui.store, a, b)})
