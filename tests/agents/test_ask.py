"""Asking a model again, with a reminder, when its answer cannot be read."""

from __future__ import annotations

import pytest

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    ScriptedChatModel,
    UnreadableAnswer,
    ask_readable,
)


def _number(text: str) -> int:
    if not text.strip().isdigit():
        raise UnreadableAnswer(f"not a number: {text!r}")
    return int(text)


def _model(*answers: str) -> tuple[ScriptedChatModel, list[list[ChatMessage]]]:
    seen: list[list[ChatMessage]] = []
    replies = iter(answers)

    def answer(messages: list[ChatMessage]) -> Completion:
        seen.append(list(messages))
        return Completion(text=next(replies))

    return ScriptedChatModel(answer), seen


def test_an_unreadable_answer_is_asked_again_with_the_reminder_in_the_same_conversation() -> None:
    model, seen = _model("forty-two", "42")
    exchanges: list[str] = []
    value = ask_readable(
        model, [ChatMessage(role="user", content="how many?")], GenerationSettings(), _number,
        "Reply with digits only.", on_completion=lambda _, completion: exchanges.append(completion.text),
    )
    assert value == 42
    assert exchanges == ["forty-two", "42"]
    assert [(m.role, m.content) for m in seen[1]] == [
        ("user", "how many?"), ("assistant", "forty-two"), ("user", "Reply with digits only.")
    ]


def test_a_readable_first_answer_asks_once() -> None:
    model, seen = _model("7")
    assert ask_readable(model, [ChatMessage(role="user", content="q")], GenerationSettings(), _number, "r") == 7
    assert len(seen) == 1


def test_the_last_unreadable_answer_propagates_after_the_attempts() -> None:
    model, seen = _model("a", "b", "c")
    with pytest.raises(UnreadableAnswer, match="not a number: 'c'"):
        ask_readable(model, [ChatMessage(role="user", content="q")], GenerationSettings(), _number, "r", attempts=3)
    assert len(seen) == 3
