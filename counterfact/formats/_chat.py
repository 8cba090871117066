"""Chat transcripts of multi-agent apps as runs: the shape AutoGen, AG2, Magentic-One and many
homemade loggers write.

A transcript is a JSON list of messages, or an object holding one under a usual key
(`messages`, `chat_history`, `history`, ...), each message with content and an agent name under
one of the usual keys. Every message is a step (see `_messages`), so a labelled mistake step
is a message index. A failure cause the file carries (`mistake_agent`, `mistake_step`, ...) is
stored in the run's labels for `attribute` to score against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from counterfact.formats._base import (
    FORMATS,
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
from counterfact.formats._messages import (
    AUTOGEN_CALLS,
    LIST_KEYS,
    check_messages,
    is_message_list,
    message_steps,
    messages_in,
    text_of,
)
from counterfact.store import RunRecord, utcnow

EXPECTED = ("a JSON list of messages (or an object holding one under " + ", ".join(LIST_KEYS)
            + "), each an object with content and an agent name under agent, source, sender, name or role")


def _parse(path: Path) -> ParsedRun:
    document = load_json(path, EXPECTED)
    found = messages_in(document)
    if found is None:
        raise bad_entry(path, "top level", f"is {kind_of(document)} with no list of messages", EXPECTED)
    where, raw = found
    messages = check_messages(path, where if where != "top level" else "message", raw, EXPECTED)
    autogen = any(m.get("type") in ("TextMessage", AUTOGEN_CALLS) for m in messages)
    steps = message_steps(messages, backend="autogen" if autogen else "chat")
    first = next((s for s in steps if s.kind == "input"), None)
    holder = document if isinstance(document, dict) else {}
    notes: list[str] = []
    labels: dict[str, Any] = {"source_file": path.name, **file_labels(holder, steps, notes)}
    if isinstance(holder.get("stop_reason"), str):
        labels["stop_reason"] = holder["stop_reason"]
    now = utcnow()
    run = RunRecord(
        id=content_id("chat", raw), workflow="autogen" if autogen else "chat",
        task_input={"question": text_of(first.output["content"])} if first is not None else {},
        status="failed" if "mistake_agent" in labels else "succeeded", labels=labels, source="chat",
        total_tokens=sum(c.prompt_tokens + c.completion_tokens for s in steps for c in s.model_calls),
        created_at=steps[0].started_at if steps else now, ended_at=steps[-1].ended_at if steps else now,
    )
    return ParsedRun(where=str(path), run=run, steps=steps, notes=notes)


class ChatFormat(ReadOnlyFormat):
    """Multi-agent chat transcripts (AutoGen, AG2, Magentic-One, homemade loggers)."""

    name = "chat"
    summary = "chat transcripts (AutoGen, AG2, Magentic-One, homemade): one step per message, by its agent"
    noun = "chat transcripts"

    def detect(self, sniff: Sniff) -> bool:
        """Any list of messages no other format claims (a Who&When log or an OpenAI message
        list is a list of messages too, and theirs)."""
        found = messages_in(sniff.document)
        return (found is not None and is_message_list(found[1])
                and not any(fmt.detect(sniff) for fmt in FORMATS.values() if fmt is not self))

    def parse(self, path: Path) -> list[ParsedRun]:
        return [_parse(path)]


register_format(ChatFormat())
