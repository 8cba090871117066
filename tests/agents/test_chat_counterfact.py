"""ChatCounterfact: counterfact's models in a user's own LangGraph graph.

Message conversion, tools (native, and the text protocol for white-box models, through a
ToolNode), replay directives (seed, temperature, prefix, activation edits, forced responses,
tools taken away), recording each call once, the shared model cache; and, marked slow, the same
on the embedded model: determinism, seeds, prefix and activation edits, and streaming/async
giving what invoke gives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import ChatMessage as LangChainChatMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from counterfact.agents import (
    ChatCounterfact,
    ChatMessage,
    Completion,
    LocalModel,
    ModelError,
    ScriptedChatModel,
    ToolCall,
    Usage,
    _registry,
    calculate,
    shared_model,
)
from counterfact.agents._langchain import to_chat_messages
from counterfact.capture import (
    SELF_RECORDING,
    CallCapture,
    Directives,
    ModelResponse,
    StepAddress,
    StepDirectives,
    ToolChange,
    at_step,
    collect_calls,
    derive_seed,
    directing,
    install_langchain_hooks,
    with_directives,
)
from counterfact.graphs import record
from counterfact.store import TraceStore

AT_AGENT = StepAddress(run_id="r", node="agent", invocation=0)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return str(calculate(expression))


@tool
def lookup(key: str, exact: bool = False) -> str:
    """Look a fact up by its key."""
    return f"no entry for {key}"


def tool_graph(model: ChatCounterfact) -> StateGraph:
    """An agent node with the calculator, and a ToolNode running its calls."""
    bound = model.bind_tools([calculator])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([calculator]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder


@pytest.fixture
def trace_store(tmp_path: Path) -> Iterator[TraceStore]:
    store = TraceStore.open(str(tmp_path / "trace.db"))
    yield store
    store.close()


# --- messages ---------------------------------------------------------------------------------


HISTORY: list[BaseMessage] = [
    SystemMessage("Be brief."),
    HumanMessage("What is 6*7 and 1+1?", name="ann"),
    AIMessage(
        "Computing.",
        tool_calls=[
            {"id": "c1", "name": "calculator", "args": {"expression": "6*7"}},
            {"id": "c2", "name": "calculator", "args": {"expression": "1+1"}},
        ],
    ),
    ToolMessage("42", tool_call_id="c1", name="calculator"),
    ToolMessage("2", tool_call_id="c2"),  # no name: found from the call
    AIMessage("42 and 2."),
    LangChainChatMessage("Thanks.", role="user"),
]


def test_messages_convert_natively_for_remote_models() -> None:
    assert to_chat_messages(HISTORY) == [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="What is 6*7 and 1+1?", name="ann"),
        ChatMessage(
            role="assistant",
            content="Computing.",
            tool_calls=[
                ToolCall(id="c1", name="calculator", arguments={"expression": "6*7"}),
                ToolCall(id="c2", name="calculator", arguments={"expression": "1+1"}),
            ],
        ),
        ChatMessage(role="tool", content="42", name="calculator", tool_call_id="c1"),
        ChatMessage(role="tool", content="2", name="calculator", tool_call_id="c2"),
        ChatMessage(role="assistant", content="42 and 2."),
        ChatMessage(role="user", content="Thanks."),
    ]


def test_messages_convert_to_the_text_protocol_for_white_box_models() -> None:
    converted = to_chat_messages(HISTORY, text_protocol=True)
    roles = [m.role for m in converted]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert converted[2] == ChatMessage(
        role="assistant",
        content='Computing.\nCALL calculator {"expression": "6*7"}\n'
        'CALL calculator {"expression": "1+1"}',
    )
    assert converted[3] == ChatMessage(
        role="user", content="RESULT calculator: 42\nRESULT calculator: 2"
    )


def test_content_blocks_keep_their_text_and_unknown_messages_are_refused() -> None:
    blocks = HumanMessage(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert to_chat_messages([blocks]) == [ChatMessage(role="user", content="ab")]
    with pytest.raises(ModelError, match="FunctionMessage"):
        to_chat_messages([FunctionMessage("1", name="f")])


# --- settings, metadata, recording ---------------------------------------------------------------


def test_settings_reach_the_backend_and_usage_comes_back() -> None:
    backend = ScriptedChatModel(
        [Completion(text="hi", usage=Usage(prompt_tokens=7, completion_tokens=2), model="m-1")]
    )
    model = ChatCounterfact(
        model=backend, temperature=0.5, max_tokens=9, top_p=0.9, seed=3, stop=["END"]
    )
    reply = model.invoke("hello", stop=["STOP"])
    settings = backend.requests[0].settings
    assert (settings.temperature, settings.max_tokens, settings.top_p, settings.seed) == (
        0.5,
        9,
        0.9,
        3,
    )
    assert settings.stop == ["END", "STOP"]
    assert backend.requests[0].messages == [ChatMessage(role="user", content="hello")]
    assert reply.content == "hi"
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    assert reply.response_metadata == {"finish_reason": "stop", "model_name": "m-1", "seed": 3}
    assert model._identifying_params["model"] == "scripted"


def test_a_sampled_request_without_a_seed_gets_one_and_reports_it() -> None:
    backend = ScriptedChatModel(lambda _: "x")
    greedy = ChatCounterfact(model=backend).invoke("q")
    sampled = ChatCounterfact(model=backend, temperature=1.0).invoke("q")
    assert greedy.response_metadata["seed"] is None and backend.requests[0].settings.seed is None
    seed = backend.requests[1].settings.seed
    assert isinstance(seed, int) and sampled.response_metadata["seed"] == seed


def test_metadata_marks_the_model_as_recorded_by_its_backend() -> None:
    assert ChatCounterfact().metadata is not None
    assert ChatCounterfact().metadata[SELF_RECORDING] is True
    own = ChatCounterfact(metadata={"team": "a"}).metadata
    assert own is not None and own["team"] == "a" and own[SELF_RECORDING] is True

    class Seen(BaseCallbackHandler):
        metadata: dict[str, Any] = {}

        def on_chat_model_start(
            self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any
        ) -> None:
            Seen.metadata = kwargs.get("metadata") or {}

    ChatCounterfact(model=ScriptedChatModel(["ok"])).invoke("q", config={"callbacks": [Seen()]})
    assert Seen.metadata.get(SELF_RECORDING) is True


def test_a_recorded_graph_stores_each_request_once(trace_store: TraceStore) -> None:
    """With the recorder's LangChain hooks and call capture active: the capture records the
    tool call, and leaves the model calls to the backend, which reports each once."""
    install_langchain_hooks()
    backend = ScriptedChatModel(
        ['CALL calculator {"expression": "6*7"}', "It is 42."], white_box=True
    )
    result = record(tool_graph(ChatCounterfact(model=backend)), trace_store).invoke(
        {"messages": [HumanMessage("What is 6*7?")]}, config={"callbacks": [CallCapture()]}
    )
    assert result.status == "succeeded", result.error
    steps = trace_store.steps(result.run_id)
    assert [s.node for s in steps] == ["agent", "tools", "agent"]
    assert [len(s.model_calls) for s in steps] == [1, 0, 1]
    assert [len(s.tool_calls) for s in steps] == [0, 1, 0]
    assert steps[0].model_calls[0].backend == "scripted"
    assert steps[2].model_calls[0].response["content"] == "It is 42."


def test_unknown_call_options_are_refused() -> None:
    model = ChatCounterfact(model=ScriptedChatModel(["x"]))
    with pytest.raises(TypeError, match="frequency_penalty"):
        model.invoke("q", frequency_penalty=1.0)
    with pytest.raises(ValueError, match="extra"):
        ChatCounterfact(modle="embedded")  # type: ignore[call-arg]


# --- tools --------------------------------------------------------------------------------------


def test_text_protocol_round_trip_through_a_tool_node() -> None:
    backend = ScriptedChatModel(
        ['Let me compute.\nCALL calculator {"expression": "6*7"}', "It is 42."], white_box=True
    )
    graph = tool_graph(ChatCounterfact(model=backend)).compile()
    state = graph.invoke({"messages": [SystemMessage("Use tools."), HumanMessage("6*7?")]})
    asked, result, answer = state["messages"][2:]
    assert isinstance(asked, AIMessage) and asked.content == "Let me compute."
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [
        ("calculator", {"expression": "6*7"})
    ]
    assert asked.tool_calls[0]["id"].startswith("call_")
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    assert isinstance(result, ToolMessage) and result.content == "42"
    assert answer.content == "It is 42." and not answer.tool_calls
    first, second = backend.requests
    assert first.tools is None
    system = first.messages[0]
    assert system.role == "system" and system.content.startswith("Use tools.\n\nYou can use tools.")
    described = 'calculator: Evaluate an arithmetic expression. Arguments: {"expression": <string>}'
    assert described in system.content
    assert "RESULT calculator" in first.settings.stop
    assert second.messages[-2:] == [
        ChatMessage(
            role="assistant", content='Let me compute.\nCALL calculator {"expression": "6*7"}'
        ),
        ChatMessage(role="user", content="RESULT calculator: 42"),
    ]


def test_text_protocol_describes_every_argument_and_adds_a_system_message() -> None:
    backend = ScriptedChatModel(["CALL lookup paris"], white_box=True)
    reply = ChatCounterfact(model=backend).bind_tools([calculator, lookup]).invoke("Where?")
    system = backend.requests[0].messages[0]
    assert system.role == "system" and system.content.startswith("You can use tools.")
    described = 'lookup: Look a fact up by its key. Arguments: {"key": <string>, "exact": <boolean'
    assert described in system.content
    assert isinstance(reply, AIMessage)
    assert reply.content == "" and reply.tool_calls[0]["name"] == "lookup"


def test_native_tools_for_remote_models() -> None:
    call = ToolCall(id="t1", name="calculator", arguments={"expression": "2+3"})
    backend = ScriptedChatModel([Completion(text="", tool_calls=[call]), "Five."])
    graph = tool_graph(ChatCounterfact(model=backend)).compile()
    state = graph.invoke({"messages": [HumanMessage("2+3?")]})
    asked = state["messages"][1]
    assert isinstance(asked, AIMessage)
    assert asked.tool_calls == [
        {"type": "tool_call", "id": "t1", "name": "calculator", "args": {"expression": "2+3"}}
    ]
    assert state["messages"][-1].content == "Five."
    first, second = backend.requests
    assert first.tools is not None and first.tools[0]["function"]["name"] == "calculator"
    assert len(first.messages) == 1 and "RESULT calculator" not in first.settings.stop
    assert second.messages[-2].tool_calls == [call]
    assert second.messages[-1] == ChatMessage(
        role="tool", content="5", name="calculator", tool_call_id="t1"
    )


def test_tool_choice_narrows_the_tools_offered() -> None:
    backend = ScriptedChatModel(lambda _: "x")
    model = ChatCounterfact(model=backend)
    model.bind_tools([calculator, lookup], tool_choice="lookup").invoke("q")
    model.bind_tools([calculator, lookup], tool_choice="none").invoke("q")
    model.bind_tools([calculator, lookup], tool_choice="any").invoke("q")
    offered = [[t["function"]["name"] for t in r.tools or []] for r in backend.requests]
    assert offered == [["lookup"], [], ["calculator", "lookup"]]
    with pytest.raises(ValueError, match="bound tools: calculator"):
        model.bind_tools([calculator], tool_choice="search")


# --- replay directives ----------------------------------------------------------------------------


EDIT = {"layer": [1], "component": "residual", "positions": "all", "operation": "scale"}


def test_directives_reach_the_backend() -> None:
    backend = ScriptedChatModel([" continued"], white_box=True)
    directives = Directives(
        seed=1,
        temperature=0.7,
        steps={"agent#0": StepDirectives(prefix="X", activation_edits=[EDIT])},
    )
    with directing(AT_AGENT, directives):
        reply = ChatCounterfact(model=backend, seed=99).invoke("q")
    request = backend.requests[0]
    assert request.settings.seed == derive_seed(1, "agent", 0)
    assert request.settings.temperature == 0.7
    assert request.activation_edits == [EDIT]
    assert request.messages[-1] == ChatMessage(role="assistant", content="X")
    assert reply.content == "X continued"
    assert reply.response_metadata["seed"] == derive_seed(1, "agent", 0)


def test_a_prefix_the_model_repeats_is_not_doubled() -> None:
    backend = ScriptedChatModel(["X and more"])
    with directing(AT_AGENT, Directives(seed=1, steps={"agent#0": StepDirectives(prefix="X")})):
        reply = ChatCounterfact(model=backend).invoke("q")
    assert reply.content == "X and more"


def test_directives_for_another_step_change_nothing() -> None:
    backend = ScriptedChatModel(["plain"], white_box=True)
    other = Directives(steps={"agent#1": StepDirectives(prefix="X", activation_edits=[EDIT])})
    with directing(AT_AGENT, other):
        reply = ChatCounterfact(model=backend, seed=4).invoke("q")
    request = backend.requests[0]
    assert reply.content == "plain" and request.activation_edits is None
    assert request.settings.seed == 4 and request.messages[-1].role == "user"


def test_a_forced_response_stands_for_its_call_and_is_recorded() -> None:
    forced = ModelResponse(
        call=1, content="forced", tool_calls=[{"name": "calculator", "args": {"expression": "1"}}]
    )
    backend = ScriptedChatModel(["live"], white_box=True)
    model = ChatCounterfact(model=backend).bind_tools([calculator])
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})
    with collect_calls() as calls, directing(AT_AGENT, directives):
        first = model.invoke("a")  # call 0: the model answers
        (second,) = model.stream("b")  # call 1: forced, counted once though streamed
    assert first.content == "live" and len(backend.requests) == 1
    assert second.content == "forced"
    assert [(c["name"], c["args"]) for c in second.tool_calls] == [
        ("calculator", {"expression": "1"})
    ]
    assert second.tool_calls[0]["id"]
    assert [c.response["content"] for c in calls.model_calls] == ["live", "forced"]
    recorded = calls.model_calls[1]
    assert recorded.params["forced"] is True and recorded.finish_reason == "tool_calls"
    assert recorded.response["tool_calls"][0]["name"] == "calculator"


def test_a_forced_response_is_taken_verbatim_under_a_prefix() -> None:
    here = StepDirectives(prefix="X", model_responses=[ModelResponse(content="Y")])
    with directing(AT_AGENT, Directives(steps={"agent#0": here})):
        reply = ChatCounterfact(model=ScriptedChatModel([])).invoke("q")
    assert reply.content == "Y"


def test_tools_a_replay_took_away_are_not_offered() -> None:
    backend = ScriptedChatModel(lambda _: "x", white_box=True)
    remove = ToolChange(agent="agent", tool="lookup", action="remove", from_step="agent#0")
    with at_step(AT_AGENT), directing(AT_AGENT, Directives(tool_changes=[remove])):
        ChatCounterfact(model=backend).bind_tools([calculator, lookup]).invoke("q")
    system = backend.requests[0].messages[0].content
    assert "- calculator:" in system and "- lookup:" not in system


def test_activation_edits_are_refused_for_black_box_models() -> None:
    backend = ScriptedChatModel(["x"], name="remote-gpt")
    edited = Directives(steps={"agent#0": StepDirectives(activation_edits=[EDIT])})
    with directing(AT_AGENT, edited):
        with pytest.raises(ModelError, match="'remote-gpt'.*black-box"):
            ChatCounterfact(model=backend).invoke("q")
    assert backend.requests == []


# --- streaming and async ------------------------------------------------------------------------


def test_stream_yields_the_whole_reply_as_one_chunk() -> None:
    call = ToolCall(id="t1", name="calculator", arguments={"expression": "1"})
    backend = ScriptedChatModel([Completion(text="ok", tool_calls=[call])])
    chunks = list(ChatCounterfact(model=backend).bind_tools([calculator]).stream("q"))
    assert len(chunks) == 1
    assert chunks[0].content == "ok" and chunks[0].tool_calls[0]["id"] == "t1"
    assert chunks[0].response_metadata["finish_reason"] == "tool_calls"


async def test_async_invoke_and_stream_use_the_backend() -> None:
    backend = ScriptedChatModel(lambda messages: messages[-1].content.upper())
    model = ChatCounterfact(model=backend)
    assert (await model.ainvoke("abc")).content == "ABC"
    assert [c.content async for c in model.astream("de")] == ["DE"]
    assert len(backend.requests) == 2


# --- the shared model cache ---------------------------------------------------------------------


def test_a_spec_is_resolved_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def resolve(spec: str) -> ScriptedChatModel:
        loads.append(spec)
        time.sleep(0.05)  # a slow load: without the lock, waiting threads would load again
        return ScriptedChatModel(lambda _: "x", name=spec)

    monkeypatch.setattr(_registry, "_shared", {})
    monkeypatch.setattr(_registry, "resolve_model", resolve)
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(shared_model("local:m"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["local:m"] and all(model is got[0] for model in got)
    assert ChatCounterfact(model=" local:m ").chat_model is got[0]
    assert ChatCounterfact(model="local:n").chat_model is not got[0]
    assert loads == ["local:m", "local:n"]


# --- the embedded model -------------------------------------------------------------------------

QUESTION = "Write one sentence about the sea."


@pytest.fixture(scope="module")
def greedy_answer() -> str:
    return str(ChatCounterfact(model="embedded", max_tokens=12).invoke(QUESTION).content)


@pytest.mark.slow
def test_greedy_answers_repeat_exactly(embedded: LocalModel, greedy_answer: str) -> None:
    model = ChatCounterfact(model="embedded", max_tokens=12)
    assert model.chat_model is embedded
    reply = model.invoke(QUESTION)
    assert greedy_answer and reply.content == greedy_answer
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["model_name"] == embedded.name


@pytest.mark.slow
def test_a_seed_fixes_the_sampled_answer() -> None:
    def sample(seed: int) -> str:
        model = ChatCounterfact(model="embedded", max_tokens=12, temperature=1.0, seed=seed)
        return str(model.invoke(QUESTION).content)

    first = sample(5)
    assert sample(5) == first
    assert any(sample(seed) != first for seed in (6, 7, 8))


@pytest.mark.slow
def test_a_prefix_edit_starts_the_answer(greedy_answer: str) -> None:
    prefix = "Bananas are"
    assert not greedy_answer.startswith(prefix)
    with directing(AT_AGENT, Directives(steps={"agent#0": StepDirectives(prefix=prefix)})):
        reply = ChatCounterfact(model="embedded", max_tokens=12).invoke(QUESTION)
    assert isinstance(reply.content, str)
    assert reply.content.startswith(prefix) and len(reply.content) > len(prefix)


@pytest.mark.slow
def test_an_activation_edit_changes_the_answer(embedded: LocalModel, greedy_answer: str) -> None:
    size = embedded.geometry.hidden_size
    vector = torch.randn(size, generator=torch.Generator().manual_seed(0)).tolist()
    edit = {
        "layer": [10],
        "component": "residual",
        "positions": "all",
        "operation": "add",
        "vector": vector,
        "strength": 8.0,
    }
    edited = Directives(steps={"agent#0": StepDirectives(activation_edits=[edit])})
    with directing(AT_AGENT, edited):
        reply = ChatCounterfact(model="embedded", max_tokens=12).invoke(QUESTION)
    assert reply.content != greedy_answer


@pytest.mark.slow
async def test_stream_and_async_give_what_invoke_gives(greedy_answer: str) -> None:
    model = ChatCounterfact(model="embedded", max_tokens=12)
    assert "".join(str(c.content) for c in model.stream(QUESTION)) == greedy_answer
    assert (await model.ainvoke(QUESTION)).content == greedy_answer
    assert "".join([str(c.content) async for c in model.astream(QUESTION)]) == greedy_answer


@pytest.mark.slow
def test_the_embedded_model_calls_a_tool_node_and_is_recorded_once(
    trace_store: TraceStore,
) -> None:
    """A prefix forces the CALL line, so the real model's text goes through the protocol; the
    answer node has no tools, so whatever the model writes there the run ends."""
    model = ChatCounterfact(model="embedded", max_tokens=12)
    bound = model.bind_tools([calculator])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [bound.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode([calculator]))
    builder.add_node("answer", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "tools")
    builder.add_edge("tools", "answer")
    forced = Directives(
        steps={"agent#0": StepDirectives(prefix='CALL calculator {"expression": "6*7"}')}
    )
    result = record(builder, trace_store).invoke(
        {"messages": [HumanMessage("What is 6*7?")]}, config=with_directives(None, forced)
    )
    assert result.status == "succeeded", result.error
    steps = trace_store.steps(result.run_id)
    assert [s.node for s in steps] == ["agent", "tools", "answer"]
    assert [len(s.model_calls) for s in steps] == [1, 0, 1]
    asked, answered = steps[0].model_calls[0], steps[2].model_calls[0]
    assert asked.backend == "local" and "RESULT calculator" in asked.params["stop"]
    assert (asked.request[-1]["role"], asked.request[-1]["content"]) == (
        "assistant",
        'CALL calculator {"expression": "6*7"}',
    )
    messages = result.state["messages"] if result.state else []
    assert messages[1].tool_calls[0]["args"] == {"expression": "6*7"}
    assert messages[2].content == "42"
    assert (answered.request[-1]["role"], answered.request[-1]["content"]) == (
        "user",
        "RESULT calculator: 42",
    )
