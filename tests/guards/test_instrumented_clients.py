"""A user's own openai client after `instrument(client)`, the real SDK against counterfact's
OpenAI-compatible server on loopback (answering from a script, keeping every request):

- tool calls that arrive in a stream are recorded with the call, as those of a plain call are;
- a stream the user closes before its end is recorded, with what it delivered so far (the
  module promises a stream is reported "once its stream is used up or closed");
- the async client, like the sync one, honours a replay's removed tools and step instruction:
  the removed tool is not sent, the note is, and the record shows what was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from counterfact.agents import (
    ChatMessage,
    Completion,
    ScriptedChatModel,
    ToolCall,
    Usage,
    create_app,
    running_server,
)
from counterfact.capture import (
    Directives,
    StepAddress,
    StepCalls,
    StepDirectives,
    ToolChange,
    at_step,
    collect_calls,
    directing,
    instrument,
)
from counterfact.graphs import record
from counterfact.store import TraceStore

MODEL = "guard-model"
KEY = "sk-guard"
NOTE = "Use only the numbers the tools gave you."
ADD_CALLS = [
    {"id": "call_x", "name": "add", "arguments": {"a": 1, "b": 2}},
    {"id": "call_y", "name": "add", "arguments": {"a": 3, "b": 4}},
]


def _spec(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": name, "parameters": {"type": "object"}}}


def _script(messages: list[ChatMessage]) -> Completion:
    usage = Usage(prompt_tokens=5, completion_tokens=2)
    if messages[-1].content == "add twice":
        calls = [ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"]) for c in ADD_CALLS]
        return Completion(text="adding", tool_calls=calls, usage=usage)
    return Completion(text=f"echo: {messages[-1].content}", usage=usage)


@pytest.fixture(scope="module")
def server() -> ScriptedChatModel:
    return ScriptedChatModel(_script, name=MODEL)


@pytest.fixture(scope="module")
def base_url(server: ScriptedChatModel) -> Iterator[str]:
    with running_server(create_app(server)) as url:
        yield url


def _single_node(node: Any) -> StateGraph:
    graph = StateGraph(MessagesState)
    graph.add_node("agent", node)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph


@contextmanager
def _in_step(directives: Directives | None = None) -> Iterator[StepCalls]:
    """Inside step agent#0 of a run, as the recorder opens one around a node (a replayed one
    with `directives`)."""
    address = StepAddress(run_id="r", node="agent", invocation=0)
    with collect_calls() as calls, at_step(address), directing(address, directives or Directives()):
        yield calls


# -- streamed tool calls ------------------------------------------------------------------------


def test_streamed_tool_calls_are_recorded(sqlite_path: str, base_url: str) -> None:
    client = instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))

    def node(state: MessagesState) -> dict[str, Any]:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "add twice"}], tools=[_spec("add")],
            stream=True, stream_options={"include_usage": True},
        )
        names = [call.function.name for chunk in stream if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
        return {"messages": [AIMessage(",".join(names))]}

    store = TraceStore.open(sqlite_path)
    result = record(_single_node(node), store).invoke({"messages": [("user", "go")]})
    assert result.status == "succeeded", result.error
    (step,) = store.steps(result.run_id)
    assert step.output["content"] == "add,add"  # the user's code saw both calls in the stream
    (call,) = step.model_calls
    assert call.response == {"content": "adding", "tool_calls": ADD_CALLS}
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 5, 2)
    assert call.params["tools"] == ["add"]


@pytest.mark.asyncio
async def test_streamed_tool_calls_of_the_async_client_are_recorded(base_url: str) -> None:
    client = instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    with _in_step() as calls:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "add twice"}], tools=[_spec("add")], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks
    (call,) = calls.model_calls
    assert call.response == {"content": "adding", "tool_calls": ADD_CALLS}
    assert call.finish_reason == "tool_calls"


# -- streams closed early -----------------------------------------------------------------------


def test_a_stream_closed_early_is_recorded(base_url: str, server: ScriptedChatModel) -> None:
    client = instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    before = len(server.requests)
    with _in_step() as calls:
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "first"}], stream=True)
        role, text = next(stream), next(stream)  # the role's chunk, then the text's; no finish yet
        stream.close()
        with client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "second"}], stream=True
        ) as second:
            for _ in second:
                break  # leaving the block closes the stream
    assert len(server.requests) == before + 2
    assert role.choices[0].delta.role == "assistant" and text.choices[0].delta.content == "echo: first"
    first, left = calls.model_calls
    assert first.request == [{"role": "user", "content": "first"}]
    assert first.response == {"content": "echo: first", "tool_calls": []}  # what it delivered
    assert first.finish_reason is None  # it never finished
    assert left.request == [{"role": "user", "content": "second"}] and left.finish_reason is None


@pytest.mark.asyncio
async def test_an_async_stream_closed_early_is_recorded(base_url: str) -> None:
    client = instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    with _in_step() as calls:
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "first"}], stream=True)
        await stream.__anext__()
        await stream.__anext__()
        await stream.close()
        async with await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "second"}], stream=True
        ) as second:
            async for _ in second:
                break
    first, left = calls.model_calls
    assert first.response == {"content": "echo: first", "tool_calls": []} and first.finish_reason is None
    assert left.request == [{"role": "user", "content": "second"}] and left.finish_reason is None


# -- a replay's removed tools and instruction -------------------------------------------------------


def _replay_directives() -> Directives:
    return Directives(
        steps={"agent#0": StepDirectives(instruction=NOTE)},
        tool_changes=[ToolChange(agent="agent", tool="add", action="remove", from_step="agent#0")],
    )


def _assert_sent_as_the_replay_says(server: ScriptedChatModel, before: int, calls: StepCalls) -> None:
    sent = server.requests[before:]
    assert len(sent) == 2
    for request in sent:
        assert [t["function"]["name"] for t in request.tools or []] == ["multiply"]  # `add` taken away
        assert [(m.role, m.content) for m in request.messages] == [("user", "hi"), ("user", NOTE)]
    assert len(calls.model_calls) == 2
    for call in calls.model_calls:  # the record shows what was sent
        assert call.params["tools"] == ["multiply"]
        assert call.request == [{"role": "user", "content": "hi"}, {"role": "user", "content": NOTE}]


def test_the_sync_client_honours_removed_tools_and_the_instruction(base_url: str, server: ScriptedChatModel) -> None:
    client = instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    before = len(server.requests)
    with _in_step(_replay_directives()) as calls:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       tools=[_spec("add"), _spec("multiply")])
        list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            tools=[_spec("add"), _spec("multiply")], stream=True))
    _assert_sent_as_the_replay_says(server, before, calls)


@pytest.mark.asyncio
async def test_the_async_client_honours_removed_tools_and_the_instruction(base_url: str, server: ScriptedChatModel) -> None:
    client = instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    before = len(server.requests)
    with _in_step(_replay_directives()) as calls:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                             tools=[_spec("add"), _spec("multiply")])
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                      tools=[_spec("add"), _spec("multiply")], stream=True)
        [chunk async for chunk in stream]
    _assert_sent_as_the_replay_says(server, before, calls)
    # outside a replayed step the same client sends what it is given
    with _in_step() as plain:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                             tools=[_spec("add"), _spec("multiply")])
    assert [t["function"]["name"] for t in server.requests[-1].tools or []] == ["add", "multiply"]
    assert plain.model_calls[0].request == [{"role": "user", "content": "hi"}]
