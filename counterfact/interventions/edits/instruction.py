"""`instruction`: a note the step's model reads before it answers; the agent writes its own
step again, in its own words and format."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    StepPlan,
    short,
)
from counterfact.store import StepRecord


class InstructionEdit(EditSpec):
    """The agent at the step reads `text` as a note before it answers, and writes its own
    step again: a fix in the agent's own words and format, not one written for it."""

    kind: Literal["instruction"] = "instruction"
    text: str = Field(min_length=1)


SPEC: type[EditSpec] = InstructionEdit
ORDER = 100


def compile_edit(edit: InstructionEdit, context: CompileContext, plan: StepPlan) -> None:
    plan.directives.instruction = edit.text
    plan.evidence.append(Evidence(kind="seen", value=edit.text))


def describe(edit: dict[str, Any], where: str) -> str:
    return f"the agent at {where} reads the note {short(edit.get('text', ''))!r} before it answers"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "instruction", "text": "Check your numbers against the tool results."}
