"""What the MCP server offers, as plain methods over one store: each calls the library function
the CLI calls for the same job and shapes its answer into a page a model context can hold.

Nothing here decides anything the library does not: a debug session is the `Debugger`'s, run
in a thread of the server so the call returns at once with the session's id; its report is read
from the store (`session_report`), as `counterfact ui` reads it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.graphs import CheckerName, ExpectCheck, question_of
from counterfact.interventions import (
    METHODS,
    AttributionScore,
    Budget,
    Debugger,
    Method,
    Replayer,
    StepDiff,
    attribute,
    diff_runs,
    parse_intervention,
    score_attributions,
    session_report,
    strategies_from,
    strategy_names,
    verify,
)
from counterfact.mcp._pages import (
    TextPage,
    clip,
    parse_run_cursor,
    run_cursor,
    text_page,
)
from counterfact.store import RunStatus, StepRecord, TraceStore

MAX_ITEMS = 100  # most items of one page of a list


class RunBrief(BaseModel):
    """A run as a list shows it."""

    id: str
    workflow: str
    status: str
    success: bool | None  # its check's verdict (None: not scored)
    question: str
    steps: int
    tokens: int
    created_at: datetime
    source: str
    parent_run_id: str | None = None


class RunsPage(BaseModel):
    runs: list[RunBrief]
    next_cursor: str | None  # pass as `cursor` for the next (older) page


class StepBrief(BaseModel):
    """A step as a run's overview shows it; `show_step` gives all of it."""

    index: int
    node: str
    agent: str | None
    kind: str
    output: Any  # clipped
    error: str | None
    model_calls: int
    tool_calls: list[str]
    tokens: int


class RunView(BaseModel):
    run: dict[str, Any]  # the run record, long texts clipped
    steps: list[StepBrief]
    total_steps: int
    next_offset: int | None  # pass as `offset` for the next steps


class DiffPage(BaseModel):
    rows: list[StepDiff]
    total: int
    next_offset: int | None


class DebugStarted(BaseModel):
    session_id: str
    run_id: str
    status: str  # "running": read `debug_report` until it is "done"


class AttributionResult(BaseModel):
    run_id: str
    agent: str | None
    step: int | None
    reason: str | None
    errors: list[str] = Field(default_factory=list)


class Attributions(BaseModel):
    attributions: list[AttributionResult]
    score: AttributionScore  # against the runs' labelled mistakes, where they have them


def _brief(step: StepRecord) -> StepBrief:
    return StepBrief(
        index=step.index or 0, node=step.node, agent=step.agent, kind=step.kind, output=clip(step.output),
        error=step.error, model_calls=len(step.model_calls), tool_calls=[c.name for c in step.tool_calls],
        tokens=sum(c.prompt_tokens + c.completion_tokens for c in step.model_calls),
    )


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_ITEMS:
        raise CounterfactError(f"limit must be between 1 and {MAX_ITEMS}, not {limit}")
    return limit


class Tools:
    """The server's tools over one store (one instance per server process)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._failed: dict[str, str] = {}  # debug sessions whose thread stopped on an error, and why

    def list_runs(
        self, text: str | None = None, status: RunStatus | None = None, workflow: str | None = None,
        agent: str | None = None, labels: dict[str, str] | None = None, cursor: str | None = None, limit: int = 20,
    ) -> RunsPage:
        runs = self.store.list_runs(
            text=text, status=status, workflow=workflow, agent=agent, labels=labels,
            before=parse_run_cursor(cursor) if cursor else None, limit=_page_size(limit) + 1,
        )
        page = runs[:limit]
        briefs = [
            RunBrief(id=r.id, workflow=r.workflow, status=r.status, success=r.outcome.success if r.outcome else None,
                     question=clip(question_of(r.task_input), 200), steps=r.step_count, tokens=r.total_tokens,
                     created_at=r.created_at, source=r.source, parent_run_id=r.parent_run_id)
            for r in page
        ]
        more = len(runs) > limit
        return RunsPage(runs=briefs, next_cursor=run_cursor(page[-1].created_at, page[-1].id) if more else None)

    def show_run(self, run_id: str, offset: int = 0, limit: int = 20) -> RunView:
        run = self.store.get_run(run_id)
        total = run.step_count
        indices = list(range(max(offset, 0), min(offset + _page_size(limit), total)))
        steps = self.store.steps(run.id, histories=False, indices=indices) if indices else []
        end = offset + limit
        return RunView(run=clip(run.model_dump(mode="json")), steps=[_brief(s) for s in steps], total_steps=total,
                       next_offset=end if end < total else None)

    def show_step(self, run_id: str, index: int, offset: int = 0) -> TextPage:
        run_id = self.store.resolve_run_id(run_id)
        found = self.store.steps(run_id, indices=[index])
        if not found:
            raise CounterfactError(f"run {run_id[:12]} has no step {index}")
        return text_page(found[0].model_dump(mode="json"), offset)

    def diff_runs(self, run_a: str, run_b: str, offset: int = 0, limit: int = 50) -> DiffPage:
        rows = diff_runs(self.store, self.store.resolve_run_id(run_a), self.store.resolve_run_id(run_b))
        end = offset + _page_size(limit)
        return DiffPage(rows=rows[offset:end], total=len(rows), next_offset=end if end < len(rows) else None)

    def _replayer(
        self, run_id: str, *, model: str | None, graph: str | None, check: str | None, expect: str | None,
        checker: CheckerName, answer: str, force: bool,
    ) -> Replayer:
        if check is not None and expect is not None:
            raise CounterfactError("give check or expect, not both")
        given = ExpectCheck(expect=expect, checker=checker.value, answer=answer) if expect is not None else check
        return Replayer(self.store, run_id, model=model, graph=graph, check=given, force=force)

    def replay(
        self, run_id: str, at: str | None = None, edit: Any = None, pairs: int = 1, seed: int = 0,
        temperature: float | None = None, model: str | None = None, graph: str | None = None,
        check: str | None = None, expect: str | None = None, checker: CheckerName = CheckerName.normalized,
        answer: str = "messages.-1.content", force: bool = False,
    ) -> dict[str, Any]:
        intervention = parse_intervention(edit) if edit is not None else None  # a bad edit before any replay
        replayer = self._replayer(run_id, model=model, graph=graph, check=check, expect=expect, checker=checker,
                                  answer=answer, force=force)
        plan = replayer.compile(intervention, at)
        if intervention is None:
            result = replayer.replay(plan, arm="control", seed=seed, temperature=temperature)
            return clip(result.model_dump(mode="json"))
        report = verify(replayer, plan, pairs=pairs, seed=seed, temperature=temperature)
        return clip(report.model_dump(mode="json"))

    def start_debug(
        self, run_id: str, strategies: list[str] | None = None, budget: int = 24, pairs: int = 6, samples: int = 3,
        hypothesis_model: str | None = None, model: str | None = None, graph: str | None = None,
        check: str | None = None, expect: str | None = None, checker: CheckerName = CheckerName.normalized,
        answer: str = "messages.-1.content", force: bool = False, until_repaired: bool = False,
    ) -> DebugStarted:
        debugger = Debugger(
            self._replayer(run_id, model=model, graph=graph, check=check, expect=expect, checker=checker,
                           answer=answer, force=force),
            strategies=strategies_from(strategies or list(strategy_names())), budget=Budget(replays=budget),
            pairs=pairs, samples=samples, hypothesis_model=hypothesis_model, until_repaired=until_repaired,
        )
        session_id = debugger.open_session()  # stored now: its report can be read at once
        threading.Thread(target=self._debug, args=(debugger,), name=f"debug-{session_id[:12]}", daemon=True).start()
        return DebugStarted(session_id=session_id, run_id=debugger.replayer.parent.id, status="running")

    def _debug(self, debugger: Debugger) -> None:
        try:
            debugger.run()  # resumes the session just opened
        except Exception as exc:  # the session stays unfinished (`counterfact debug --resume` finishes it)
            self._failed[debugger.session_id] = f"{type(exc).__name__}: {exc}"

    def debug_report(self, session_id: str, offset: int = 0) -> TextPage:
        report = session_report(self.store, session_id)
        if report.session_id in self._failed:
            raise CounterfactError(f"debug session {report.session_id[:12]} stopped: {self._failed[report.session_id]}")
        return text_page(report.model_dump(mode="json"), offset)

    def attribute(
        self, run_ids: list[str], method: str = "all_at_once", model: str = "embedded",
        max_prompt_tokens: int | None = None,
    ) -> Attributions:
        if method not in METHODS:
            raise CounterfactError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")
        chosen: Method = method  # type: ignore[assignment]  # checked against METHODS above
        ids = [self.store.resolve_run_id(r) for r in run_ids]
        made = attribute(self.store, ids, model, chosen, max_prompt_tokens=max_prompt_tokens)
        return Attributions(
            attributions=[AttributionResult(run_id=a.run_id, agent=a.agent, step=a.step, reason=a.reason, errors=a.errors)
                          for a in made],
            score=score_attributions(self.store, ids, chosen),
        )
