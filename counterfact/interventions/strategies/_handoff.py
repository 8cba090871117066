"""Handoff hypotheses: in a multi-agent run, control went to the wrong agent, too early, or
not at all. Each is tested by the edits that would undo it: the same handoff to each other
agent, the handoff not made (the agent goes on), or, where the run ended without one, a handoff
to each other agent at its last step. No model is asked: the run's own handoffs say where to
look, which makes this the cheapest strategy for the failure most particular to these apps."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from counterfact._errors import CounterfactError
from counterfact.interventions._fixes import Fix
from counterfact.interventions._replay import Replayer
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.handoff import HandoffEdit
from counterfact.interventions.edits.route import RouteEdit
from counterfact.interventions.strategies._base import DebugContext, Outcome, Proposal
from counterfact.store import StepRecord, step_handoffs

STRATEGY = "handoff"


class HandoffStrategy:
    """The run's own handoffs say where to look; a run without handoffs has no hypothesis and
    says nothing (most runs are not multi-agent ones)."""

    name = STRATEGY

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        for suspect in handoff_suspects(context.replayer, context.steps)[: context.max_hypotheses]:
            yield Proposal(step=suspect.step, reason=suspect.reason, fixes=suspect.fixes)


class HandoffSuspect(BaseModel):
    """A step whose handoff (or lack of one) may have sent the run astray, and its fixes."""

    step: int
    reason: str
    fixes: list[Fix]


def handoff_suspects(replayer: Replayer, steps: list[StepRecord]) -> list[HandoffSuspect]:
    """Every handoff of the run, earliest first (a later wrong handoff is often the first
    one's consequence), then the last step if it ended the run without handing off."""
    agents = _agents(replayer, steps)
    suspects: list[HandoffSuspect] = []
    for step in steps:
        own = [e for e in step_handoffs(step) if not e.nested]
        if not own:
            continue
        made = own[-1]
        at = StepRef(step=step.index)
        fixes = [_fix(f"hand off to {other}", HandoffEdit(at=at, to=other))
                 for other in agents if other not in (made.to, made.source)]
        fixes.append(_fix("keep control", HandoffEdit(at=at, to=None)))
        reason = f"{made.source} handed off to {made.to} at step {step.index}: the wrong agent, or too early"
        suspects.append(HandoffSuspect(step=step.index or 0, reason=reason, fixes=_compiling(replayer, fixes)))
    last = steps[-1] if steps else None
    if suspects and last is not None and not step_handoffs(last):
        at = StepRef(step=last.index)
        fixes = [_fix(f"hand off to {other}", RouteEdit(at=at, next=other))
                 for other in agents if other != last.node]
        reason = f"{last.agent or last.node} ended the run at step {last.index} without handing off"
        suspects.append(HandoffSuspect(step=last.index or 0, reason=reason, fixes=_compiling(replayer, fixes)))
    return [s for s in suspects if s.fixes]


def _agents(replayer: Replayer, steps: list[StepRecord]) -> list[str]:
    """The agents control can go to: the graph's nodes, those that ran first."""
    names = [s.node for s in steps] + list(replayer.graph.builder.nodes)
    return list(dict.fromkeys(n for n in names if not n.startswith("__")))


def _fix(label: str, edit: HandoffEdit | RouteEdit) -> Fix:
    return Fix(label=label, strategy=STRATEGY, source="hypothesis",
               intervention=Intervention(edits=[edit], note=STRATEGY).dump())


def _compiling(replayer: Replayer, fixes: list[Fix]) -> list[Fix]:
    """The fixes this run can take (a route needs a conditional edge or a Command to change)."""
    kept = []
    for fix in fixes:
        try:
            replayer.compile(Intervention.model_validate(fix.intervention), None)
        except CounterfactError:
            continue
        kept.append(fix)
    return kept
