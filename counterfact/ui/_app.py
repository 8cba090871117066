"""The viewer's web app: HTML pages rendered on the server (every trace value escaped by
Jinja's autoescape, and no inline script allowed by the content security policy), a JSON API
over the same views that a script can use, and jobs that stream their progress as server-sent
events.

Who may use it is decided in one place, `_security.ViewerGuard`; the routes are in `_routes`,
one router per resource, over the state this app keeps on `app.state.viewer`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from counterfact._errors import CounterfactError
from counterfact.store import StoreError, TraceStore
from counterfact.ui._jobs import Jobs
from counterfact.ui._routes import ROUTERS, Viewer
from counterfact.ui._security import ViewerGuard
from counterfact.ui._suites import SuiteRunNotFound

_HERE = Path(__file__).parent


def create_app(store: TraceStore, *, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The viewer over `store`. `host` is where it is served: off loopback, every request
    needs the token."""
    token = token or secrets.token_urlsafe(24)
    # no docs pages: FastAPI's fetch Swagger UI from a CDN, and the viewer fetches nothing from outside
    app = FastAPI(title="counterfact", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=_lifespan)
    app.state.viewer = Viewer(store=store, jobs=Jobs(store), templates=_templates(token), token=token)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.middleware("http")(ViewerGuard(token, host))
    app.add_exception_handler(StoreError, _not_found)
    app.add_exception_handler(SuiteRunNotFound, _not_found)
    app.add_exception_handler(CounterfactError, _bad_request)
    app.add_exception_handler(ValueError, _bad_request)
    for router in ROUTERS:
        app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.viewer.jobs.close()


def _templates(token: str) -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["token"] = token
    templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if isinstance(d, datetime) else ""
    templates.env.filters["ms"] = lambda v: f"{v:,.0f} ms" if v < 10_000 else f"{v / 1000:,.1f} s"
    templates.env.filters["urlencode_without"] = lambda params, key: urlencode(
        [(k, v) for k, v in params.multi_items() if k != key]
    )
    templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False, default=str)
    return templates


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, str(exc), 404)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, str(exc), 400)


def _error(request: Request, message: str, status: int) -> Response:
    if request.url.path.startswith("/api/") or request.query_params.get("fragment"):
        return JSONResponse({"error": message}, status_code=status)
    templates: Jinja2Templates = request.app.state.viewer.templates
    return templates.TemplateResponse(request, "error.html", {"message": message}, status_code=status)
