"""`prefix`: the agent's answer must begin with this text; the model continues from it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import CompileContext, EditSpec, StepPlan
from counterfact.store import StepRecord


class PrefixEdit(EditSpec):
    """The agent's response at the step must begin with `text`; the model continues from it."""

    kind: Literal["prefix"] = "prefix"
    text: str = Field(min_length=1)


SPEC: type[EditSpec] = PrefixEdit
ORDER = 90


def compile_edit(edit: PrefixEdit, context: CompileContext, plan: StepPlan) -> None:
    context.local_model("prefix")
    plan.directives.prefix = edit.text
    plan.evidence.append(Evidence(kind="prefix", value=edit.text))


def describe(edit: dict[str, Any], where: str) -> str:
    return f"the answer at {where} begins {edit['text']!r}"


def template(step: StepRecord, before: dict[str, Any] | None) -> None:
    return None
