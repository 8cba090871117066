"""OpenAI chat-completions message lists as runs: what an app sends to (and gets back from) the
chat completions API, tool calls and tool results included.

Each message is checked against the OpenAI SDK's own message types (by its role) and becomes a
step (see `_messages`): the assistant's `tool_calls` are its step's tool calls, and each `tool`
message is a tool step whose content is also filled in as its call's result. A list whose
messages name agents (`name` on user or assistant messages, `agent`, `source`, `sender`) is a
multi-agent transcript, left to the `chat` format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionDeveloperMessageParam,
    ChatCompletionFunctionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionUserMessageParam,
)
from pydantic import TypeAdapter, ValidationError

from counterfact._errors import validation_message
from counterfact.formats._base import (
    Sniff,
    register_format,
)
from counterfact.formats._imported import (
    ParsedRun,
    ReadOnlyFormat,
    bad_entry,
    content_id,
    kind_of,
    load_json,
)
from counterfact.formats._labels import file_labels
from counterfact.formats._messages import message_steps, messages_in, text_of
from counterfact.store import RunRecord, StepRecord, utcnow

ROLES: dict[str, TypeAdapter[Any]] = {
    "system": TypeAdapter(ChatCompletionSystemMessageParam),
    "developer": TypeAdapter(ChatCompletionDeveloperMessageParam),
    "user": TypeAdapter(ChatCompletionUserMessageParam),
    "assistant": TypeAdapter(ChatCompletionAssistantMessageParam),
    "tool": TypeAdapter(ChatCompletionToolMessageParam),
    "function": TypeAdapter(ChatCompletionFunctionMessageParam),
}
EXPECTED = ("OpenAI chat-completions messages (a JSON list, or an object holding one under messages), each with "
            "a role of " + ", ".join(ROLES) + " and the fields the chat completions API gives that role")


def is_openai_messages(value: Any) -> bool:
    """A non-empty list of messages of OpenAI's roles that name no agents."""
    return (isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and m.get("role") in ROLES and not any(k in m for k in ("agent", "source", "sender"))
        and ("name" not in m or m["role"] in ("tool", "function")) for m in value))


def check_openai(path: Path | str, where: str, messages: Any) -> list[dict[str, Any]]:
    """The messages, each valid for its role by the OpenAI SDK's types, or the one-line error
    naming the first that is not."""
    if not isinstance(messages, list):
        raise bad_entry(path, where, f"is {kind_of(messages)}", EXPECTED)
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            problem = f"has role {role!r}" if isinstance(message, dict) else f"is {kind_of(message)}"
            raise bad_entry(path, f"{where}[{i}]", problem, EXPECTED)
        try:  # a field sent as null is a field not sent (SDKs' model_dump() writes both)
            ROLES[role].validate_python({k: v for k, v in message.items() if v is not None})
        except ValidationError as exc:
            raise bad_entry(path, f"{where}[{i}] ({role})", validation_message(exc, message), EXPECTED) from None
    return messages


def question_of(steps: Sequence[StepRecord]) -> dict[str, Any]:
    """The task a conversation starts from: its first user message."""
    first = next((s for s in steps if s.kind == "input" and s.output["role"] == "user"), None)
    return {"question": text_of(first.output["content"])} if first is not None else {}


def _parse(path: Path) -> ParsedRun:
    document = load_json(path, EXPECTED)
    found = messages_in(document)
    if found is None:
        raise bad_entry(path, "top level", f"is {kind_of(document)} with no list of messages", EXPECTED)
    where, raw = found
    messages = check_openai(path, "message" if where == "top level" else where, raw)
    steps = message_steps(messages, backend="openai")
    holder = document if isinstance(document, dict) else {}
    notes: list[str] = []
    labels = {"source_file": path.name, **file_labels(holder, steps, notes)}
    now = utcnow()
    run = RunRecord(
        id=content_id("openai", messages), workflow=str(holder.get("model") or "openai"), task_input=question_of(steps),
        status="failed" if "mistake_agent" in labels else "succeeded", labels=labels, source="openai",
        created_at=now, ended_at=now,
    )
    return ParsedRun(where=str(path), run=run, steps=steps, notes=notes)


class OpenAIFormat(ReadOnlyFormat):
    """OpenAI chat-completions message lists, tool calls and results included."""

    name = "openai"
    summary = "OpenAI chat-completions messages: one step per message, tool calls with their results"
    noun = "OpenAI message lists"

    def detect(self, sniff: Sniff) -> bool:
        found = messages_in(sniff.document)
        return found is not None and is_openai_messages(found[1])

    def parse(self, path: Path) -> list[ParsedRun]:
        return [_parse(path)]


register_format(OpenAIFormat())
