"""Ask a model for an answer in a set format, once more with a reminder if it cannot be read.

Used wherever counterfact itself reads a model's answer (attribution, the debugger's
hypotheses): a model without structured output sometimes answers in the wrong shape, and one
reminder in the same conversation usually mends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from counterfact._errors import CounterfactError
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelRequest,
)

T = TypeVar("T")


class UnreadableAnswer(CounterfactError):
    """A model's answer is not in the format asked for; the message says what was missing."""


def ask_readable(
    model: ChatModel,
    messages: list[ChatMessage],
    settings: GenerationSettings,
    read: Callable[[str], T],
    reminder: str,
    *,
    attempts: int = 2,
    on_completion: Callable[[list[ChatMessage], Completion], None] | None = None,
) -> T:
    """What `read` makes of the model's answer. `read` raises `UnreadableAnswer` for an answer
    it cannot read; the model is then shown `reminder` and asked again, up to `attempts` times
    in all, and the last `UnreadableAnswer` propagates. `on_completion` sees every exchange
    (for counting questions and tokens)."""
    conversation = list(messages)
    for attempt in range(1, attempts + 1):
        completion = model.complete(ModelRequest(messages=conversation, settings=settings))
        if on_completion is not None:
            on_completion(conversation, completion)
        try:
            return read(completion.text)
        except UnreadableAnswer:
            if attempt == attempts:
                raise
            conversation += [
                ChatMessage(role="assistant", content=completion.text),
                ChatMessage(role="user", content=reminder),
            ]
    raise ValueError(f"attempts must be at least 1, got {attempts}")
