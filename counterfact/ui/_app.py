"""The viewer's web app: HTML pages rendered on the server (every trace value escaped by
Jinja's autoescape, and no inline script allowed by the content security policy), a JSON API
over the same views that a script can use, and jobs that stream their progress as server-sent
events.

Who may use it is decided in one place, `_security.ViewerGuard`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from counterfact._errors import CounterfactError
from counterfact._files import parse_yaml
from counterfact.interventions import InterventionError, render_html, session_report
from counterfact.traces import StoreError, TraceStore
from counterfact.ui._forks import compare_runs, fork_tree
from counterfact.ui._jobs import DebugRequest, Jobs, ReplayRequest
from counterfact.ui._lists import RunFilters, audit_page, imports_page, runs_page
from counterfact.ui._run import run_page
from counterfact.ui._security import ViewerGuard
from counterfact.ui._step import step_view

_HERE = Path(__file__).parent


def create_app(store: TraceStore, *, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The viewer over `store`. `host` is where it is served: off loopback, every request
    needs the token."""
    token = token or secrets.token_urlsafe(24)
    jobs = Jobs(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()

    # no docs pages: FastAPI's fetch Swagger UI from a CDN, and the viewer fetches nothing from outside
    app = FastAPI(title="counterfact", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["token"] = token
    templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if isinstance(d, datetime) else ""
    templates.env.filters["ms"] = lambda v: f"{v:,.0f} ms" if v < 10_000 else f"{v / 1000:,.1f} s"
    templates.env.filters["urlencode_without"] = lambda params, key: urlencode(
        [(k, v) for k, v in params.multi_items() if k != key]
    )
    templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False, default=str)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    app.middleware("http")(ViewerGuard(token, host))

    @app.exception_handler(StoreError)
    async def _missing(request: Request, exc: StoreError) -> Response:
        return _error(request, templates, str(exc), 404)

    @app.exception_handler(CounterfactError)
    async def _bad(request: Request, exc: CounterfactError) -> Response:
        return _error(request, templates, str(exc), 400)

    @app.exception_handler(ValueError)
    async def _invalid(request: Request, exc: ValueError) -> Response:
        return _error(request, templates, str(exc), 400)

    # -- JSON API -----------------------------------------------------------------------------

    @app.get("/api/runs")
    def api_runs(
        status: str | None = None, workflow: str | None = None, agent: str | None = None,
        label: list[str] = Query(default=[]), since: datetime | None = None, text: str | None = None,  # noqa: B008
        source: str | None = None, cursor: str | None = None, limit: int = Query(default=50, ge=1, le=500),
    ) -> Any:
        filters = RunFilters(status=status, workflow=workflow, agent=agent, label=label, since=since,
                             text=text, source=source)
        return runs_page(store, filters, cursor=cursor, limit=limit).model_dump(mode="json")

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> Any:
        return run_page(store, run_id).model_dump(mode="json")

    @app.get("/api/runs/{run_id}/steps/{index}")
    def api_step(run_id: str, index: int) -> Any:
        return step_view(store, run_id, index).model_dump(mode="json")

    @app.get("/api/runs/{run_id}/tree")
    def api_tree(run_id: str) -> Any:
        return fork_tree(store, run_id).model_dump(mode="json")

    @app.get("/api/compare")
    def api_compare(a: str, b: str) -> Any:
        row_a, row_b, rows = compare_runs(store, a, b)
        return {"a": row_a.model_dump(mode="json"), "b": row_b.model_dump(mode="json"),
                "steps": [r.model_dump(mode="json") for r in rows]}

    @app.get("/api/debug/{session_id}")
    def api_debug(session_id: str) -> Any:
        return session_report(store, session_id).model_dump(mode="json")

    @app.post("/api/runs/{run_id}/replays", status_code=202)
    def api_replay(run_id: str, request: ReplayRequest) -> Any:
        if isinstance(request.edit, str):
            request.edit = parse_yaml(request.edit, "edit", InterventionError)
        return jobs.start_replay(run_id, request).model_dump(mode="json")

    @app.post("/api/runs/{run_id}/debug", status_code=202)
    def api_start_debug(run_id: str, request: DebugRequest) -> Any:
        return jobs.start_debug(run_id, request).model_dump(mode="json")

    @app.get("/api/jobs")
    def api_jobs(run: str | None = None) -> Any:
        return [j.model_dump(mode="json") for j in jobs.list() if run is None or j.run_id == run]

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str) -> Any:
        return _job(jobs, job_id).model_dump(mode="json")

    @app.get("/api/jobs/{job_id}/events")
    async def api_job_events(job_id: str) -> StreamingResponse:
        _job(jobs, job_id)

        async def stream() -> AsyncIterator[str]:
            seen = 0
            while True:
                events = await asyncio.to_thread(jobs.wait, job_id, seen, 10.0)
                for event in events:
                    seen = event.seq
                    yield f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
                if any(e.kind in ("done", "failed") for e in events):
                    return
                if not events:
                    yield ": waiting\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- pages --------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def page_runs(
        request: Request, status: str | None = None, workflow: str | None = None, agent: str | None = None,
        label: list[str] = Query(default=[]), since: str | None = None, text: str | None = None,  # noqa: B008
        source: str | None = None, cursor: str | None = None, fragment: bool = False,
    ) -> Response:
        filters = RunFilters(status=status or None, workflow=workflow or None, agent=agent or None,
                             label=[x for x in label if x], since=_since(since), text=text or None,
                             source=source or None)
        page = runs_page(store, filters, cursor=cursor or None)
        name = "runs_rows.html" if fragment else "runs.html"
        return templates.TemplateResponse(request, name, {"page": page, "filters": filters, "cursor": cursor,
                                                          "statuses": ["running", "succeeded", "failed", "error"]})

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def page_run(request: Request, run_id: str) -> Response:
        return templates.TemplateResponse(request, "run.html", {"p": run_page(store, run_id)})

    @app.get("/runs/{run_id}/steps/{index}", response_class=HTMLResponse)
    def page_step(request: Request, run_id: str, index: int, fragment: bool = False) -> Response:
        view = step_view(store, run_id, index)
        if fragment:
            return templates.TemplateResponse(request, "step_panel.html", {"v": view})
        return templates.TemplateResponse(request, "step.html", {"v": view, "run": store.get_run(view.run_id)})

    @app.get("/runs/{run_id}/tree", response_class=HTMLResponse)
    def page_tree(request: Request, run_id: str, fragment: bool = False) -> Response:
        tree = fork_tree(store, run_id)
        name = "tree_panel.html" if fragment else "tree.html"
        return templates.TemplateResponse(request, name, {"tree": tree})

    @app.get("/compare", response_class=HTMLResponse)
    def page_compare(request: Request, a: str, b: str) -> Response:
        row_a, row_b, rows = compare_runs(store, a, b)
        return templates.TemplateResponse(request, "compare.html", {"a": row_a, "b": row_b, "rows": rows})

    @app.get("/debug/{session_id}", response_class=HTMLResponse)
    def page_debug(request: Request, session_id: str) -> Response:
        report = session_report(store, session_id)
        body = Markup(render_html(report, standalone=False))
        return templates.TemplateResponse(request, "debug.html", {"report": report, "body": body})

    @app.get("/api/audit")
    def api_audit(status: str | None = None, workflow: str | None = None, cursor: str | None = None) -> Any:
        filters = RunFilters(status=status or None, workflow=workflow or None)
        return audit_page(store, filters, cursor=cursor or None).model_dump(mode="json")

    @app.get("/audit", response_class=HTMLResponse)
    def page_audit(request: Request, status: str | None = None, workflow: str | None = None,
                   cursor: str | None = None) -> Response:
        filters = RunFilters(status=status or None, workflow=workflow or None)
        page = audit_page(store, filters, cursor=cursor or None)
        return templates.TemplateResponse(request, "audit.html", {"page": page, "filters": filters})

    @app.get("/api/imports")
    def api_imports(workflow: str | None = None, cursor: str | None = None) -> Any:
        return imports_page(store, workflow=workflow or None, cursor=cursor or None).model_dump(mode="json")

    @app.get("/imports", response_class=HTMLResponse)
    def page_imports(request: Request, workflow: str | None = None, cursor: str | None = None) -> Response:
        page = imports_page(store, workflow=workflow or None, cursor=cursor or None)
        return templates.TemplateResponse(request, "imports.html", {"page": page, "workflow": workflow or ""})

    return app


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: {text!r} is not an ISO date or time") from None


def _job(jobs: Jobs, job_id: str) -> Any:
    try:
        return jobs.get(job_id)
    except KeyError:
        raise HTTPException(404, f"no job {job_id!r}") from None


def _error(request: Request, templates: Jinja2Templates, message: str, status: int) -> Response:
    if request.url.path.startswith("/api/") or request.query_params.get("fragment"):
        return JSONResponse({"error": message}, status_code=status)
    return templates.TemplateResponse(request, "error.html", {"message": message}, status_code=status)
