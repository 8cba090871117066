"""What every route shares, kept on `app.state.viewer` (no closures): the store, the jobs, the
templates and the token; a route asks for it with a `ViewerDep` parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from counterfact.store import TraceStore
from counterfact.ui._jobs import Jobs


@dataclass(frozen=True)
class Viewer:
    store: TraceStore
    jobs: Jobs
    templates: Jinja2Templates
    token: str


async def get_viewer(request: Request) -> Viewer:
    viewer: Viewer = request.app.state.viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
