"""`prompt`: from the step on, every model is sent `new` where the app's prompts said `old`:
an agent's instructions or a tool's description changed, as a fix to the app's own prompts
would change them (an `instruction` is a note for one step; this is the prompt itself)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from counterfact.capture import PromptChange
from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    StepPlan,
    short,
)
from counterfact.store import StepRecord


class PromptEdit(EditSpec):
    """Replace `old` by `new` in the system messages and tool descriptions every model is
    sent, from the step on."""

    kind: Literal["prompt"] = "prompt"
    old: str = Field(min_length=1)
    new: str = ""


SPEC: type[EditSpec] = PromptEdit
ORDER = 95


def compile_edit(edit: PromptEdit, context: CompileContext, plan: StepPlan) -> None:
    plan.prompt_changes.append(PromptChange(old=edit.old, new=edit.new))
    plan.evidence.append(Evidence(kind="prompt", value=edit.new, tool=edit.old))


def describe(edit: dict[str, Any], where: str) -> str:
    return f"from {where} on, the prompts say {short(edit.get('new', ''))!r} instead of {short(edit.get('old', ''))!r}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    system = next((str(m.get("content", "")) for call in step.model_calls for m in call.request
                   if m.get("role") == "system" and m.get("content")), None)
    return None if system is None else {"kind": "prompt", "old": system, "new": system}
