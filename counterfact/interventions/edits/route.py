"""`route`: force the next speaker at a routing step (and, on counterfact's router, its
instruction); on any other node, the node that runs after it, over its conditional edge or
`Command(goto=...)`."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.graph import END

from counterfact.capture import RouteChange
from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StepPlan,
    short,
)
from counterfact.store import StepRecord


class RouteEdit(EditSpec):
    """Force the next speaker (and its instruction) at a routing step. With `instead_of`, a
    fix to the routing function instead: from the step on, every route out of the step's node
    that would go to `instead_of` goes to `next`."""

    kind: Literal["route"] = "route"
    next: str
    instruction: str = ""
    instead_of: str | None = None


SPEC: type[EditSpec] = RouteEdit
ORDER = 40


def compile_edit(edit: RouteEdit, context: CompileContext, plan: StepPlan) -> None:
    step = context.step
    if context.ours and step.kind == "router":
        if edit.instead_of is not None:
            raise InterventionError(f"step {context.index} ({step.node}) is counterfact's router: it takes `next`, "
                                    f"not `instead_of`")
        plan.directives.reply = f"NEXT: {edit.next}\nINSTRUCTION: {edit.instruction}".strip()
        plan.evidence.append(Evidence(kind="seen", value=edit.instruction or edit.next))
        return
    nodes = context.nodes
    if step.node not in context.graph.builder.branches and not nodes[step.node].ends:
        raise InterventionError(
            f"step {context.index} ({step.node}) has no conditional edge or Command to route: its successors are fixed"
        )
    for field, node in (("next", edit.next), ("instead_of", edit.instead_of)):
        if node is not None and node not in nodes and node != END:
            raise InterventionError(f"route: {field}: no node {node!r} in the graph; it has {', '.join(sorted(nodes))}")
    if edit.instead_of is None:
        plan.directives.route = edit.next
    else:
        plan.route_changes.append(RouteChange(node=step.node, instead_of=edit.instead_of, to=edit.next))
    plan.evidence.append(Evidence(kind="route", value=edit.next))


def describe(edit: dict[str, Any], where: str) -> str:
    if edit.get("instead_of") is not None:
        return f"from {where} on, the route that went to {edit['instead_of']} goes to {edit['next']}"
    instruction = edit.get("instruction", "")
    return f"route to {edit['next']} at {where}" + (f": {short(instruction)!r}" if instruction else "")


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    routes = step.kind == "router" or (isinstance(step.delta, dict) and "route" in step.delta)
    return {"kind": "route", "next": "", "instruction": ""} if routes else None
