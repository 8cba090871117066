"""`resume`: the answer to the step's `interrupt()`, instead of the recorded one."""

from __future__ import annotations

from typing import Any, Literal

from counterfact.interventions.edits._base import CompileContext, EditSpec, StepPlan
from counterfact.store import StepRecord


class ResumeEdit(EditSpec):
    """Answer the step's `interrupt()` with this value instead of the recorded one."""

    kind: Literal["resume"] = "resume"
    value: Any


SPEC: type[EditSpec] = ResumeEdit
ORDER = 70


def compile_edit(edit: ResumeEdit, context: CompileContext, plan: StepPlan) -> None:
    plan.resume, plan.resumes = edit.value, True


def describe(edit: dict[str, Any], where: str) -> str:
    return f"resume edit at {where}"


def template(step: StepRecord, before: dict[str, Any] | None) -> None:
    return None
