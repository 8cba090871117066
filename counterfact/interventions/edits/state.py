"""`state`: patch the state as the step finds it (RFC 6902 JSON patch on the channels); later
steps see the patched state. The patch is written with LangGraph's `update_state` before the
replay resumes."""

from __future__ import annotations

from typing import Any, Literal

import jsonpatch
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.types import Overwrite
from pydantic import Field

from counterfact.capture import from_jsonable_update, to_jsonable
from counterfact.interventions._applied import Evidence, state_evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StateUpdate,
    StepPlan,
)
from counterfact.store import StepRecord


class StateEdit(EditSpec):
    """Patch the state as the step finds it (RFC 6902 JSON patch on the channels, by name:
    `/plan/steps/0/text`, `/messages/2/content`); later steps see the patched state."""

    kind: Literal["state"] = "state"
    patch: list[dict[str, Any]] = Field(min_length=1)


SPEC: type[EditSpec] = StateEdit
ORDER = 20


def compile_edit(edit: StateEdit, context: CompileContext, plan: StepPlan) -> None:
    write_patch(edit.patch, to_jsonable(context.state_before()), context, plan)


def describe(edit: dict[str, Any], where: str) -> str:
    return f"state edit at {where}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any]:
    channel = next(iter(before or {"messages": 0}))
    return {"kind": "state", "patch": [{"op": "replace", "path": f"/{channel}", "value": None}]}


def write_patch(patch: list[dict[str, Any]], current: dict[str, Any], context: CompileContext, plan: StepPlan) -> None:
    """Apply `patch` to the state `current` (JSON-able) and plan the write of the channels it
    changes, with the evidence that the agents from the step on read the new values."""
    step = context.index
    channels = sorted(k for k in context.graph.channels if not k.startswith(("__", "branch:")))
    for op in patch:
        channel = str(op.get("path", "")).lstrip("/").split("/")[0]
        if channel not in channels:
            raise InterventionError(
                f"state patch at step {step}: no channel {channel!r} in the graph's state (channels: {', '.join(channels)})"
            )
    try:
        patched = jsonpatch.apply_patch(current, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise InterventionError(f"state patch does not apply at step {step}: {exc}") from None
    values: dict[str, Any] = {}
    # Models from the fork on must be sent the new texts; every node must run on the new state.
    models_follow = any(s.model_calls for s in context.steps[step:])
    for channel in channels:
        if patched.get(channel) == current.get(channel):
            continue
        value = from_jsonable_update({channel: patched.get(channel)})[channel]
        reducer = isinstance(context.graph.channels[channel], BinaryOperatorAggregate)
        values[channel] = Overwrite(value) if reducer else value
        plan.evidence.append(state_evidence(channel, patched.get(channel)))
        if models_follow:
            new_texts = _new_texts(patched.get(channel), current.get(channel))
            plan.evidence.extend(Evidence(kind="seen", value=t) for t in new_texts)
    if not values:
        raise InterventionError(f"state patch at step {step} changes nothing")
    previous = context.steps[step - 1].node if step > 0 else None
    plan.updates.append(StateUpdate(values=values, as_node=previous))


_IDENTIFIERS = frozenset({"id", "tool_call_id"})


def _new_texts(new: Any, old: Any) -> list[str]:
    """Strings in the new value that the old one did not have (what an agent should now see);
    identifiers (a message's or a tool call's id) are never shown to a model, so they are not
    evidence."""

    def strings(value: Any) -> set[str]:
        if isinstance(value, str):
            return {value}
        if isinstance(value, dict):
            shown = [v for k, v in value.items() if k not in _IDENTIFIERS]
            return set().union(*(strings(v) for v in shown)) if shown else set()
        if isinstance(value, list):
            return set().union(*(strings(v) for v in value)) if value else set()
        return set()

    fresh = strings(new) - strings(old)
    return sorted(s for s in fresh if len(s) > 3 and s not in ("pending", "in_progress", "done"))
