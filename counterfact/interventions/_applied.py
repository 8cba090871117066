"""Whether an edit reached the agents of a replay.

A replay counts as treated only when its recorded steps show the evidence its plan expects:
the edited text in what a model was sent, the forced tool result, the route taken, the tool
offered or withdrawn, the channel holding the written value. A verdict rests on this check,
so it lives alone, as plain functions over recorded steps, where its tests can reach every
branch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from langgraph.graph import END
from pydantic import BaseModel

from counterfact.capture import canonical_json
from counterfact.store import StepRecord, output_text

EvidenceKind = Literal[
    "seen", "prefix", "tool_offered", "tool_withdrawn", "tool_result", "route", "response", "sampled", "state",
    "prompt",
]


class Evidence(BaseModel):
    """Something a replay must show for its edit to count as applied.

    `value` is what must be shown; `tool` names what it is about (a tool, a model call's index,
    a state channel)."""

    kind: EvidenceKind
    value: str = ""
    tool: str | None = None


StateAt = Callable[[StepRecord], dict[str, Any]]
"""The (JSON-able) state a recorded step of the replay ran on."""

_TEXT_TOOL = re.compile(r"^- ([A-Za-z_][A-Za-z0-9_-]*): ", re.MULTILINE)


def missing_evidence(
    evidence: list[Evidence], steps: list[StepRecord], state_at: StateAt, *, activation: bool = False
) -> list[str]:
    """What the replay's steps from the fork on (`steps[0]` is the edited step) fail to show,
    described for a person; empty when the edit took effect. Activation edits are checked by
    the verifier, which compares next-token distributions: here only that the step called a
    model at all."""
    if not steps:
        return ["the replay recorded no step after the fork"]
    missing = [describe(e) for e in evidence if not shown(e, steps, state_at)]
    if activation and not steps[0].model_calls:
        missing.append("a model call at the edited step")
    return missing


def shown(evidence: Evidence, steps: list[StepRecord], state_at: StateAt) -> bool:
    """Whether the replay's steps (from the fork on) show one piece of evidence."""
    target = steps[0]
    if evidence.kind == "prefix":
        return output_text(target.output).startswith(evidence.value.strip())
    if evidence.kind == "sampled":
        temperature, seed = evidence.value.split(":")
        return bool(target.model_calls) and all(
            call.params.get("temperature") == float(temperature) and call.params.get("seed") == int(seed)
            for call in target.model_calls
        )
    if evidence.kind in ("tool_offered", "tool_withdrawn"):
        if not target.model_calls:
            return False  # no request at the step: nothing shows what the model was offered
        offered = [evidence.tool in offered_tools(call) for call in target.model_calls]
        return all(offered) if evidence.kind == "tool_offered" else not any(offered)
    if evidence.kind == "tool_result":
        return any(c.name == evidence.tool and str(c.result) == evidence.value for c in target.tool_calls)
    if evidence.kind == "response":
        index = int(evidence.tool or 0)
        calls = target.model_calls
        return index < len(calls) and str(calls[index].response.get("content", "")) == evidence.value
    if evidence.kind == "route":
        return (len(steps) > 1 and steps[1].node == evidence.value) or (evidence.value == END and len(steps) == 1)
    if evidence.kind == "state":
        state = state_at(target)
        return evidence.tool in state and _canonical(state[evidence.tool]) == evidence.value
    texts = _seen_texts(steps)
    if evidence.kind == "prompt":  # a model was sent the new text, or no longer the old (in a tool's
        # description, which requests do not record, neither shows: a model call is all there is)
        old = evidence.tool or ""
        called = any(s.model_calls for s in steps)
        return called and (any(evidence.value and evidence.value in t for t in texts)
                           or not any(old and old in t for t in texts))
    return any(evidence.value in text for text in texts)


def state_evidence(channel: str, value: Any) -> Evidence:
    """Evidence that the edited step ran on a state whose `channel` held `value` (JSON-able)."""
    return Evidence(kind="state", value=_canonical(value), tool=channel)


def offered_tools(call: Any) -> set[str]:
    """The tools a model call offered: native tool specs, and text-protocol tools listed in
    its system message."""
    names = {str(n) for n in call.params.get("tools") or []}
    for message in call.request:
        content = str(message.get("content"))
        if message.get("role") == "system" and "CALL <tool name>" in content:
            names |= set(_TEXT_TOOL.findall(content.split("Tools:", 1)[-1]))
    return names


def describe(evidence: Evidence) -> str:
    """One piece of evidence, as a person reads it in "not seen in the replay: ..."."""
    return {
        "prefix": f"the reply starting with {evidence.value!r}",
        "tool_offered": f"tool {evidence.tool} offered to the model",
        "tool_withdrawn": f"tool {evidence.tool} withdrawn from the model",
        "tool_result": f"a call of {evidence.tool} answered {evidence.value!r}",
        "response": f"model call {evidence.tool} answering {evidence.value!r}",
        "route": f"{evidence.value} running next",
        "sampled": "the step's model calls sampled at temperature:seed " + evidence.value,
        "state": f"channel {evidence.tool} holding the edited value at the step",
        "prompt": f"a model sent {evidence.value!r} in place of {evidence.tool!r}",
    }.get(evidence.kind, evidence.value)


def _seen_texts(steps: list[StepRecord]) -> list[str]:
    """Everything the agents were sent from the fork on: the model requests of every step, the
    messages later steps were given, and the edited step's own output."""
    sent = [str(m.get("content", "")) for s in steps for call in s.model_calls for m in call.request]
    sent += [str(m.get("content", "")) for s in steps[1:] for m in s.input or []]
    return [*sent, output_text(steps[0].output)]


def _canonical(value: Any) -> str:
    return canonical_json(value).decode()
