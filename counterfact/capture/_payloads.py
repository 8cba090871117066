"""Turning Python values into canonical JSON bytes, and those into content digests.

Digests are what the hash chain and the blob table rest on, so the encoding must be stable:
sorted keys, no whitespace, UTF-8, and a fixed way to render the values LangGraph and
LangChain put in state (messages, pydantic models, dataclasses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel


def to_jsonable(value: Any) -> Any:
    """A JSON-compatible rendering of `value` (messages become role/content dicts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [to_jsonable(v) for v in value]
        return sorted(items, key=canonical_json) if isinstance(value, (set, frozenset)) else items
    if _is_langchain_message(value):
        return _message_to_dict(value)
    if type(value).__name__ == "Send" and hasattr(value, "node") and hasattr(value, "arg"):
        return {"__send__": value.node, "arg": to_jsonable(value.arg)}  # a LangGraph Send
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(mode="json", exclude_none=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.sha256(value).hexdigest(), "size": len(value)}
    return repr(value)


MESSAGE_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}  # type -> role


def _is_langchain_message(value: Any) -> bool:
    return hasattr(value, "content") and hasattr(value, "type") and hasattr(value, "id")


def _message_to_dict(message: Any) -> dict[str, Any]:
    role = MESSAGE_ROLES.get(message.type, message.type)
    out: dict[str, Any] = {"role": role, "content": to_jsonable(message.content)}
    for key in ("id", "name", "tool_call_id"):
        if (v := getattr(message, key, None)) is not None:
            out[key] = v
    if tool_calls := getattr(message, "tool_calls", None):
        out["tool_calls"] = to_jsonable(tool_calls)
    return out


def canonical_json(value: Any) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, no insignificant whitespace."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(value: Any) -> str:
    """The digest of a JSON-compatible value's canonical encoding."""
    return sha256_hex(canonical_json(value))


def is_recorded_command(value: Any) -> bool:
    """Whether `value` is a LangGraph `Command` as `to_jsonable` renders one."""
    return isinstance(value, dict) and set(value) == {"graph", "update", "resume", "goto"}


_MESSAGE_CLASSES = {"user": "HumanMessage", "assistant": "AIMessage", "system": "SystemMessage", "tool": "ToolMessage"}


def is_jsonable_message(value: Any) -> bool:
    """Whether `value` is a message as `to_jsonable` renders one."""
    return isinstance(value, dict) and value.get("role") in _MESSAGE_CLASSES and "content" in value


def message_from_jsonable(value: dict[str, Any]) -> Any:
    """The LangChain message `to_jsonable` rendered as `value` (same id, name, tool calls)."""
    import langchain_core.messages as lc

    cls = getattr(lc, _MESSAGE_CLASSES[value["role"]])
    fields = {k: value[k] for k in ("content", "id", "name", "tool_call_id", "tool_calls") if value.get(k) is not None}
    if cls is lc.ToolMessage:
        fields.setdefault("tool_call_id", "")
        fields.pop("tool_calls", None)
    elif cls is not lc.AIMessage:
        fields.pop("tool_calls", None)
        fields.pop("tool_call_id", None)
    return cls(**fields)


def from_jsonable_update(update: Any) -> Any:
    """A node's state update rebuilt from its recorded JSON form, for LangGraph to apply:
    messages become LangChain messages again, and a recorded `Command` a Command."""
    if is_recorded_command(update):
        from langgraph.types import Command

        return Command(
            graph=update["graph"], update=from_jsonable_update(update["update"]),
            resume=update["resume"], goto=_goto(update["goto"]),
        )
    if isinstance(update, dict):
        return {key: _rebuild(value) for key, value in update.items()}
    return update


def _goto(goto: Any) -> Any:
    """A recorded Command's goto: names as they are, recorded `Send`s as Sends again."""
    if goto is None:
        return ()
    if isinstance(goto, list):
        return [_goto(g) for g in goto]
    if isinstance(goto, dict) and "__send__" in goto:
        from langgraph.types import Send

        return Send(goto["__send__"], from_jsonable_update(goto.get("arg")))
    return goto


def _rebuild(value: Any) -> Any:
    if is_jsonable_message(value):
        return message_from_jsonable(value)
    if isinstance(value, list) and value and all(is_jsonable_message(v) for v in value):
        return [message_from_jsonable(v) for v in value]
    return value


def parse_tool_arguments(raw: str | None) -> dict[str, Any]:
    """Tool-call arguments from their JSON text; unparseable text is kept under `_unparsed`."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_unparsed": raw}
    return value if isinstance(value, dict) else {"_unparsed": raw}
