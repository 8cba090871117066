"""Work the viewer starts (a verified replay, a debug session), run in background threads
through the same library calls as the CLI, with progress a page can follow."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.graphs import ExpectCheck
from counterfact.interventions import (
    Budget,
    Debugger,
    Replayer,
    parse_intervention,
    strategy_names,
    verify,
)
from counterfact.store import TraceStore

JobKind = Literal["replay", "debug"]
JobStatus = Literal["queued", "running", "done", "failed"]


class ReplayRequest(BaseModel):
    """A verified replay: the edit (as an edit file holds it), where, and how many pairs of replays."""

    at: str
    edit: Any
    pairs: int = Field(default=1, ge=1, le=50)
    seed: int = 0
    model: str | None = None
    expect: str | None = None  # a check for runs recorded without one


class DebugRequest(BaseModel):
    strategies: list[str] = Field(default_factory=lambda: list(strategy_names()))
    budget: int = Field(default=24, ge=1, le=500)
    pairs: int = Field(default=6, ge=1, le=50)
    samples: int = Field(default=3, ge=1, le=20)
    model: str | None = None
    expect: str | None = None


class JobEvent(BaseModel):
    seq: int
    at: float
    kind: Literal["progress", "message", "done", "failed"]
    done: int | None = None
    total: int | None = None
    text: str = ""


class Job(BaseModel):
    id: str
    kind: JobKind
    run_id: str
    status: JobStatus = "queued"
    events: list[JobEvent] = Field(default_factory=list)
    result: dict[str, Any] | None = None  # a verdict report, or a debug session's summary
    error: str | None = None


class Jobs:
    """Background jobs, one at a time by default: replays on a local model share its engine,
    and two cores do not gain from running two sessions' replays side by side."""

    def __init__(self, store: TraceStore, *, workers: int = 1) -> None:
        self.store = store
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="counterfact-ui-job")

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(job_id)
            return self._jobs[job_id].model_copy(deep=True)

    def list(self) -> list[Job]:
        with self._lock:
            return [j.model_copy(deep=True) for j in self._jobs.values()]

    def wait(self, job_id: str, after: int, timeout: float) -> list[JobEvent]:
        """Events after sequence number `after`, waiting up to `timeout` s for one to come."""
        with self._lock:
            job = self._jobs[job_id]
            self._lock.wait_for(lambda: len(job.events) > after or job.status in ("done", "failed"), timeout)
            return [e.model_copy() for e in job.events[after:]]

    def start_replay(self, run_ref: str, request: ReplayRequest) -> Job:
        """Check the request now (a bad edit or step is an error for the caller, before any
        work), then verify it in the background."""
        intervention = parse_intervention(request.edit, source="edit")
        replayer = self._replayer(run_ref, request.model, request.expect)
        plan = replayer.compile(intervention, request.at)
        job = self._new("replay", replayer.parent.id)

        def work(progress: Callable[[int, int], None], _say: Callable[[str], None]) -> dict[str, Any]:
            report = verify(replayer, plan, pairs=request.pairs, seed=request.seed, on_progress=progress)
            return report.model_dump(mode="json")

        return self._submit(job, work)

    def start_debug(self, run_ref: str, request: DebugRequest) -> Job:
        """Check the request now (the debugger refuses unknown strategies, a run that did not
        fail or cannot be scored), then run the session in the background."""
        replayer = self._replayer(run_ref, request.model, request.expect)
        debugger = Debugger(
            replayer, strategies=request.strategies,
            budget=Budget(replays=request.budget), pairs=request.pairs, samples=request.samples,
        )
        job = self._new("debug", replayer.parent.id)

        def work(progress: Callable[[int, int], None], say: Callable[[str], None]) -> dict[str, Any]:
            debugger.on_progress = progress
            debugger.say = say
            report = debugger.run()
            return {"session_id": report.session_id, "status": report.status,
                    "hypotheses": len(report.hypotheses),
                    "validated": sum(h.verdict == "validated" for h in report.hypotheses)}

        return self._submit(job, work)

    def _replayer(self, run_ref: str, model: str | None, expect: str | None) -> Replayer:
        check = ExpectCheck(expect=expect) if expect else None
        return Replayer(self.store, run_ref, model=model or None, check=check)

    def _new(self, kind: JobKind, run_id: str) -> Job:
        job = Job(id=uuid.uuid4().hex[:16], kind=kind, run_id=run_id)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def _submit(self, job: Job, work: Callable[[Callable[[int, int], None], Callable[[str], None]], dict[str, Any]]) -> Job:
        def event(kind: Any, **fields: Any) -> None:
            with self._lock:
                target = self._jobs[job.id]
                target.events.append(JobEvent(seq=len(target.events) + 1, at=time.time(), kind=kind, **fields))
                self._lock.notify_all()

        def run() -> None:
            with self._lock:
                self._jobs[job.id].status = "running"
            try:
                result = work(lambda done, total: event("progress", done=done, total=total),
                              lambda text: event("message", text=text))
            except Exception as exc:  # noqa: BLE001 - the page shows it; the server goes on
                with self._lock:
                    self._jobs[job.id].status = "failed"
                    self._jobs[job.id].error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CounterfactError) else str(exc)
                event("failed", text=self._jobs[job.id].error or "")
                return
            with self._lock:
                self._jobs[job.id].status = "done"
                self._jobs[job.id].result = result
            event("done", text=result.get("verdict") or result.get("status") or "done")

        self._pool.submit(run)
        return self.get(job.id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
