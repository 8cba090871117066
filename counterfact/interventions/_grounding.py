"""Grounded suspects: the first step that claims what nothing before it supports.

Small and large models alike state facts that no tool result, task text or earlier message
gives: numbers copied from a few-shot example, a fact invented after a lookup that failed, an
operand out of nowhere. A claim here is a number (the checkable part of most agent outputs) in
a step's output or in the arguments of its tool calls; it is supported when the task's question,
a tool result of this or an earlier step, or an earlier step's output contains it. A tool call
that failed is a suspect too when its step still went on to answer. Few-shot examples are not
support: an agent's own prompt is not evidence about the task.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field

from counterfact.store import StepRecord, output_text

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?![\w])")
_TRIVIAL = 10  # one-digit numbers are list markers and counts as often as claims


class Suspect(BaseModel):
    """A step whose output is not grounded in what came before it, with the evidence."""

    step: int
    agent: str
    unsupported: list[str] = Field(default_factory=list)  # claimed numbers nothing supports
    failed_calls: list[str] = Field(default_factory=list)  # "tool(args): error" it went on from
    supported: list[str] = Field(default_factory=list)  # numbers the step could have used

    @property
    def reason(self) -> str:
        parts = []
        if self.unsupported:
            parts.append(
                f"{self.agent} wrote {', '.join(self.unsupported)}, which no task text, tool "
                "result or earlier message gives"
            )
        if self.failed_calls:
            parts.append(f"{self.agent} went on after a failed tool call: {self.failed_calls[0]}")
        return "; ".join(parts)


def numbers_in(text: str) -> list[str]:
    """The numbers a text states, normalised (no thousands separators), in order, no repeats."""
    found = (m.group(0).replace(",", "") for m in _NUMBER.finditer(text))
    return list(dict.fromkeys(n for n in found if _significant(n)))


def _significant(number: str) -> bool:
    try:
        return abs(float(number)) >= _TRIVIAL
    except ValueError:
        return False


def find_suspects(steps: list[StepRecord], question: str) -> list[Suspect]:
    """Every ungrounded step in order (the first is the likeliest origin of the failure)."""
    support = set(numbers_in(question))
    suspects: list[Suspect] = []
    for step in steps:
        results = " ".join(
            output_text(call.result) for call in step.tool_calls if call.error is None
        )
        here = support | set(numbers_in(results))
        said = output_text(step.output) + " " + " ".join(json.dumps(c.arguments) for c in step.tool_calls)
        unsupported = [n for n in numbers_in(said) if n not in here]
        failed = [
            f"{call.name}({json.dumps(call.arguments)}): {call.error}" if call.error is not None else ""
            for call in step.tool_calls
        ]
        failed = [f for i, f in enumerate(failed) if f and not _retried(step.tool_calls, i)]
        if unsupported or failed:
            suspects.append(
                Suspect(
                    step=step.index or 0,
                    agent=step.agent or step.node,
                    unsupported=unsupported,
                    failed_calls=failed,
                    supported=sorted(here, key=float),
                )
            )
        support = here | set(numbers_in(output_text(step.output)))
    return suspects


def _retried(calls: list[Any], failed: int) -> bool:
    """Whether a later call of the same tool in the step succeeded (the agent recovered)."""
    name = calls[failed].name
    return any(call.name == name and call.error is None for call in calls[failed + 1 :])
