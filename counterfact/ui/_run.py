"""One run's page: its graph, the timeline of its steps, its outcome, audit and attributions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from counterfact.interventions import DebugLog
from counterfact.store import (
    ChainReport,
    RunRecord,
    StepRecord,
    TraceStore,
    VerdictRecord,
    excerpt,
    verify_run,
)
from counterfact.ui._graph import GraphView, graph_view
from counterfact.ui._lists import (
    HIDDEN_LABELS,
    AttributionView,
    RunRow,
    attributions_of,
    ground_truth,
    run_row,
)


class TimelineStep(BaseModel):
    index: int
    node: str
    agent: str | None
    kind: str
    invocation: int
    offset_ms: float
    duration_ms: float
    tokens: int
    models: list[str]
    tool_calls: list[str]
    error: str | None
    summary: str


class TimelineRow(BaseModel):
    """One row of the timeline: a step, or the steps of one parallel superstep drawn as one."""

    steps: list[TimelineStep]
    parallel: bool


def timeline(steps: list[StepRecord]) -> tuple[list[TimelineRow], float]:
    """Rows in step order (steps resumed from the same checkpoint are one parallel row), and
    the run's span in milliseconds, to scale the bars."""
    if not steps:
        return [], 0.0
    start = min(s.started_at for s in steps)
    end = max(s.ended_at for s in steps)
    rows: list[TimelineRow] = []
    row_checkpoint: str | None = None  # the checkpoint the last row's steps resumed from
    for step in steps:
        item = TimelineStep(
            index=step.index or 0, node=step.node, agent=step.agent, kind=step.kind,
            invocation=step.invocation,
            offset_ms=(step.started_at - start).total_seconds() * 1000,
            duration_ms=(step.ended_at - step.started_at).total_seconds() * 1000,
            tokens=sum(c.prompt_tokens + c.completion_tokens for c in step.model_calls),
            models=sorted({c.model for c in step.model_calls}),
            tool_calls=[c.name for c in step.tool_calls],
            error=step.error,
            summary=excerpt(step.output, 140) if step.output is not None else (step.error or ""),
        )
        if rows and step.checkpoint_before is not None and step.checkpoint_before == row_checkpoint:
            rows[-1].steps.append(item)
            rows[-1].parallel = True
        else:
            rows.append(TimelineRow(steps=[item], parallel=False))
            row_checkpoint = step.checkpoint_before
    return rows, max((end - start).total_seconds() * 1000, 1.0)


class RunPage(BaseModel):
    run: RunRecord
    row: RunRow
    labels: dict[str, Any]
    graph: GraphView | None
    timeline: list[TimelineRow]
    span_ms: float
    chain: ChainReport
    replays: int
    verdicts: list[VerdictRecord]
    debug_sessions: list[dict[str, Any]]
    attributions: list[AttributionView]
    truth: dict[str, Any]


def run_page(store: TraceStore, run_ref: str) -> RunPage:
    run = store.get_run(run_ref)
    steps = store.steps(run.id, histories=False)
    rows, span = timeline(steps)
    labels = {k: v for k, v in run.labels.items() if k not in HIDDEN_LABELS}
    return RunPage(
        run=run, row=run_row(run), labels=labels, graph=graph_view(run, steps), timeline=rows,
        span_ms=span, chain=verify_run(store, run.id),
        replays=len(store.list_runs(parent=run.id, limit=None)),
        verdicts=store.verdicts(run_id=run.id),
        debug_sessions=[s.model_dump(mode="json") for s in DebugLog(store).sessions(run.id)],
        attributions=attributions_of(run),
        truth=ground_truth(run),
    )
