"""Localization by re-execution: a transient fault (a tool that erred or lied once, a model reply
corrupted once) vanishes when the step it struck runs again, and stays when it is in what the
replay starts from. Replays from a step with nothing edited (models called again; tools run
again only where the app declares them safe to repeat) succeed from every step up to the faulty
one and fail after it, so a bisection finds that step in about log2(steps) replays. A run that
still fails when re-executed from its first step has a persistent fault: this strategy leaves
it to the others."""

from __future__ import annotations

from collections.abc import Iterator

from counterfact.interventions._fix_verify import PROBE_RUNS
from counterfact.interventions._fixes import Fix
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.message import MessageEdit
from counterfact.interventions.edits.response import ResponseEdit
from counterfact.interventions.edits.state import StateEdit
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import output_text, state_at


class RerunStrategy:
    name = "rerun"

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        n = len(context.steps)
        probes: dict[int, tuple[str, bool]] = {}

        def clears(step: int) -> bool:
            if step not in probes:
                probes[step] = context.rerun_from(step)
            return probes[step][1]

        if not context.afford(1):
            yield Skipped(note="budget exhausted before any re-execution")
            return
        if not clears(0):
            yield Skipped(note="re-executed from step 0 the run still fails: the fault persists (in the app, "
                               "or in results replayed as recorded), so re-execution cannot place it")
            return
        low, high = 0, n  # re-executing from `low` clears the failure; from `high` on, assume it does not
        while high - low > 1 and context.afford(1):
            mid = (low + high) // 2
            if clears(mid):
                low = mid
            else:
                high = mid
        trail = ", ".join(f"step {s}: {'succeeds' if ok else 'fails'}" for s, (_, ok) in sorted(probes.items()))
        placed = "" if high - low == 1 else f" (the budget ran out with steps {low}..{high - 1} left)"
        rerun_id = probes[low][0]
        yield Proposal(
            step=low,
            reason=f"transient fault: re-executed from step {low} the run succeeds, from step {high} it "
                   f"fails{placed} ({trail})",
            fixes=_fixes(context, low, rerun_id),
            evidence={"rerun": rerun_id, "probes": {str(s): ok for s, (_, ok) in probes.items()},
                      PROBE_RUNS: {str(s): run for s, (run, _) in probes.items()}},
            placed_by_replay=True,
        )


def _fixes(context: DebugContext, step: int, rerun_id: str) -> list[Fix]:
    """The step as it came out when re-executed: the state it left (every channel it changed,
    read by the step after it), else the replies its model calls got (the step itself runs
    again, with its tools and its routing), else its last message."""
    rerun = context.store.steps(rerun_id)
    note = f"rerun {rerun_id}"
    fixes = []
    if step + 1 < min(len(context.steps), len(rerun)):
        after = state_at(context.store, rerun_id, rerun[step + 1].checkpoint_before)
        recorded = state_at(context.store, context.replayer.parent.id, context.steps[step + 1].checkpoint_before)
        if after is not None and recorded is not None:
            patch = [{"op": "replace", "path": f"/{k}", "value": v} for k, v in sorted(after.items())
                     if k in recorded and recorded[k] != v]
            if patch:
                edit = StateEdit(at=StepRef(step=step + 1), patch=patch)
                fixes.append(Fix(label="the state the step left when re-executed", strategy="rerun", source="agent",
                                 intervention=Intervention(edits=[edit], note=note).dump()))
    calls = sorted(rerun[step].model_calls, key=lambda c: c.offset_ms or 0)
    if calls:  # the node runs for real (its tools, its routing) on the replies it got when re-executed
        replies = [ResponseEdit(at=StepRef(step=step), call=i, text=str(c.response.get("content") or ""),
                                tool_calls=list(c.response.get("tool_calls") or [])) for i, c in enumerate(calls)]
        fixes.append(Fix(label="the step's model replies when re-executed", strategy="rerun", source="agent",
                         intervention=Intervention(edits=replies, note=note).dump()))
    message = MessageEdit(at=StepRef(step=step), text=output_text(rerun[step].output))
    fixes.append(Fix(label="the step's message when re-executed", strategy="rerun", source="agent",
                     intervention=Intervention(edits=[message], note=note).dump()))
    return fixes
