"""A debug session as a report: its hypotheses with their fixes and verdicts, read from the
store alone (no graph, no model), so the CLI, the viewer and a resumed session all show the
same thing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from counterfact.graphs import question_of
from counterfact.interventions._fixes import Fix
from counterfact.interventions._records import DebugLog, DebugSpend
from counterfact.store import StepRecord, Store, output_text

# After a validated transplant on a local model: which layers carry the repair. An analysis of
# a validated hypothesis, not a failure hypothesis of its own: reports count it apart.
LAYER_SCAN = "patch-layers"


class Budget(BaseModel):
    replays: int = Field(default=24, ge=1)
    tokens: int | None = Field(default=None, ge=1)


class Segment(BaseModel):
    """A stretch of a run between planning steps: what one hypothesis prompt shows."""

    index: int
    first_step: int
    last_step: int


class HypothesisView(BaseModel):
    """A hypothesis with its verdict and its fixes, as the report shows it."""

    id: str
    strategy: str
    proposed_by: list[str] = Field(default_factory=list)
    segment: int
    step: int | None
    agent: str | None
    reason: str
    intervention: dict[str, Any] | None
    status: str
    note: str = ""
    reference_run_id: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    fixes: list[Fix] = Field(default_factory=list)
    verdict: str | None = None
    verdict_reason: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.verdict in ("validated", "refuted")

    @property
    def is_layer_scan(self) -> bool:
        return self.strategy == LAYER_SCAN or any(f.label.startswith("layer ") for f in self.fixes)


class DebugReport(BaseModel):
    session_id: str
    run_id: str
    question: str
    answer: str | None
    expected: str | None
    strategies: list[str]
    segments: list[Segment]
    hypotheses: list[HypothesisView]
    spent: DebugSpend
    status: str
    notes: list[str] = Field(default_factory=list)  # what each strategy found or why not


def split_segments(steps: list[StepRecord]) -> list[Segment]:
    """Segments start at each planning step (the first one also takes what came before it)."""
    starts = [s.index or 0 for s in steps if s.kind == "plan"] or [0]
    starts[0] = 0
    ends = [*[s - 1 for s in starts[1:]], len(steps) - 1]
    return [Segment(index=i, first_step=a, last_step=b) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]


def session_report(
    store: Store,
    session_id: str,
    *,
    question: str | None = None,
    expected: str | None = None,
    steps: list[StepRecord] | None = None,
) -> DebugReport:
    """The report of a stored debug session, read from the store alone (no graph, no model):
    what `counterfact ui` shows. The id may be a unique prefix; the question defaults to the
    run's task input."""
    log = DebugLog(store)
    session = log.get_session(log.resolve_session_id(session_id))
    run = store.get_run(session.run_id)
    verdicts = {v.id: v for v in store.verdicts(run_id=run.id)}
    views, notes = [], []
    for h in log.hypotheses(session.id):
        if h.step is None:
            notes.append(f"{h.strategy}: {h.note}")
            continue
        verdict = verdicts.get(h.verdict_id) if h.verdict_id else None
        views.append(
            HypothesisView(
                id=h.id, strategy=h.strategy, proposed_by=h.evidence.get("proposed_by", [h.strategy]),
                segment=h.segment, step=h.step, agent=h.agent,
                reason=h.reason, intervention=h.intervention, status=h.status, note=h.note,
                reference_run_id=h.reference_run_id,
                evidence={k: v for k, v in h.evidence.items() if k not in ("fixes", "proposed_by")},
                fixes=[Fix.model_validate(f) for f in h.evidence.get("fixes", [])],
                verdict=verdict.verdict if verdict else None,
                verdict_reason=verdict.reason if verdict else "",
                stats=dict(verdict.stats) if verdict else {},
            )
        )
    return DebugReport(
        session_id=session.id,
        run_id=run.id,
        question=question if question is not None else question_of(run.task_input),
        answer=run.outcome.detail if run.outcome else None,
        expected=expected,
        strategies=list(session.strategies),
        segments=split_segments(steps if steps is not None else store.steps(run.id, payloads=False)),
        hypotheses=sorted(views, key=rank),
        spent=session.spent,
        status=session.status,
        notes=notes,
    )


def rank(h: HypothesisView) -> tuple[int, bool, float]:
    """Validated first (largest effect first), then undecided, refuted; within each, steps
    placed by replays before those read from the log."""
    order = {"validated": 0, "refuted": 2}.get(h.verdict or "", 1)
    effect = float(h.stats.get("comparison", {}).get("difference", 0.0)) if h.stats else 0.0
    return order, not h.evidence.get("placed_by_replay", False), -effect


def final_answer(steps: list[StepRecord]) -> str | None:
    """The run's final answer as its steps wrote it (never the expected one): a workflow's
    `final_answer`, else what the last step said."""
    for step in reversed(steps):
        if isinstance(step.delta, dict) and step.delta.get("final_answer"):
            return str(step.delta["final_answer"])
    return output_text(steps[-1].output) or None if steps else None
