"""Chat messages into steps: the mapping every message-list format shares (chat transcripts,
OpenAI chat completions, tau-bench trajectories).

Each message is one step, in order, so a step index is a message index and a label naming
message N names step N. The speaker (the first of `agent`, `source`, `sender`, `name`, `role` a
message has) is the step's node and agent; a user, human or system speaker is an input step, a
tool result a tool step, anyone else an agent step. Tool calls a message makes (OpenAI
`tool_calls` or `function_call`, AutoGen's ToolCallRequestEvent) become its step's tool calls,
and a tool result (role `tool` or `function`, AutoGen's ToolCallExecutionEvent) is filled into
the call it answers. Token counts a message carries (AutoGen's `models_usage`) become a model
call of its step. A step's input is what was said since its speaker last spoke (at its first
turn, everything before it): what was new to it. (Every message before it, as Who&When runs
keep, would cost the store quadratic time on long transcripts: a 10,000-message log would hold
50 million message references.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.formats._imported import bad_entry, kind_of, naive_utc
from counterfact.store import StepKind, StepRecord

AGENT_KEYS = ("agent", "source", "sender", "name", "role")  # most telling first
INPUT_SPEAKERS = frozenset({"user", "human", "system", "developer"})
TOOL_ROLES = frozenset({"tool", "function", "ipython"})
AUTOGEN_CALLS = "ToolCallRequestEvent"
AUTOGEN_RESULTS = "ToolCallExecutionEvent"
LIST_KEYS = ("messages", "chat_history", "history", "transcript", "conversation", "chat", "turns")
def messages_in(document: Any) -> tuple[str, Any] | None:
    """Where a document keeps its messages, and them: the top level list, or the list under the
    first usual key an object has."""
    if isinstance(document, list):
        return "top level", document
    if isinstance(document, dict):
        key = next((k for k in LIST_KEYS if isinstance(document.get(k), list)), None)
        if key is not None:
            return key, document[key]
    return None


def is_message_list(value: Any) -> bool:
    """Whether a value is a non-empty list of messages that each name a speaker."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and speaker_of(m) is not None
                    and ("content" in m or "tool_calls" in m or "function_call" in m) for m in value))




def speaker_of(message: dict[str, Any]) -> str | None:
    """Who said a message: the first agent key it has with a name in it."""
    return next((v.strip() for k in AGENT_KEYS if isinstance(v := message.get(k), str) and v.strip()), None)


def check_messages(path: Path | str, where: str, messages: Any, expected: str) -> list[dict[str, Any]]:
    """`messages` as a list of messages each with a speaker and content (or tool calls), or the
    one-line error naming the first one that is not."""
    if not isinstance(messages, list):
        raise bad_entry(path, where, f"is {kind_of(messages)}", expected)
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_entry(path, f"{where}[{i}]", f"is {kind_of(message)}, not a message object", expected)
        if speaker_of(message) is None:
            raise bad_entry(path, f"{where}[{i}]", f"names no speaker (none of {', '.join(AGENT_KEYS)})", expected)
        if "content" not in message and not message.get("tool_calls") and not message.get("function_call"):
            raise bad_entry(path, f"{where}[{i}]", "has no content and no tool calls", expected)
    return messages


def text_of(content: Any) -> str:
    """A message's content as text: OpenAI's content parts joined, anything else as JSON."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    return json.dumps(content, ensure_ascii=False, default=str)


def _arguments(raw: Any) -> dict[str, Any]:
    """A call's arguments: JSON text parsed where it parses to an object."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return {"input": raw}
    return raw if isinstance(raw, dict) else {"input": raw}


def _calls_made(message: dict[str, Any]) -> list[tuple[str | None, ToolCallRecord]]:
    """The tool calls a message makes, each with the id its result will name."""
    made: list[tuple[str | None, ToolCallRecord]] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            made.append((call.get("id"), ToolCallRecord(name=function["name"], arguments=_arguments(function.get("arguments")))))
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        made.append((None, ToolCallRecord(name=legacy["name"], arguments=_arguments(legacy.get("arguments")))))
    if message.get("type") == AUTOGEN_CALLS and isinstance(message.get("content"), list):
        for call in message["content"]:
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                made.append((call.get("id"), ToolCallRecord(name=call["name"], arguments=_arguments(call.get("arguments")))))
    return made


def _results(message: dict[str, Any]) -> list[tuple[str | None, str | None, Any, bool]]:
    """The tool results a message carries: (call id, tool name, result, is an error)."""
    if message.get("type") == AUTOGEN_RESULTS and isinstance(message.get("content"), list):
        return [(r.get("call_id"), r.get("name"), r.get("content"), bool(r.get("is_error")))
                for r in message["content"] if isinstance(r, dict)]
    if message.get("role") in TOOL_ROLES:
        return [(message.get("tool_call_id"), message.get("name"), message.get("content"), False)]
    return []


def _kind(message: dict[str, Any], speaker: str) -> StepKind:
    if message.get("type") == AUTOGEN_RESULTS or message.get("role") in TOOL_ROLES:
        return "tool"
    if speaker.lower() in INPUT_SPEAKERS:
        return "input"
    return "agent"


def _model_call(message: dict[str, Any], backend: str, request: list[dict[str, Any]],
                response: dict[str, Any]) -> list[ModelCallRecord]:
    """The model call a message's token counts tell of (AutoGen's `models_usage`)."""
    usage = message.get("models_usage") or message.get("usage")
    if not isinstance(usage, dict):
        return []
    return [ModelCallRecord(
        backend=backend, model=str(message.get("model") or "unknown"), request=request, response=response,
        prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
    )]


def _when(message: dict[str, Any]) -> dict[str, datetime]:
    """When a message was said, where it says (AutoGen's `created_at`, a logger's `timestamp`)."""
    raw = message.get("created_at") or message.get("timestamp")
    try:
        when = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return {} if when is None else {"started_at": naive_utc(when), "ended_at": naive_utc(when)}


def message_steps(messages: Sequence[dict[str, Any]], *, backend: str) -> list[StepRecord]:
    """One step per message (checked by `check_messages`), calls and results matched."""
    said: list[dict[str, Any]] = []
    steps: list[StepRecord] = []
    counts: Counter[str] = Counter()
    last_turn: dict[str, int] = {}  # the index of each speaker's latest message
    open_calls: dict[str, ToolCallRecord] = {}  # by call id, or by tool name when there is none
    for index, message in enumerate(messages):
        speaker = speaker_of(message) or ""
        made = _calls_made(message)
        results = _results(message)
        said_text = "" if message.get("type") == AUTOGEN_CALLS else (  # AutoGen's calls and results are lists
            "\n".join(text_of(r) for _, _, r, _ in results) if message.get("type") == AUTOGEN_RESULTS
            else text_of(message.get("content")))
        output: dict[str, Any] = {"role": str(message.get("role") or ("assistant" if made else "user")),
                                  "name": speaker, "content": said_text}
        if message.get("tool_calls"):
            output["tool_calls"] = message["tool_calls"]
        for call_id, name, result, failed in results:
            call = open_calls.pop(call_id or "", None) or open_calls.pop(f"name:{name}", None)
            if call is not None:
                call.error, call.result = (text_of(result), None) if failed else (None, result)
        for call_id, call in made:
            open_calls[call_id or f"name:{call.name}"] = call
        request = said[last_turn.get(speaker, -1) + 1:index]
        steps.append(StepRecord(
            index=index, node=speaker, agent=speaker, invocation=counts[speaker], kind=_kind(message, speaker),
            input=request, output=output, tool_calls=[call for _, call in made],
            model_calls=_model_call(message, backend, request, output), **_when(message),
        ))
        counts[speaker] += 1
        last_turn[speaker] = index
        said.append(output)
    return steps
