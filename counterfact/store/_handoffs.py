"""The handoffs a stored step shows, as edges between agents (for `runs show`, the viewer's
graph and OTel spans)."""

from __future__ import annotations

from counterfact.capture import Handoff, handoff_of
from counterfact.store._models import StepRecord


class HandoffEdge(Handoff):
    """A handoff as a trace shows it: from which agent, to which, through which tool."""

    source: str
    nested: bool = False  # made inside the step's subgraph (a team's own supervisor, say)


def step_handoffs(step: StepRecord) -> list[HandoffEdge]:
    """The handoffs a recorded step made: the step's own (its result was a Command with a
    goto) and those between agents nested in it, in the order they happened."""
    own_source = step.agent or step.node
    edges: list[HandoffEdge] = []
    for call in step.tool_calls:
        if call.handoff is None:
            continue
        nested = call.agent is not None
        source = call.agent.rsplit("/", 1)[-1] if call.agent else own_source
        edges.append(HandoffEdge(source=source, to=call.handoff, text=str(call.result or ""), tool=call.name, nested=nested))
    own = handoff_of(step.delta)
    if own is not None and not any(not e.nested and e.to == own.to for e in edges):
        edges.append(HandoffEdge(source=own_source, to=own.to, text=own.text))
    return edges

