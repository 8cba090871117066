"""Candidate fixes of a hypothesis, best first: thinking interventions the agent acts on itself.

A hypothesis says that one step went wrong and why. Rather than ask another model to write the
step's corrected message (which a small model rarely does well, and which may smuggle in an
answer), the fix tells the suspect agent what went wrong and lets it write its own step again,
in its own words and format:

1. instruction   a note that states what went wrong, read before the agent answers (greedy);
2. prefix        the start of the tool call it got wrong or skipped, which it completes
                 (local models that call tools through the text protocol only);
3. sample k      the note again, with the agent's step sampled (seed k), for a different
                 draft of its own when the greedy one repeats the mistake.

Each fix records the strategy that wrote it, so a repair can be credited, and where its text
came from, so a repair can be checked for leakage.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from counterfact._errors import CounterfactError
from counterfact.interventions._grounding import numbers_in
from counterfact.interventions._replay import Replayer
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.instruction import InstructionEdit
from counterfact.interventions.edits.prefix import PrefixEdit
from counterfact.interventions.edits.sample import SampleEdit
from counterfact.store import StepRecord

FixSource = Literal["hypothesis", "agent", "reference"]  # who wrote the text the fix carries


class Fix(BaseModel):
    """One candidate fix of a hypothesis, and how its verification went."""

    label: str
    strategy: str
    source: FixSource  # hypothesis: the strategy's note; agent: a sample of the agent itself
    intervention: dict[str, Any]
    reference: str | None = None  # the successful run a transplant comes from
    verdict: str | None = None  # validated, refuted, inconclusive; None: not tried
    verdict_id: str | None = None
    reason: str = ""


def thinking_fixes(
    replayer: Replayer,
    step: StepRecord,
    notes: list[str],
    *,
    strategy: str,
    samples: int,
    temperature: float,
) -> list[Fix]:
    """The fixes for a hypothesis on `step`, best first (see the module docstring)."""
    at = StepRef(step=step.index)
    fixes = [
        Fix(label="instruction", strategy=strategy, source="hypothesis",
            intervention=Intervention(edits=[InstructionEdit(at=at, text=note)], note=strategy).dump())
        for note in dict.fromkeys(notes)
    ]
    if (prefix := tool_call_start(step)) is not None and _takes(replayer, PrefixEdit(at=at, text=prefix), step):
        fixes.append(
            Fix(label="prefix", strategy=strategy, source="hypothesis",
                intervention=Intervention(edits=[PrefixEdit(at=at, text=prefix)], note=strategy).dump())
        )
    if notes and takes_temperature(replayer, [step]):
        for k in range(samples):
            edits = [InstructionEdit(at=at, text=notes[0]), SampleEdit(at=at, temperature=temperature, seed=k)]
            fixes.append(
                Fix(label=f"sample {k + 1}", strategy=strategy, source="agent",
                    intervention=Intervention(edits=edits, note=strategy).dump())
            )
    return fixes


def tool_call_start(step: StepRecord) -> str | None:
    """`CALL tool {"arg": "`: the opening of the step's first tool call in the text protocol,
    left for the agent to complete (None when the step called no tool with a text argument)."""
    for call in step.tool_calls:
        if isinstance(call.arguments, dict) and call.arguments:
            name, value = next(iter(call.arguments.items()))
            if isinstance(value, str):
                return f'CALL {call.name} {{"{name}": "'
    return None


def _takes(replayer: Replayer, edit: PrefixEdit, step: StepRecord) -> bool:
    """Whether the step's model continues a prefix: a local model's text-protocol call."""
    if not any(call.params.get("counterfact_model") for call in step.model_calls):
        return False
    try:
        replayer.compile(Intervention(edits=[edit]), step.index)
    except CounterfactError:
        return False
    return True


def takes_temperature(replayer: Replayer, steps: list[StepRecord]) -> bool:
    """Whether fresh samples of these steps can differ from the recorded ones: their models
    take a sampling temperature."""
    return replayer.target.counterfact_agents or any(
        "temperature" in call.params for step in steps for call in step.model_calls
    )


def leaked(fix: Fix, expected: str | None) -> bool:
    """Whether a fix's own text (what its edits say, not where they aim) states the expected
    answer: one of its numbers, or the whole text."""
    if not expected:
        return False
    said = ("text", "result", "instruction", "value", "next", "plan", "patch", "tool_calls")
    text = json.dumps([{k: v for k, v in edit.items() if k in said} for edit in fix.intervention.get("edits", [])])
    wanted = numbers_in(expected)
    return any(n in numbers_in(text) for n in wanted) if wanted else expected in text
