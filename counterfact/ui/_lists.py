"""The lists of runs the viewer shows: all runs (filtered and paged), their audit, and
imported logs with their annotations and attributions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from counterfact.graphs import question_of
from counterfact.interventions import METHODS, AttributionScore, score_predictions
from counterfact.store import ChainReport, RunRecord, TraceStore, excerpt, verify_run

HIDDEN_LABELS = ("graph", "input_digest", "workflow_spec", "task", "attribution", "check", "mistake_agent",
                  "mistake_step", "mistake_reason", "ground_truth")


class RunRow(BaseModel):
    """One line of the runs list."""

    id: str
    workflow: str
    status: str
    success: bool | None
    score: float | None
    detail: str | None  # the checker's word on the outcome (the answer, and what was expected)
    created_at: datetime
    steps: int
    tokens: int
    task: str
    parent_run_id: str | None
    fork_step: int | None
    source: str
    arm: str | None = None


def run_row(run: RunRecord) -> RunRow:
    return RunRow(
        id=run.id, workflow=run.workflow, status=run.status,
        success=run.outcome.success if run.outcome else None,
        score=run.outcome.score if run.outcome else None,
        detail=run.outcome.detail if run.outcome else None,
        created_at=run.created_at, steps=run.step_count, tokens=run.total_tokens,
        task=excerpt(question_of(run.task_input) or run.task_input, 120) if run.task_input else "",
        parent_run_id=run.parent_run_id, fork_step=run.fork_step, source=run.source,
        arm=run.labels.get("arm"),
    )


class RunFilters(BaseModel):
    """The runs list's filters: the same as `counterfact runs list`, plus text and source."""

    status: str | None = None
    workflow: str | None = None
    agent: str | None = None
    label: list[str] = Field(default_factory=list)  # KEY=VALUE
    since: datetime | None = None
    text: str | None = None
    source: str | None = None

    def labels(self) -> dict[str, str]:
        pairs = {}
        for item in self.label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"label filter {item!r} is not KEY=VALUE")
            pairs[key] = value
        return pairs


class RunsPage(BaseModel):
    rows: list[RunRow]
    next_cursor: str | None  # the keyset cursor of the next (older) page


def runs_page(store: TraceStore, filters: RunFilters, *, cursor: str | None = None, limit: int = 50) -> RunsPage:
    """A page of the runs list, newest first; `cursor` continues after a previous page."""
    runs, next_cursor = _page(store, filters, cursor, limit)
    return RunsPage(rows=[run_row(r) for r in runs], next_cursor=next_cursor)


def _page(store: TraceStore, filters: RunFilters, cursor: str | None, limit: int) -> tuple[list[RunRecord], str | None]:
    """A page of runs as read (the pages build their rows from them) and the next cursor."""
    runs = store.list_runs(
        status=filters.status or None, workflow=filters.workflow or None, agent=filters.agent or None,
        labels=filters.labels(), since=filters.since, text=filters.text or None,
        source=filters.source or None, before=parse_cursor(cursor) if cursor else None, limit=limit + 1,
    )
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, f"{runs[-1].created_at.isoformat()}|{runs[-1].id}" if more and runs else None


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    stamp, sep, run_id = cursor.partition("|")
    try:
        if not sep:
            raise ValueError
        return datetime.fromisoformat(stamp), run_id
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is not TIME|RUN_ID") from None


class AuditRow(BaseModel):
    run: RunRow
    chain: ChainReport


class AuditPage(BaseModel):
    rows: list[AuditRow]
    next_cursor: str | None


def audit_page(store: TraceStore, filters: RunFilters, *, cursor: str | None = None, limit: int = 50) -> AuditPage:
    """A page of runs, each with its hash chain re-walked: verified, or the first broken step."""
    runs, next_cursor = _page(store, filters, cursor, limit)
    return AuditPage(rows=[AuditRow(run=run_row(r), chain=verify_run(store, r.id)) for r in runs],
                     next_cursor=next_cursor)


_TRUTH = ("mistake_agent", "mistake_step", "mistake_reason", "ground_truth")


def ground_truth(run: RunRecord) -> dict[str, Any]:
    """An imported log's annotation (who made the decisive mistake, at which step, why)."""
    return {k: run.labels[k] for k in _TRUTH if run.labels.get(k) is not None}


# -- imported logs ---------------------------------------------------------------------------


class AttributionView(BaseModel):
    """One method's stored prediction for an imported log, marked against its annotation by
    the library's own scoring rule."""

    method: str
    model: str | None
    agent: str | None
    step: int | None
    reason: str | None
    agent_ok: bool | None  # None: the log has no annotation to compare with
    step_ok: bool | None


class ImportRow(BaseModel):
    run: RunRow
    truth: dict[str, Any]
    attributions: list[AttributionView]


class ImportScore(BaseModel):
    """One method's accuracy on one workflow's logs that it attributed (by the library's
    scoring rule), and how many of that workflow's logs it has not attributed yet."""

    workflow: str
    score: AttributionScore
    not_attributed: int


class ImportsPage(BaseModel):
    rows: list[ImportRow]
    scores: list[ImportScore]  # per workflow and method, over every imported log of the filter
    next_cursor: str | None


def imports_page(store: TraceStore, *, workflow: str | None = None, source: str = "whowhen",
                 cursor: str | None = None, limit: int = 100) -> ImportsPage:
    runs, next_cursor = _page(store, RunFilters(source=source, workflow=workflow), cursor, limit)
    rows = [ImportRow(run=run_row(run), truth=ground_truth(run), attributions=attributions_of(run)) for run in runs]
    by_workflow: dict[str, list[RunRecord]] = {}
    for run in store.list_runs(source=source, workflow=workflow, limit=None):
        by_workflow.setdefault(run.workflow, []).append(run)
    scores = []
    for name, runs in sorted(by_workflow.items()):
        for method in METHODS:
            done = [r for r in runs if method in (r.labels.get("attribution") or {})]
            if done:
                scores.append(ImportScore(workflow=name, score=score_predictions(done, method),
                                          not_attributed=len(runs) - len(done)))
    return ImportsPage(rows=rows, scores=scores, next_cursor=next_cursor)


def attributions_of(run: RunRecord) -> list[AttributionView]:
    views = []
    for method, prediction in (run.labels.get("attribution") or {}).items():
        if method not in METHODS or not isinstance(prediction, dict):
            continue
        score = score_predictions([run], method)
        labelled = score.runs > 0
        views.append(AttributionView(
            method=method, model=prediction.get("model"), agent=prediction.get("agent"),
            step=prediction.get("step"), reason=prediction.get("reason"),
            agent_ok=bool(score.agent_correct) if labelled else None,
            step_ok=bool(score.step_correct) if score.step_runs else None,
        ))
    return views
