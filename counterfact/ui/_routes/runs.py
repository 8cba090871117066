"""Runs: the list, a run, a step, a run's fork tree, two runs compared. `api` is the JSON API,
`pages` the HTML pages over the same views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from counterfact.ui._forks import compare_runs, fork_tree
from counterfact.ui._lists import RunFilters, runs_page
from counterfact.ui._routes.state import ViewerDep
from counterfact.ui._run import run_page
from counterfact.ui._step import step_view

api = APIRouter()
pages = APIRouter()


@api.get("/api/runs")
def api_runs(
    ui: ViewerDep,
    status: str | None = None, workflow: str | None = None, agent: str | None = None,
    label: list[str] = Query(default=[]), since: datetime | None = None, text: str | None = None,  # noqa: B008
    source: str | None = None, cursor: str | None = None, limit: int = Query(default=50, ge=1, le=500),
) -> Any:
    filters = RunFilters(status=status, workflow=workflow, agent=agent, label=label, since=since,
                         text=text, source=source)
    return runs_page(ui.store, filters, cursor=cursor, limit=limit).model_dump(mode="json")


@api.get("/api/runs/{run_id}")
def api_run(ui: ViewerDep, run_id: str) -> Any:
    return run_page(ui.store, run_id).model_dump(mode="json")


@api.get("/api/runs/{run_id}/steps/{index}")
def api_step(ui: ViewerDep, run_id: str, index: int) -> Any:
    return step_view(ui.store, run_id, index).model_dump(mode="json")


@api.get("/api/runs/{run_id}/tree")
def api_tree(ui: ViewerDep, run_id: str) -> Any:
    return fork_tree(ui.store, run_id).model_dump(mode="json")


@api.get("/api/compare")
def api_compare(ui: ViewerDep, a: str, b: str) -> Any:
    row_a, row_b, rows = compare_runs(ui.store, a, b)
    return {"a": row_a.model_dump(mode="json"), "b": row_b.model_dump(mode="json"),
            "steps": [r.model_dump(mode="json") for r in rows]}


@pages.get("/", response_class=HTMLResponse)
def page_runs(
    request: Request, ui: ViewerDep,
    status: str | None = None, workflow: str | None = None, agent: str | None = None,
    label: list[str] = Query(default=[]), since: str | None = None, text: str | None = None,  # noqa: B008
    source: str | None = None, cursor: str | None = None, fragment: bool = False,
) -> Response:
    filters = RunFilters(status=status or None, workflow=workflow or None, agent=agent or None,
                         label=[x for x in label if x], since=_since(since), text=text or None,
                         source=source or None)
    page = runs_page(ui.store, filters, cursor=cursor or None)
    name = "runs_rows.html" if fragment else "runs.html"
    return ui.templates.TemplateResponse(request, name, {"page": page, "filters": filters, "cursor": cursor,
                                                         "statuses": ["running", "succeeded", "failed", "error"]})


@pages.get("/runs/{run_id}", response_class=HTMLResponse)
def page_run(request: Request, ui: ViewerDep, run_id: str) -> Response:
    return ui.templates.TemplateResponse(request, "run.html", {"p": run_page(ui.store, run_id)})


@pages.get("/runs/{run_id}/steps/{index}", response_class=HTMLResponse)
def page_step(request: Request, ui: ViewerDep, run_id: str, index: int, fragment: bool = False) -> Response:
    view = step_view(ui.store, run_id, index)
    if fragment:
        return ui.templates.TemplateResponse(request, "step_panel.html", {"v": view})
    return ui.templates.TemplateResponse(request, "step.html", {"v": view, "run": ui.store.get_run(view.run_id)})


@pages.get("/runs/{run_id}/tree", response_class=HTMLResponse)
def page_tree(request: Request, ui: ViewerDep, run_id: str, fragment: bool = False) -> Response:
    tree = fork_tree(ui.store, run_id)
    name = "tree_panel.html" if fragment else "tree.html"
    return ui.templates.TemplateResponse(request, name, {"tree": tree})


@pages.get("/compare", response_class=HTMLResponse)
def page_compare(request: Request, ui: ViewerDep, a: str, b: str) -> Response:
    row_a, row_b, rows = compare_runs(ui.store, a, b)
    return ui.templates.TemplateResponse(request, "compare.html", {"a": row_a, "b": row_b, "rows": rows})


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: {text!r} is not an ISO date or time") from None
