"""`message`: replace the step's output message, append to it, or substitute in it by regex."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Literal

from pydantic import model_validator

from counterfact.capture import is_recorded_command
from counterfact.interventions._applied import Evidence
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StepPlan,
    short,
)
from counterfact.store import StepRecord, output_text


class MessageEdit(EditSpec):
    """Replace the step's output message, append to it, or substitute by regex."""

    kind: Literal["message"] = "message"
    mode: Literal["replace", "append", "regex"] = "replace"
    text: str = ""
    pattern: str | None = None  # for regex: the text is the replacement

    @model_validator(mode="after")
    def _regex(self) -> MessageEdit:
        if self.mode == "regex":
            if not self.pattern:
                raise ValueError("a regex message edit needs `pattern`")
            try:
                re.compile(self.pattern)
            except re.error as exc:  # pydantic reports ValueErrors only
                raise ValueError(f"pattern is not a regular expression ({exc})") from None
        return self


SPEC: type[EditSpec] = MessageEdit
ORDER = 10


def compile_edit(edit: MessageEdit, context: CompileContext, plan: StepPlan) -> None:
    edited = _edited_text(edit, output_text(context.step.output))
    if context.ours:
        plan.directives.reply = edited
    else:
        plan.directives.output = _with_last_message(context.step, edited, keep_tool_calls=edit.mode != "replace")
    plan.evidence.append(Evidence(kind="seen", value=edit.text if edit.mode != "replace" and edit.text else edited))


def describe(edit: dict[str, Any], where: str) -> str:
    return f"{edit.get('mode', 'replace')} the message at {where} with {short(edit.get('text', ''))!r}"


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "message", "mode": "replace", "text": _shown(step.output) if step.output is not None else ""}


def _shown(output: Any) -> str:
    """The step's output as the viewer shows it: a message's content, else its JSON."""
    if isinstance(output, dict):
        content = output.get("content", "")
        return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, indent=1, default=str)


def _edited_text(edit: MessageEdit, original: str) -> str:
    if edit.mode == "replace":
        return edit.text
    if edit.mode == "append":
        return original + edit.text
    edited = re.sub(edit.pattern or "", edit.text, original)
    if edited == original:
        raise InterventionError(f"pattern {edit.pattern!r} does not occur in the step's message")
    return edited


def _with_last_message(target: StepRecord, text: str, *, keep_tool_calls: bool) -> Any:
    """The step's recorded update with the text of its last message replaced (same id, so
    `add_messages` replaces rather than appends), in whichever channel holds it."""
    delta = copy.deepcopy(target.delta)
    update = delta.get("update") if is_recorded_command(delta) else delta
    if isinstance(update, dict):
        for channel in sorted(update, key=lambda k: k != "messages"):
            value = update[channel]
            message = value[-1] if isinstance(value, list) and value else value
            if isinstance(message, dict) and "content" in message and "role" in message:
                message["content"] = text
                if not keep_tool_calls:
                    message.pop("tool_calls", None)
                return delta
    raise InterventionError(f"step {target.index} ({target.node}) wrote no message to edit; use a state edit")
