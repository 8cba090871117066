"""`tool`: force a tool's result at the step (of every call of the tool there, or of its calls
with the given arguments), or, from the step on, offer a tool to the agent (counterfact's agents
only) or take it away."""

from __future__ import annotations

from typing import Any, Literal

from counterfact.capture import ToolChange, step_key, tool_call_key
from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StepPlan,
    short,
)
from counterfact.store import StepRecord


class ToolEdit(EditSpec):
    """Replace a tool's result at the step, or give/take a tool from the step on."""

    kind: Literal["tool"] = "tool"
    tool: str
    action: Literal["result", "add", "remove"] = "result"
    result: Any = None
    arguments: dict[str, Any] | None = None  # force the result of these calls only (action "result")


SPEC: type[EditSpec] = ToolEdit
ORDER = 80


def compile_edit(edit: ToolEdit, context: CompileContext, plan: StepPlan) -> None:
    if edit.action == "result":
        key = edit.tool if edit.arguments is None else tool_call_key(edit.tool, edit.arguments)
        plan.directives.tool_results[key] = edit.result
        plan.evidence.append(Evidence(kind="tool_result", value=str(edit.result), tool=edit.tool))
        return
    step = context.step
    if edit.action == "add" and not context.ours:
        raise InterventionError(
            f"step {context.index} ({step.node}) is not a counterfact agent: on a user's node a "
            "tool can be removed or its result forced, not added (the edit names no tool object)"
        )
    owner = step.agent if context.ours and step.agent else step.node
    plan.tool_changes.append(
        ToolChange(agent=owner, tool=edit.tool, action=edit.action, from_step=step_key(step.node, step.invocation))
    )
    kind: Literal["tool_offered", "tool_withdrawn"] = "tool_offered" if edit.action == "add" else "tool_withdrawn"
    plan.evidence.append(Evidence(kind=kind, tool=edit.tool))


def describe(edit: dict[str, Any], where: str) -> str:
    called = f"({short(str(edit['arguments']))})" if edit.get("arguments") is not None else ""
    return f"tool {edit['tool']}{called}: {edit.get('action', 'result')} {short(str(edit.get('result', '')))!r} at {where}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    if not step.tool_calls:
        return None
    call = step.tool_calls[0]
    return {"kind": "tool", "tool": call.name, "result": call.result}
