"""One step's view: its conversation, model and tool calls, the state before and after, its
captured activations, and the edits a replay from it could start with."""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import BaseModel, Field

from counterfact.capture import ModelCallRecord, ToolCallRecord, timeline
from counterfact.interventions import edit_kind, edit_kind_names
from counterfact.store import (
    HandoffEdge,
    StepRecord,
    TraceStore,
    state_at,
    step_handoffs,
)


class ChatLine(BaseModel):
    role: str
    name: str | None = None
    content: str
    tool_calls: list[str] = Field(default_factory=list)


class ActivationPlot(BaseModel):
    """The L2 norm of a captured activation at each position, as an SVG polyline."""

    call: int
    point: str
    positions: int
    low: float
    high: float
    points: str


class StepView(BaseModel):
    run_id: str
    step: StepRecord
    conversation: list[ChatLine]
    output: ChatLine | None
    state_diff: list[tuple[str, str]]  # (marker, line): " " same, "-" before only, "+" after only
    has_state: bool
    activations: list[ActivationPlot]
    edit_templates: dict[str, str]  # edit kind -> a YAML edit to start from
    calls: list[ModelCallRecord | ToolCallRecord]  # the step's model and tool calls, as they started
    handoffs: list[HandoffEdge]


def step_view(store: TraceStore, run_ref: str, index: int) -> StepView:
    run_id = store.resolve_run_id(run_ref)
    found = store.steps(run_id, indices=[index])
    if not found:
        raise ValueError(f"run {run_id[:12]} has no step {index} (it has {store.get_run(run_id).step_count})")
    step = found[0]
    before = state_at(store, run_id, step.checkpoint_before)
    after = state_at(store, run_id, step.checkpoint_after)
    return StepView(
        run_id=run_id, step=step,
        conversation=[_chat_line(m) for m in (step.input or [])],
        output=_chat_line(step.output) if step.output is not None else None,
        state_diff=_state_diff(before, after), has_state=before is not None or after is not None,
        activations=_activation_plots(store.step_activations(run_id, index)),
        edit_templates=edit_templates(step, before),
        calls=timeline(step.model_calls, step.tool_calls),
        handoffs=step_handoffs(step),
    )


def _chat_line(message: Any) -> ChatLine:
    if isinstance(message, dict):
        content = message.get("content", "")
        calls = message.get("tool_calls") or []
        return ChatLine(
            role=str(message.get("role") or message.get("type") or "message"),
            name=message.get("name"),
            content=content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str),
            tool_calls=[_call_text(c) for c in calls],
        )
    if isinstance(message, str):
        return ChatLine(role="output", content=message)
    return ChatLine(role="output", content=json.dumps(message, ensure_ascii=False, indent=1, default=str))


def _call_text(call: Any) -> str:
    if isinstance(call, dict):
        name = call.get("name") or (call.get("function") or {}).get("name", "?")
        args = call.get("args") or call.get("arguments") or (call.get("function") or {}).get("arguments", {})
        return f"{name}({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})"
    return str(call)


def _state_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, str]]:
    a = json.dumps(before or {}, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    b = json.dumps(after or {}, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    lines: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            same = a[i1:i2]
            if len(same) > 6:  # context: three lines either side of a change
                lines += [(" ", x) for x in same[:3]] + [("…", f"{len(same) - 6} unchanged lines")]
                lines += [(" ", x) for x in same[-3:]]
            else:
                lines += [(" ", x) for x in same]
        else:
            lines += [("-", x) for x in a[i1:i2]] + [("+", x) for x in b[j1:j2]]
    return lines


def _activation_plots(blobs: list[bytes | None]) -> list[ActivationPlot]:
    import numpy as np
    from safetensors.numpy import load

    plots = []
    for call, blob in enumerate(blobs):
        if blob is None:
            continue
        for point, tensor in sorted(load(blob).items()):
            values = np.asarray(tensor, dtype=np.float32)
            norms = np.linalg.norm(values.reshape(values.shape[0], -1), axis=1) if values.ndim > 1 else np.abs(values)
            low, high = float(norms.min()), float(norms.max())
            span = (high - low) or 1.0
            step = 200 / max(len(norms) - 1, 1)
            points = " ".join(f"{i * step:.1f},{38 - 36 * (v - low) / span:.1f}" for i, v in enumerate(norms))
            plots.append(ActivationPlot(call=call, point=point, positions=len(norms), low=low, high=high, points=points))
    return plots


def edit_templates(step: StepRecord, before: dict[str, Any] | None) -> dict[str, str]:
    """A starting edit (YAML, as an edit file would hold it) for each kind that applies to the
    step, filled with what the step holds now; each kind supplies its own."""
    import yaml

    templates: dict[str, str] = {}
    for name in edit_kind_names():
        if (edit := edit_kind(name).template(step, before)) is not None:
            templates[name] = yaml.safe_dump(edit, sort_keys=False, allow_unicode=True, width=100)
    return templates
