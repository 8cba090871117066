"""The scripted backend: deterministic replies from a function, a list or a table."""

from __future__ import annotations

from typing import Any

import pytest

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    ModelError,
    ModelRequest,
    ScriptedChatModel,
    ToolCall,
)
from counterfact.capture import collect_calls


def _user(text: str, **fields: Any) -> ModelRequest:
    messages = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content=text)]
    return ModelRequest(messages=messages, **fields)


def test_list_replies_in_order_then_error() -> None:
    model = ScriptedChatModel(["one", Completion(text="two", finish_reason="length")])
    assert model.complete(_user("a")).text == "one"
    second = model.complete(_user("b"))
    assert (second.text, second.finish_reason, second.model) == ("two", "length", "scripted")
    with pytest.raises(ModelError, match="ran out of replies after 2 calls"):
        model.complete(_user("c"))


def test_list_with_default_keeps_answering() -> None:
    model = ScriptedChatModel(["one"], default="again")
    assert [model.complete(_user("x")).text for _ in range(3)] == ["one", "again", "again"]


def test_function_sees_the_messages() -> None:
    model = ScriptedChatModel(lambda messages: messages[-1].content.upper(), name="upper")
    assert model.complete(_user("shout")).text == "SHOUT"
    assert model.name == "upper"


def test_table_matches_last_user_message() -> None:
    model = ScriptedChatModel({"2+2?": "4", "capital of France?": "Paris"})
    assert model.complete(_user("  2+2? ")).text == "4"
    assert model.complete(_user("capital of France?")).text == "Paris"
    with pytest.raises(ModelError, match="no reply for user message 'other'"):
        model.complete(_user("other"))


def test_tool_calls_set_finish_reason() -> None:
    call = ToolCall(id="c1", name="calculator", arguments={"expression": "1+1"})
    model = ScriptedChatModel([Completion(text="", tool_calls=[call])])
    completion = model.complete(_user("x"))
    assert completion.finish_reason == "tool_calls" and completion.tool_calls == [call]


def test_reports_each_call_and_keeps_requests() -> None:
    model = ScriptedChatModel(["a", "b"])
    settings = GenerationSettings(seed=3, max_tokens=9)
    with collect_calls() as calls:
        model.complete(_user("first", settings=settings))
        model.complete(_user("second"))
    assert [r.response["content"] for r in calls.model_calls] == ["a", "b"]
    assert calls.model_calls[0].backend == "scripted"
    assert calls.model_calls[0].params["seed"] == 3
    assert calls.model_calls[0].request[-1] == {"role": "user", "content": "first"}
    assert model.requests[0].settings == settings
    assert model.requests[1].messages[-1].content == "second"


def test_activation_edits_need_white_box() -> None:
    with pytest.raises(ModelError, match="black-box"):
        ScriptedChatModel(["a"]).complete(_user("x", activation_edits=[{"layer": 0}]))
    model = ScriptedChatModel(["a"], white_box=True)
    model.complete(_user("x", activation_edits=[{"layer": 0}]))
    assert model.requests[0].activation_edits == [{"layer": 0}]


async def test_async_path_uses_the_same_script() -> None:
    model = ScriptedChatModel(["a", "b"])
    assert (await model.acomplete(_user("x"))).text == "a"
    assert model.complete(_user("y")).text == "b"
