"""`handoff`: a handoff the step made goes to another agent, is not made, or carries another
message."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StepPlan,
    short,
)
from counterfact.store import StepRecord, step_handoffs


class HandoffEdit(EditSpec):
    """Change a handoff the step made: send control to another agent (`to: AGENT`), keep it
    with the agent that handed off (`to: null`, kept as "none"), and/or change the message
    handed over."""

    kind: Literal["handoff"] = "handoff"
    to: str = ""  # "": where the step sent it
    message: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _null(cls, to: Any) -> Any:
        return "none" if to is None else to

    @model_validator(mode="after")
    def _something(self) -> HandoffEdit:
        if not self.to and self.message is None:
            raise ValueError("a handoff edit needs `to` (an agent, or null to keep control) or `message`")
        return self

    @property
    def keeps_control(self) -> bool:
        return self.to == "none"


SPEC: type[EditSpec] = HandoffEdit
ORDER = 50


def compile_edit(edit: HandoffEdit, context: CompileContext, plan: StepPlan) -> None:
    """Redirecting replaces the goto of the step's Command (as a route edit does); keeping
    control answers the handoff tool with a note instead of its Command, so the agent goes
    on (a node that handed off by itself runs again instead)."""
    step = context.step
    edges = [e for e in step_handoffs(step) if not e.nested]
    if not edges:
        nested = [f"{e.source} -> {e.to}" for e in step_handoffs(step)]
        where = f" (handoffs nested in it: {', '.join(nested)}; edit the step of the team that made them)" if nested else ""
        raise InterventionError(f"step {context.index} ({step.node}) made no handoff of its own{where}; use a route edit")
    made = edges[-1]
    if edit.keeps_control:
        note = edit.message or f"The handoff to {made.to} was not made: go on with the task yourself."
        if made.tool:
            plan.directives.kept_handoffs[made.tool] = note
            plan.evidence.append(Evidence(kind="tool_result", value=note, tool=made.tool))
        else:
            plan.directives.route = step.node
            plan.evidence.append(Evidence(kind="route", value=step.node))
        return
    if edit.to:
        if edit.to not in context.nodes:
            raise InterventionError(f"handoff: no agent {edit.to!r} in the graph; it has {', '.join(sorted(context.nodes))}")
        plan.directives.route = edit.to
        plan.evidence.append(Evidence(kind="route", value=edit.to))
    message = edit.message
    if message is None and edit.to and made.to in made.text:
        message = made.text.replace(made.to, edit.to)  # "transferred to X" names the new agent
    if message is not None:
        plan.directives.handoff_message = message
        plan.evidence.append(Evidence(kind="seen", value=message))


def describe(edit: dict[str, Any], where: str) -> str:
    to = "no one (the agent keeps control)" if edit.get("to") == "none" else edit.get("to") or "the same agent"
    said = f" with the message {short(edit['message'])!r}" if edit.get("message") is not None else ""
    return f"the handoff at {where} goes to {to}{said}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    own = [e for e in step_handoffs(step) if not e.nested]
    return {"kind": "handoff", "to": own[-1].to, "message": own[-1].text} if own else None
