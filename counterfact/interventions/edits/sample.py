"""`sample`: the step alone is redrawn at this temperature and seed; the other steps keep
their own decoding."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import CompileContext, EditSpec, StepPlan
from counterfact.store import StepRecord


class SampleEdit(EditSpec):
    """The agent at the step writes its step again, sampled at `temperature` with `seed`;
    the other steps keep their own decoding. A fix drawn from the agent itself."""

    kind: Literal["sample"] = "sample"
    temperature: float = Field(default=0.8, gt=0.0, le=2.0)
    seed: int = 0


SPEC: type[EditSpec] = SampleEdit
ORDER = 110


def compile_edit(edit: SampleEdit, context: CompileContext, plan: StepPlan) -> None:
    plan.directives.temperature, plan.directives.seed = edit.temperature, edit.seed
    plan.evidence.append(Evidence(kind="sampled", value=f"{edit.temperature}:{edit.seed}"))


def describe(edit: dict[str, Any], where: str) -> str:
    return (
        f"the agent at {where} writes its step again, sampled at temperature "
        f"{edit.get('temperature', 0.8)} with seed {edit.get('seed', 0)}"
    )


def template(step: StepRecord, before: dict[str, Any] | None) -> None:
    return None
