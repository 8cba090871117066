"""Handoffs: one agent passing control to another through a `Command`.

LangGraph multi-agent apps (langgraph-supervisor, langgraph-swarm, hand-written ones) hand off
with a tool or a node that returns `Command(goto=AGENT, update=..., graph=Command.PARENT)`.
The recorder keeps who handed off to whom, through which tool, with what message, so that a
trace shows the edges that matter most in a multi-agent failure and a replay can redirect them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from counterfact.capture._payloads import is_recorded_command

# Tool names the multi-agent libraries give their handoff tools ("transfer_to_math",
# "transfer_back_to_supervisor"); a handoff made without a captured tool call (the synthetic
# messages langgraph-supervisor writes when a worker hands back) is known by them alone.
HANDOFF_PREFIX = "transfer_"


class Handoff(BaseModel):
    """Control passed from one agent to others."""

    to: str  # the receiving node(s), comma-separated when a handoff fans out
    text: str = ""  # the message that went with it (a handoff tool's result)
    tool: str | None = None  # the tool that made it, if a tool did


def goto_targets(goto: Any) -> list[str]:
    """The node names a Command's goto sends control to (names, `Send`s, or lists of them)."""
    items = goto if isinstance(goto, (list, tuple)) else [goto]
    names: list[str] = []
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Mapping) and "__send__" in item:  # a recorded Send
            names.append(str(item["__send__"]))
        elif (node := getattr(item, "node", None)) is not None:  # a Send
            names.append(str(node))
    return [n for n in names if n]


def handoff_of(value: Any) -> Handoff | None:
    """The handoff a tool result or node result makes: a `Command` (live, or recorded as
    JSON) with a goto; None for anything else."""
    if is_recorded_command(value):
        goto, update = value["goto"], value["update"]
    elif type(value).__name__ == "Command" and hasattr(value, "goto"):
        goto, update = value.goto, value.update
    else:
        return None
    targets = goto_targets(goto)
    if not targets:
        return None
    return Handoff(to=", ".join(targets), text=_last_text(update))


def _last_text(update: Any) -> str:
    messages = update.get("messages") if isinstance(update, Mapping) else None
    if isinstance(messages, list) and messages:
        last = messages[-1]
        content = last.get("content") if isinstance(last, Mapping) else getattr(last, "content", "")
        return content if isinstance(content, str) else str(content)
    return ""


def is_handoff_message(message: Mapping[str, Any], tools: Iterable[str] = ()) -> bool:
    """Whether a recorded message is only the mechanics of a handoff: an assistant turn that
    calls handoff tools and nothing else, or a handoff tool's reply."""
    names = set(tools)

    def handoff_tool(name: Any) -> bool:
        return isinstance(name, str) and (name in names or name.startswith(HANDOFF_PREFIX))

    if message.get("role") == "tool":
        return handoff_tool(message.get("name"))
    calls = message.get("tool_calls") or []
    return (
        message.get("role") == "assistant"
        and bool(calls)
        and all(handoff_tool(c.get("name")) for c in calls if isinstance(c, Mapping))
    )


def step_output(delta: Any, handoff_tools: Iterable[str] = (), seen: Iterable[str] = ()) -> Any:
    """A step's own output: its newest message if it wrote messages, else its whole update.

    The update of a `Command` counts; messages the step found in the state (`seen`: their
    ids; a handoff's update carries the whole history) and a handoff's own messages (a call
    of a handoff tool, its "transferred" reply) are passed over when the step wrote others:
    what an agent said before handing off is its output."""
    if is_recorded_command(delta):
        delta = delta["update"]
    if isinstance(delta, dict) and isinstance(delta.get("messages"), list) and delta["messages"]:
        old = set(seen)
        messages = [m for m in delta["messages"] if not (isinstance(m, dict) and m.get("id") in old)]
        messages = messages or delta["messages"]
        tools = list(handoff_tools)
        spoken = [m for m in messages if not (isinstance(m, dict) and is_handoff_message(m, tools))]
        return (spoken or messages)[-1]
    return delta
