"""Tool results against their history: a tool that returns, for the same arguments, something
other than it returned in the store's other runs (or raises where it used to answer) is a
suspect, and its usual result is the fix to try. This finds what re-execution cannot place: a
tool that went wrong for good (a regression, a bug on some inputs) gives the same wrong answer
every time it runs again, but not the answer it gave before.

The comparison is with original runs only (a replay may reuse the recorded result), with runs
of the same input where there are any (a tool that serves each task its own data answers the
same arguments differently from task to task), with runs that succeeded where there are any,
and only where they all agree: a tool whose answer varies from run to run has no usual result."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from counterfact.interventions._fixes import Fix
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.tool import ToolEdit
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import ToolPrecedent, excerpt


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def usual_result(precedents: Sequence[ToolPrecedent], same_input: dict[str, Any]) -> ToolPrecedent | None:
    """The precedent whose result the tool always gave for these arguments (see the module
    docstring for which runs count), or None when there is none or they disagree."""
    same = [p for p in precedents if same_input and all(str(p.run_labels.get(k)) == str(v) for k, v in same_input.items())]
    answered = [p for p in same or precedents if p.error is None]
    pool = [p for p in answered if p.run_status == "succeeded"] or answered
    if not pool or any(not _same(p.result, pool[0].result) for p in pool[1:]):
        return None
    return pool[0]


class HistoryStrategy:
    name = "history"

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        run = context.replayer.parent
        same_input = context.replayer.target.same_input
        proposed = 0
        for step in context.steps:
            for call in step.tool_calls:
                if call.handoff or proposed >= context.max_hypotheses:
                    continue  # a handoff's result is routing, not an answer
                usual = usual_result(context.store.tool_precedents(call.name, call.arguments, excluding=run.id),
                                     same_input)
                if usual is None or (call.error is None and _same(call.result, usual.result)):
                    continue
                here = f"raised {excerpt(call.error, 80)!r}" if call.error else f"returned {excerpt(call.result, 80)!r}"
                called = f"{call.name}({excerpt(call.arguments, 80)})"
                edit = ToolEdit(at=StepRef(step=step.index), tool=call.name, arguments=call.arguments, result=usual.result)
                fix = Fix(label="the tool's usual result", strategy=self.name, source="reference", reference=usual.run_id,
                          intervention=Intervention(edits=[edit], note=f"{called} as in run {usual.run_id}").dump())
                proposed += 1
                yield Proposal(
                    step=step.index or 0, fixes=[fix], reference=usual.run_id,
                    reason=f"{called} {here}; in run {usual.run_id[:12]} ({usual.run_status}) the same call returned "
                           f"{excerpt(usual.result, 80)!r}",
                    evidence={"tool": call.name, "arguments": call.arguments, "result": call.result,
                              "error": call.error, "usual": usual.result, "precedent": usual.run_id},
                )
        if not proposed:
            yield Skipped(note="no tool call answered otherwise than the same call in the store's other runs")
