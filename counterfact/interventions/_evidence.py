"""Evidence attribution: blame a failed run's agent and step from its log alone, no model.

What replay taught about where failures start, turned into signals a log shows by itself:
- the step's own text: hedges that mark an invented fact or value ("assume", "placeholder",
  "for demonstration", "I cannot access"), and numbers it introduces that neither the task nor
  any earlier step or tool result gives, when later steps of others repeat them (the claim the
  rest depends on);
- what builds on it: how many later steps of others reuse the words it brought into the run
  (the first step whose output the rest depends on weighs more than a step nobody took up);
- what it raised and what follows it before its author speaks again: a tool call it made or
  caused that errors or returns nothing, and remarks of other agents that say it went wrong
  (no progress, stuck, failed, irrelevant, incorrect);
- its role: a worker's step (kind "agent") does the task's work, a plan or routing step directs
  it; a step that restates the task is the task, not a decision; tool and input steps are never
  blamed (a tool's failure is charged to the step that called it); handoff announcements and
  termination markers are no decisions either;
- its place: the decisive mistake comes early in most failed runs, so each later worker step
  weighs a little less.

The agent is chosen first, as the one whose worker steps carry the run (their count) plus a
share of the evidence against it; then the step is that agent's best-scoring step, the earliest
on a tie. The weights are round numbers, a few values tried on the 52 Who&When logs of the
shared data and then checked, unchanged, on 132 other Who&When logs; no rule names an agent, a
framework's wording beyond handoff and termination markers, or a task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from counterfact.interventions._grounding import numbers_in
from counterfact.store import StepKind, StepRecord, output_text

# Round weights of each signal in a step's score (see the module docstring).
W_FABRICATED = 1.0
W_PROPAGATED = 0.5
W_TOOL_FAILED = 1.0
W_TOOL_EMPTY = 0.5
W_CRITICISED = 0.5
W_WORKER = 1.0
W_RESTATES = -1.0
W_RANK = -0.2
W_DEPENDED = 1.0  # reached when `_CAPS["depended_on"]` later steps build on the step
AGENT_EVIDENCE_SHARE = 0.25  # how much the evidence adds to an agent's count of worker steps
_CAPS = {"fabricated": 2, "propagated": 2, "criticised": 3, "rank": 10, "depended_on": 3}
_WINDOW = 4  # steps after a step that count as its consequences
_SCAN = 3000  # characters of a tool output searched for an error
_REMARK = 1500  # characters of a later remark searched for criticism
_TASK_HEAD = 60  # characters of the task a restating step contains verbatim
_SHARED_WORDS = 5  # new words of a step a later step must reuse to build on it

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{4,}")  # words of five letters or more: content, not glue

_FABRICATION = re.compile(
    r"\b(?:assum\w*|hypothetic\w*|placeholders?|for (?:the sake of )?(?:demonstration|illustration)"
    r"|let'?s say|mock(?:ed|ing)?|simulat\w*|dummy|fictional|made[- ]up|(?:example|sample) data"
    r"|(?:can ?not|can't|unable to|don't have (?:the ability|access) to) (?:directly )?"
    r"(?:access|browse|view|retrieve|open))\b",
    re.IGNORECASE,
)
_TOOL_ERROR = re.compile(
    r"Traceback \(most recent call last\)|exit ?code:? [1-9]|execution failed|\b\w*Error\b"
    r"|\bexception\b|\btimed? ?out\b",
    re.IGNORECASE,
)
_TOOL_EMPTY = re.compile(
    r"output:\s*(?:\[\]|\{\}|None|null|0)?\s*$|\bnot found\b|\bno results?\b", re.IGNORECASE
)
_CRITICISM = re.compile(
    r"\b(?:not (?:yet )?(?:making|made) (?:\w+ )?progress|no (?:significant |forward |meaningful )?"
    r"progress|stuck|in a loop|loop of|irrelevant|unrelated|unable|failed|fails|failure|cannot"
    r"|can't|could not|couldn't|did not|didn't|not (?:been )?(?:found|successful|able|provided?"
    r"|yield\w*)|no (?:relevant |useful |new )?(?:results|information|data)|incorrect|wrong"
    r"|mistake|error)\b",
    re.IGNORECASE,
)
_NO_DECISION = re.compile(r"^\W*(?:next speaker\W+\w+|terminate)\W*$", re.IGNORECASE)
# Python warnings captured inside messages: a `file.py:N: XWarning:` line and its source line.
_WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: .*\n(?:[ \t]+.*\n?)?", re.MULTILINE)


class StepEvidence(BaseModel):
    """The signals against one step of a run, and the score they add up to."""

    step: int
    agent: str
    kind: StepKind
    fabricated: int = 0  # hedges marking an invented fact or value in its own text
    propagated: list[str] = Field(default_factory=list)  # ungrounded numbers later steps repeat
    tool_failed: bool = False  # it raised, or a tool call it made or caused errored
    tool_empty: bool = False  # a tool call it caused returned nothing
    criticised: int = 0  # critical remarks of others before it speaks again
    restates_task: bool = False
    depended_on: int = 0  # later steps of others that reuse the words it introduced
    worker_rank: int = 0  # worker steps before it
    score: float = 0.0

    @property
    def evidence(self) -> float:
        """The part of the score that says something went wrong (not role or place)."""
        return (
            W_FABRICATED * min(self.fabricated, _CAPS["fabricated"])
            + W_PROPAGATED * min(len(self.propagated), _CAPS["propagated"])
            + W_TOOL_FAILED * self.tool_failed
            + W_TOOL_EMPTY * self.tool_empty
            + W_CRITICISED * min(self.criticised, _CAPS["criticised"])
        )

    @property
    def reason(self) -> str:
        parts = []
        if self.fabricated:
            parts.append("its text hedges or invents a value")
        if self.propagated:
            parts.append(f"it introduced {', '.join(self.propagated)}, which nothing earlier gives and later steps repeat")
        if self.tool_failed:
            parts.append("it or a tool call it caused failed")
        if self.tool_empty:
            parts.append("a tool call it caused returned nothing")
        if self.criticised:
            parts.append(f"the next steps criticise it ({self.criticised} remark{'s' * (self.criticised != 1)})")
        if self.depended_on:
            parts.append(f"{self.depended_on} later step{'s' * (self.depended_on != 1)} of others build on what it introduced")
        if not parts:
            parts.append("the earliest worker step with the most weight")
        return f"step {self.step} ({self.agent}): " + "; ".join(parts)


class Blame(BaseModel):
    """The evidence method's answer for one run, with the strongest candidates behind it."""

    agent: str | None = None
    step: int | None = None
    reason: str | None = None
    candidates: list[StepEvidence] = Field(default_factory=list)  # best first


def gather_evidence(steps: Sequence[StepRecord], task: str) -> list[StepEvidence]:
    """The signals against every step that made a decision, in order of the run."""
    texts = [_WARNING.sub("", output_text(s.output)) for s in steps]
    results = [" ".join(output_text(c.result) for c in s.tool_calls if c.error is None) for s in steps]
    authors = [s.agent or s.node for s in steps]
    stated = [set(numbers_in(texts[n])) | set(numbers_in(results[n])) for n in range(len(steps))]
    repeated = _repeated_by_others(stated, authors)
    depended = _built_on(texts, authors, task)
    head = " ".join(task.split())[:_TASK_HEAD]
    seen = set(numbers_in(task))
    found: list[StepEvidence] = []
    workers = 0
    for n, step in enumerate(steps):
        text = texts[n]
        if _decides(step, text):
            claimed = numbers_in(text + " " + " ".join(json.dumps(c.arguments) for c in step.tool_calls))
            grounded = seen | set(numbers_in(results[n]))
            after = _consequences(steps, authors, n)
            tool_out = [texts[m][:_SCAN] for m in after if steps[m].kind == "tool"]
            remarks = [texts[m][:_REMARK] for m in after if steps[m].kind != "tool"]
            evidence = StepEvidence(
                step=step.index if step.index is not None else n,
                agent=authors[n],
                kind=step.kind,
                fabricated=len(_FABRICATION.findall(text)),
                propagated=[x for x in claimed if x not in grounded and x in repeated[n]][: _CAPS["propagated"]],
                tool_failed=step.error is not None or any(c.error is not None for c in step.tool_calls)
                or any(_TOOL_ERROR.search(t) for t in tool_out),
                tool_empty=any(_TOOL_EMPTY.search(t) for t in tool_out),
                criticised=sum(len(_CRITICISM.findall(t)) for t in remarks),
                restates_task=bool(head) and head in " ".join(text.split()),
                depended_on=depended[n],
                worker_rank=workers,
            )
            evidence.score = (
                evidence.evidence
                + W_WORKER * (step.kind == "agent")
                + W_RESTATES * evidence.restates_task
                + W_DEPENDED * min(evidence.depended_on, _CAPS["depended_on"]) / _CAPS["depended_on"]
                + W_RANK * min(workers, _CAPS["rank"])
            )
            found.append(evidence)
            workers += step.kind == "agent"
        seen |= stated[n]
    return found


def _built_on(texts: list[str], authors: list[str], task: str) -> list[int]:
    """For each step, how many later steps of other authors reuse `_SHARED_WORDS` or more of
    the words it was first to write (words of the task are nobody's)."""
    words = [{w.lower() for w in _WORD.findall(t)} for t in texts]
    seen = {w.lower() for w in _WORD.findall(task)}
    counts: list[int] = []
    for n, mine in enumerate(words):
        new = mine - seen
        counts.append(sum(
            1 for m in range(n + 1, len(texts))
            if authors[m] != authors[n] and len(new & words[m]) >= _SHARED_WORDS
        ) if len(new) >= _SHARED_WORDS else 0)
        seen |= mine
    return counts


def _repeated_by_others(stated: list[set[str]], authors: list[str]) -> list[set[str]]:
    """For each step, the numbers that later steps of other authors state (one pass backwards,
    so a long log costs linear time)."""
    after: dict[str, set[str]] = {}  # author -> numbers its steps state after the current one
    repeated: list[set[str]] = [set() for _ in stated]
    for n in range(len(stated) - 1, -1, -1):
        repeated[n] = set().union(*(numbers for author, numbers in after.items() if author != authors[n]))
        after.setdefault(authors[n], set()).update(stated[n])
    return repeated


def blame(steps: Sequence[StepRecord], task: str, *, keep: int = 3) -> Blame:
    """The agent and step the evidence points at, with the `keep` strongest candidates."""
    found = gather_evidence(steps, task)
    if not found:
        return Blame()
    weight: dict[str, float] = {}
    for e in found:  # dicts keep first-seen order: a tie goes to the agent that acted first
        weight[e.agent] = weight.get(e.agent, 0.0) + (e.kind == "agent") + AGENT_EVIDENCE_SHARE * e.evidence
    agent = max(weight, key=lambda a: weight[a])
    ranked = sorted(found, key=lambda e: (-e.score, e.step))
    best = next(e for e in ranked if e.agent == agent)
    return Blame(agent=agent, step=best.step, reason=best.reason, candidates=ranked[:keep])


def _decides(step: StepRecord, text: str) -> bool:
    """Whether a step made a decision that can be blamed: not input, tool output, a bare
    handoff announcement or a termination marker."""
    if step.kind in ("input", "tool"):
        return False
    if not text.strip() and not step.tool_calls:
        return False
    return not _NO_DECISION.match(text.strip()) and not _bare_route(step.delta)


def _bare_route(delta: Any) -> bool:
    """A routing delta that only names the next agent (no instruction of its own)."""
    return isinstance(delta, dict) and set(delta) == {"route"} and isinstance(delta["route"], dict) \
        and set(delta["route"]) == {"to"}


def _consequences(steps: Sequence[StepRecord], authors: list[str], n: int) -> list[int]:
    """The steps after step `n` that answer it: up to `_WINDOW`, until its author acts again."""
    after: list[int] = []
    for m in range(n + 1, min(len(steps), n + 1 + _WINDOW)):
        if authors[m] == authors[n] and steps[m].kind == steps[n].kind:
            break
        after.append(m)
    return after
