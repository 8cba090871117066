"""Jobs: starting a replay or a debug session of a run, listing jobs, and a job's progress as
server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from counterfact._files import parse_yaml
from counterfact.interventions import InterventionError
from counterfact.ui._jobs import DebugRequest, Jobs, ReplayRequest
from counterfact.ui._routes.state import ViewerDep

router = APIRouter()


@router.post("/api/runs/{run_id}/replays", status_code=202)
def api_replay(ui: ViewerDep, run_id: str, request: ReplayRequest) -> Any:
    if isinstance(request.edit, str):
        request.edit = parse_yaml(request.edit, "edit", InterventionError)
    return ui.jobs.start_replay(run_id, request).model_dump(mode="json")


@router.post("/api/runs/{run_id}/debug", status_code=202)
def api_start_debug(ui: ViewerDep, run_id: str, request: DebugRequest) -> Any:
    return ui.jobs.start_debug(run_id, request).model_dump(mode="json")


@router.get("/api/jobs")
def api_jobs(ui: ViewerDep, run: str | None = None) -> Any:
    return [j.model_dump(mode="json") for j in ui.jobs.list() if run is None or j.run_id == run]


@router.get("/api/jobs/{job_id}")
def api_job(ui: ViewerDep, job_id: str) -> Any:
    return _job(ui.jobs, job_id).model_dump(mode="json")


@router.get("/api/jobs/{job_id}/events")
async def api_job_events(ui: ViewerDep, job_id: str) -> StreamingResponse:
    jobs = ui.jobs
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


def _job(jobs: Jobs, job_id: str) -> Any:
    try:
        return jobs.get(job_id)
    except KeyError:
        raise HTTPException(404, f"no job {job_id!r}") from None
