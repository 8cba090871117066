"""The Agent: tool loops with native and text-protocol calls, limits, async, serialisation."""

from __future__ import annotations

from counterfact.agents import (
    Agent,
    ChatMessage,
    Completion,
    GenerationSettings,
    ScriptedChatModel,
    ToolCall,
    calculator_tool,
    lookup_tool,
)
from counterfact.capture import collect_calls

QUESTION = [ChatMessage(role="user", content="What is 6*7?")]


def _call(expression: str, call_id: str = "c1") -> Completion:
    return Completion(
        text="",
        tool_calls=[ToolCall(id=call_id, name="calculator", arguments={"expression": expression})],
    )


def test_native_tool_loop() -> None:
    model = ScriptedChatModel([_call("6*7"), "The answer is 42."])
    agent = Agent(
        name="solver", role="You solve arithmetic.", model=model, tools=[calculator_tool()]
    )
    with collect_calls() as calls:
        reply = agent.respond(QUESTION)
    assert reply.text == "The answer is 42."
    assert [(r.name, r.result) for r in reply.tool_calls] == [("calculator", 42)]
    assert reply.rounds == 1 and not reply.hit_round_limit
    assert len(calls.model_calls) == 2 and len(calls.tool_calls) == 1
    first, second = model.requests
    assert first.messages[0] == ChatMessage(role="system", content="You solve arithmetic.")
    assert first.tools is not None and first.tools[0]["function"]["name"] == "calculator"
    assert second.messages[-2].tool_calls[0].id == "c1"
    assert second.messages[-1] == ChatMessage(
        role="tool", content="42", name="calculator", tool_call_id="c1"
    )
    assert [m.role for m in reply.messages] == ["assistant", "tool", "assistant"]


def test_text_protocol_for_white_box_models() -> None:
    model = ScriptedChatModel(
        ['I will look it up.\nCALL lookup {"key": "capital of france"}', "Paris."],
        white_box=True,
    )
    agent = Agent(
        name="geo",
        role="Answer questions.",
        model=model,
        tools=[lookup_tool({"Capital of France": "Paris"})],
    )
    reply = agent.respond([ChatMessage(role="user", content="Capital of France?")])
    assert reply.text == "Paris."
    first, second = model.requests
    assert first.tools is None
    assert "CALL <tool name>" in first.messages[0].content
    assert second.messages[-1] == ChatMessage(role="user", content="RESULT lookup: Paris")


def test_tool_error_goes_back_to_the_model_and_run_continues() -> None:
    model = ScriptedChatModel([_call("__import__('os')"), "I could not compute it."])
    agent = Agent(name="a", role="r", model=model, tools=[calculator_tool()])
    reply = agent.respond(QUESTION)
    assert reply.text == "I could not compute it."
    assert reply.tool_calls[0].error is not None
    assert model.requests[1].messages[-1].content.startswith("error: unsupported syntax")


def test_unknown_tool_is_an_error_result() -> None:
    wrong = Completion(text="", tool_calls=[ToolCall(id="x", name="search", arguments={})])
    model = ScriptedChatModel([wrong, "ok"])
    reply = Agent(name="a", role="r", model=model, tools=[calculator_tool()]).respond(QUESTION)
    assert reply.tool_calls[0].error == "unknown tool 'search'; available tools: calculator"
    assert reply.text == "ok"


def test_tool_rounds_are_bounded() -> None:
    model = ScriptedChatModel(lambda _: _call("1+1"))
    agent = Agent(name="a", role="r", model=model, tools=[calculator_tool()], max_tool_rounds=2)
    reply = agent.respond(QUESTION)
    assert reply.rounds == 2 and reply.hit_round_limit
    assert len(reply.tool_calls) == 2 and len(model.requests) == 3
    assert reply.messages[-1].tool_calls == []


def test_settings_and_edits_reach_the_model() -> None:
    model = ScriptedChatModel(["hi"], white_box=True)
    settings = GenerationSettings(seed=7, temperature=0.3)
    agent = Agent(name="a", role="r", model=model, settings=settings)
    agent.respond(QUESTION, activation_edits=["edit"])
    assert model.requests[0].settings == settings
    assert model.requests[0].activation_edits == ["edit"]
    assert model.requests[0].tools is None


async def test_async_respond() -> None:
    model = ScriptedChatModel([_call("2**5"), "32"])
    agent = Agent(name="a", role="r", model=model, tools=[calculator_tool()])
    reply = await agent.arespond(QUESTION)
    assert reply.text == "32" and reply.tool_calls[0].result == 32


def test_serialisation_excludes_the_model() -> None:
    agent = Agent(name="a", role="r", model=ScriptedChatModel(["x"]), tools=[calculator_tool()])
    data = agent.model_dump()
    assert "model" not in data
    assert data["tools"] == [{"name": "calculator", "description": calculator_tool().description}]
    assert data["settings"]["max_tokens"] == 256
