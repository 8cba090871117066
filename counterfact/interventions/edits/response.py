"""`response`: the step's nth model call returns this message instead of calling the model."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import Field

from counterfact.capture import ModelResponse
from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    StepPlan,
    short,
)
from counterfact.store import StepRecord


class ResponseEdit(EditSpec):
    """The `call`-th model call inside the step returns this message instead of calling the
    model (any model: counterfact's, a LangChain chat model, an instrumented openai client)."""

    kind: Literal["response"] = "response"
    call: int = Field(default=0, ge=0)
    text: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)  # {"name", "args"}


SPEC: type[EditSpec] = ResponseEdit
ORDER = 60


def compile_edit(edit: ResponseEdit, context: CompileContext, plan: StepPlan) -> None:
    calls = [
        {"name": c["name"], "args": c.get("args", c.get("arguments", {})), "id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}"}
        for c in edit.tool_calls
    ]
    plan.directives.model_responses.append(ModelResponse(call=edit.call, content=edit.text, tool_calls=calls))
    plan.evidence.append(Evidence(kind="response", value=edit.text, tool=str(edit.call)))


def describe(edit: dict[str, Any], where: str) -> str:
    calls = [f"{c.get('name')}({short(json.dumps(c.get('args', c.get('arguments', {}))))})" for c in edit.get("tool_calls") or []]
    said = f"answers {short(edit.get('text', ''))!r}"
    return f"the model at {where} {said} and calls {', '.join(calls)}" if calls else f"the model at {where} {said}"


def template(step: StepRecord, before: dict[str, Any] | None) -> None:
    return None
