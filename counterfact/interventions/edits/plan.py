"""`plan`: replace the orchestrator's plan/ledger at the step, or patch it: a state edit of the
`plan` channel."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from counterfact.capture import to_jsonable
from counterfact.interventions.edits._base import CompileContext, EditSpec, StepPlan
from counterfact.interventions.edits.state import write_patch
from counterfact.store import StepRecord


class PlanEdit(EditSpec):
    """Replace the plan/ledger in the state at the step, or patch it (RFC 6902 JSON patch):
    a state edit of the orchestrator's `plan` channel."""

    kind: Literal["plan"] = "plan"
    plan: dict[str, Any] | None = None
    patch: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one(self) -> PlanEdit:
        if (self.plan is None) == (self.patch is None):
            raise ValueError("a plan edit needs exactly one of `plan` or `patch`")
        return self


SPEC: type[EditSpec] = PlanEdit
ORDER = 30


def compile_edit(edit: PlanEdit, context: CompileContext, plan: StepPlan) -> None:
    current = to_jsonable(context.state_before())
    plan_now = current.get("plan") or {}
    patch = [{"op": "add", "path": "/plan", "value": edit.plan}] if edit.plan is not None else [
        {**op, "path": "/plan" + op.get("path", "")} for op in edit.patch or []
    ]
    current.setdefault("plan", plan_now)
    write_patch(patch, current, context, plan)


def describe(edit: dict[str, Any], where: str) -> str:
    return f"plan edit at {where}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"kind": "plan", "plan": before["plan"]} if before and "plan" in before else None
