"""A run against the store's earlier runs: what re-execution cannot place, a fault in the app
that is there for good (a regression, a bug on some inputs, a changed prompt), shows as a
difference from the runs made before it, and what those runs had is the fix to try.

- Tool results: a tool that returns, for the same arguments, other than it returned in the
  other runs (or raises where it used to answer); the fix is its usual result. The comparison
  is with original runs only (a replay may reuse the recorded result), with runs of the same
  input where there are any (a tool that serves each task its own data answers the same
  arguments differently from task to task), with runs that succeeded where there are any, and
  only where they all agree: a tool whose answer varies from run to run has no usual result.
- Instructions: an agent whose system message differs from the one it had in the newest
  successful run of the same input; the fix is the earlier instructions, from that step on.
  Only runs of the same input count, since instructions may quote the task.
- Routes: the first step after which the run went to another node than that successful run
  did (a routing function with a wrong branch, a handoff wired to the wrong agent); the fix
  is that run's route at that step, and then, for a wrong branch taken again later, that
  route wherever the route out of the node went the same wrong way from that step on. A route
  that went elsewhere because of an earlier wrong answer is refuted by its replay, as the
  answer is still wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langgraph.graph import END

from counterfact._errors import CounterfactError
from counterfact.interventions._fixes import Fix
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.prompt import PromptEdit
from counterfact.interventions.edits.route import RouteEdit
from counterfact.interventions.edits.tool import ToolEdit
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import RunRecord, StepRecord, ToolPrecedent, excerpt


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
        earlier = _earlier_success(context)
        for proposal in [*_instruction_changes(context, earlier), *_route_changes(context, earlier)]:
            if proposed < context.max_hypotheses:
                proposed += 1
                yield proposal
        if not proposed:
            yield Skipped(note="no tool call answered otherwise than the same call in the store's other runs, "
                               "and no agent's instructions or routes changed since the last successful run of "
                               "this input")


def _instructions(steps: Sequence[StepRecord]) -> dict[str, list[tuple[int, str]]]:
    """Each agent's system messages, in the order its steps sent them: agent -> (step, text)."""
    sent: dict[str, list[tuple[int, str]]] = {}
    for step in steps:
        for call in step.model_calls:
            for message in call.request:
                if message.get("role") == "system" and message.get("content"):
                    sent.setdefault(call.agent or step.agent or step.node, []).append((step.index or 0, str(message["content"])))
    return sent


def _earlier_success(context: DebugContext) -> RunRecord | None:
    """The newest original run of the same input that succeeded (None without a known input:
    instructions and routes may depend on the task)."""
    run = context.replayer.parent
    same_input = context.replayer.target.same_input
    if not same_input:
        return None
    return next((r for r in context.store.list_runs(status="succeeded", labels=same_input, limit=20)
                 if r.parent_run_id is None and r.id != run.id), None)


def _route_changes(context: DebugContext, earlier: RunRecord | None) -> Iterator[Proposal]:
    """The first step after which this run went elsewhere than the earlier successful run."""
    if earlier is None:
        return
    mine, theirs = [s.node for s in context.steps], [s.node for s in context.store.steps(earlier.id)]
    split = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs)))
    if split == 0 or split == len(mine) == len(theirs):
        return  # the first node differs (no step routed to it), or the routes are the same
    at = context.steps[split - 1]
    went, usual = (mine[split] if split < len(mine) else END), (theirs[split] if split < len(theirs) else END)
    where = StepRef(step=at.index)
    fixes = [  # that step's route; then a fix to the routing function, for a wrong branch taken again later
        (f"the route of run {earlier.id[:12]}", RouteEdit(at=where, next=usual)),
        (f"every route out of {at.node} to {went} goes to {usual}", RouteEdit(at=where, next=usual, instead_of=went)),
    ]
    try:
        context.replayer.compile(Intervention(edits=[fixes[0][1]]), None)
    except CounterfactError:
        return  # the step's successors are fixed: what differs is not its route
    tried = [Fix(label=label, strategy="history", source="reference", reference=earlier.id,
                 intervention=Intervention(edits=[edit], note=f"the route out of {at.node} as in run {earlier.id}").dump())
             for label, edit in fixes]
    yield Proposal(
        step=at.index or 0, fixes=tried, reference=earlier.id,
        reason=f"after step {at.index} ({at.node}) the run went to {went}; successful run {earlier.id[:12]} of the "
               f"same input went to {usual}",
        evidence={"node": at.node, "went": went, "usual": usual, "precedent": earlier.id},
    )


def _instruction_changes(context: DebugContext, earlier: RunRecord | None) -> Iterator[Proposal]:
    if earlier is None:
        return
    theirs = _instructions(context.store.steps(earlier.id))
    for agent, sent in _instructions(context.steps).items():
        before = {text for _, text in theirs.get(agent, [])}
        if len(before) != 1:
            continue  # the agent did not run then, or its instructions varied within the run
        [usual] = before
        changed = next(((step, text) for step, text in sent if text != usual), None)
        if changed is None:
            continue
        step, text = changed
        old, new = _changed_span(usual, text)
        edit = PromptEdit(at=StepRef(step=step), old=old, new=new)
        fix = Fix(label="the agent's earlier instructions", strategy="history", source="reference", reference=earlier.id,
                  intervention=Intervention(edits=[edit], note=f"{agent}'s instructions as in run {earlier.id}").dump())
        yield Proposal(
            step=step, fixes=[fix], reference=earlier.id,
            reason=f"{agent}'s instructions differ from those of successful run {earlier.id[:12]} of the same input: "
                   f"{_difference(usual, text)}",
            evidence={"agent": agent, "instructions": text, "usual": usual, "precedent": earlier.id},
        )


def _changed_span(before: str, now: str) -> tuple[str, str]:
    """The part of `now` that differs from `before` and what stood there before, trimmed of
    their common start and end, so that a prompt edit changes that part wherever the app keeps
    it (an agent's instructions, a tool's description); the whole texts where that part is
    empty or not unique in `now`."""
    start = next((i for i, (a, b) in enumerate(zip(before, now, strict=False)) if a != b), min(len(before), len(now)))
    end = 0
    while end < min(len(before), len(now)) - start and before[-1 - end] == now[-1 - end]:
        end += 1

    def inside_word(left: str, texts: tuple[str, ...], at: int) -> bool:
        return left.isalnum() and any(-len(t) <= at < len(t) and t[at].isalnum() for t in texts)

    while start > 0 and inside_word(now[start - 1], (now, before), start):  # whole words, not "tow" for "town"
        start -= 1
    while end > 0 and inside_word(now[-end], (now[: len(now) - end], before[: len(before) - end]), -1):
        end -= 1
    old, new = now[start:len(now) - end], before[start:len(before) - end]
    return (old, new) if old.strip() and now.count(old) == 1 else (now, before)


def _difference(before: str, now: str) -> str:
    """What changed between two texts, in a few words."""
    old, new = _changed_span(before, now)
    if old == now:
        return f"{excerpt(new, 60)!r} became {excerpt(old, 60)!r}" if new.strip() else f"added {excerpt(old, 80)!r}"
    if new.strip():
        return f"{excerpt(new, 60)!r} became {excerpt(old, 60)!r}"
    return f"added {excerpt(old, 80)!r}"
