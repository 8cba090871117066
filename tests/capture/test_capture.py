"""Recording and replaying a user's own LangChain models, tools and openai clients.

Everything is real but the model: LangGraph graphs with the real `ChatOpenAI`, `ToolNode` and the
real openai SDK, talking HTTP to counterfact's OpenAI-compatible server on loopback, which
answers from a script and keeps every request it received.
"""

from __future__ import annotations

import functools
import operator
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from sqlalchemy import select

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    ScriptedChatModel,
    ToolCall,
    Usage,
    create_app,
    running_server,
)
from counterfact.capture import (
    CallCapture,
    Directives,
    ModelResponse,
    StepAddress,
    StepCalls,
    StepDirectives,
    ToolChange,
    at_step,
    collect_calls,
    directing,
    install_langchain_hooks,
    instrument,
    tool_call_key,
    with_directives,
    without_removed_tools,
)
from counterfact.graphs import RecordedGraph, record
from counterfact.store import TraceStore
from counterfact.store.schema import Blob, ModelCall

KEY = "sk-" + "k" * 40  # looks like an OpenAI key: it must never reach the store
MODEL = "test-model"
RAN: list[tuple[str, dict[str, Any]]] = []  # tool executions, to tell a forced result from a run

install_langchain_hooks()
# ChatOpenAI shares one async HTTP client per endpoint: its connections must outlive each test
shared_loop = pytest.mark.asyncio(loop_scope="module")


def _script(messages: list[ChatMessage]) -> Completion:
    last = messages[-1]
    usage = Usage(prompt_tokens=7, completion_tokens=3)
    if last.role == "tool":
        results = [m.content for m in messages if m.role == "tool"]
        return Completion(text=f"result: {', '.join(results)}", usage=usage)
    calls = {
        "add 2 and 3": [ToolCall(id="call_add", name="add", arguments={"a": 2, "b": 3})],
        "add twice": [
            ToolCall(id="call_x", name="add", arguments={"a": 1, "b": 2}),
            ToolCall(id="call_y", name="add", arguments={"a": 3, "b": 4}),
        ],
        "break it": [ToolCall(id="call_fail", name="fail", arguments={"x": 1})],
    }.get(last.content)
    if calls:
        return Completion(text="", tool_calls=calls, usage=usage)
    return Completion(text=f"echo: {last.content}", usage=usage)


@pytest.fixture(scope="module")
def server() -> ScriptedChatModel:
    return ScriptedChatModel(_script, name=MODEL)


@pytest.fixture(scope="module")
def base_url(server: ScriptedChatModel) -> Iterator[str]:
    with running_server(create_app(server)) as url:
        yield url


@pytest.fixture
def chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=base_url, api_key=KEY, max_retries=0)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    RAN.append(("add", {"a": a, "b": b}))
    return a + b


@tool
async def amul(a: int, b: int) -> int:
    """Multiply two integers (a coroutine)."""
    RAN.append(("amul", {"a": a, "b": b}))
    return a * b


@tool
def fail(x: int) -> int:
    """Always fails."""
    raise ValueError(f"no luck with {x}")


SPEC = {  # `add` as the openai SDK is given it
    "type": "function",
    "function": {"name": "add", "description": "Add.", "parameters": {"type": "object"}},
}


def agent_graph(model: ChatOpenAI, *, asynchronous: bool = False) -> StateGraph:
    """A tool-calling agent: the model, a ToolNode, and the loop between them."""
    bound = model.bind_tools([add, fail])

    def prompt(state: MessagesState) -> list[BaseMessage]:
        return [SystemMessage("be brief"), *state["messages"]]

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(prompt(state), stop=["END"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(prompt(state), stop=["END"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", aagent if asynchronous else agent)
    graph.add_node("tools", ToolNode([add, fail], handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


def single_node(node: Any) -> StateGraph:
    graph = StateGraph(MessagesState)
    graph.add_node("agent", node)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph


def captured(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run config with a `CallCapture` (the recorder may add its own: calls are kept once)."""
    return {**(config or {}), "callbacks": [CallCapture()]}


def run(recorded: RecordedGraph, text: str, config: dict[str, Any] | None = None) -> str:
    result = recorded.invoke({"messages": [("user", text)]}, config=captured(config))
    assert result.status == "succeeded", result.error
    return result.run_id


async def arun(recorded: RecordedGraph, text: str) -> str:
    """A recorded run of a graph with async nodes (executed by `ainvoke`)."""
    graph_input = {"messages": [("user", text)]}
    run_id = recorded.start_run(graph_input)
    recorded.saver.attach(run_id, recorded.store.run_writer(run_id))
    try:
        config = recorded.config(run_id, captured())
        await recorded.graph.ainvoke(graph_input, config, durability="sync")
    finally:
        recorded.saver.detach(run_id)
    recorded.store.finish_run(run_id, "succeeded")
    return run_id


def tool_names(request: Any) -> list[str]:
    return [t["function"]["name"] for t in request.tools or []]


@contextmanager
def replaying(node: str, directives: Directives, invocation: int = 0) -> Iterator[StepCalls]:
    """Inside a replayed step, as the recorder opens one around a node."""
    address = StepAddress(run_id="r", node=node, invocation=invocation)
    with collect_calls() as calls, at_step(address), directing(address, directives):
        yield calls


# -- recording -----------------------------------------------------------------------------


def test_agent_and_tool_node_calls_are_recorded(
    store: TraceStore, chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    model = chat.model_copy(update={"temperature": 0.2, "max_tokens": 50, "seed": 11, "top_p": 0.9})
    run_id = run(record(agent_graph(model), store), "add 2 and 3")
    assert server.requests[-1].settings == GenerationSettings(
        max_tokens=50, temperature=0.2, top_p=0.9, seed=11, stop=["END"]
    )
    steps = store.steps(run_id)
    assert [s.node for s in steps] == ["agent", "tools", "agent"]
    (first,) = steps[0].model_calls
    assert first.backend == "langchain:openai" and first.model == MODEL
    assert first.params == {
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 11,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": ["add", "fail"],
    }
    assert first.request == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "add 2 and 3"},
    ]
    assert first.response == {
        "content": "",
        "tool_calls": [{"id": "call_add", "name": "add", "arguments": {"a": 2, "b": 3}}],
    }
    assert first.finish_reason == "tool_calls"
    assert (first.prompt_tokens, first.completion_tokens) == (7, 3)
    assert first.latency_ms > 0
    (tool_call,) = steps[1].tool_calls
    # ToolNode's tools answer with a ToolMessage: its content is the result
    assert (tool_call.name, tool_call.arguments, tool_call.result) == ("add", {"a": 2, "b": 3}, "5")
    assert tool_call.error is None and steps[1].model_calls == []
    (last,) = steps[2].model_calls
    assert last.request[2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_add", "name": "add", "arguments": {"a": 2, "b": 3}}],
        },
        {"role": "tool", "content": "5", "name": "add", "tool_call_id": "call_add"},
    ]
    assert last.response == {"content": "result: 5", "tool_calls": []}
    assert last.finish_reason == "stop"
    assert store.get_run(run_id).total_tokens == 2 * 10


def test_tool_errors_are_recorded(store: TraceStore, chat: ChatOpenAI) -> None:
    run_id = run(record(agent_graph(chat), store), "break it")
    (call,) = store.steps(run_id)[1].tool_calls
    assert (call.name, call.arguments, call.result) == ("fail", {"x": 1}, None)
    assert call.error == "ValueError: no luck with 1"


def test_parallel_branches_and_parallel_tool_calls_land_in_their_own_steps(
    store: TraceStore, chat: ChatOpenAI
) -> None:
    def asking(topic: str) -> Any:
        return lambda state: {"messages": [chat.invoke(f"tell me about {topic}")]}

    graph = StateGraph(MessagesState)
    for topic in ("left", "right", "middle"):
        graph.add_node(topic, asking(topic))
        graph.add_edge(START, topic)
        graph.add_edge(topic, END)
    steps = store.steps(run(record(graph, store), "go"))
    assert sorted(s.node for s in steps) == ["left", "middle", "right"]
    for step in steps:
        (call,) = step.model_calls
        assert call.request == [{"role": "user", "content": f"tell me about {step.node}"}]
        assert call.response["content"] == f"echo: tell me about {step.node}"
    # ToolNode runs the two calls of one message in a thread pool: both land in its step
    steps = store.steps(run(record(agent_graph(chat), store), "add twice"))
    assert [s.node for s in steps] == ["agent", "tools", "agent"]
    tools = steps[1].tool_calls
    assert sorted((c.arguments["a"], c.result) for c in tools) == [(1, "3"), (3, "7")]
    assert [len(s.model_calls) for s in steps] == [1, 0, 1]


@shared_loop
async def test_async_graph_is_recorded(store: TraceStore, chat: ChatOpenAI) -> None:
    recorded = record(agent_graph(chat, asynchronous=True), store)
    steps = store.steps(await arun(recorded, "add twice"))
    assert [s.node for s in steps] == ["agent", "tools", "agent"]
    assert steps[0].model_calls[0].response["tool_calls"][1]["arguments"] == {"a": 3, "b": 4}
    assert sorted(c.result for c in steps[1].tool_calls) == ["3", "7"]
    assert steps[2].model_calls[0].response["content"] == "result: 3, 7"


@shared_loop
async def test_streaming_chat_models_are_recorded(store: TraceStore, chat: ChatOpenAI) -> None:
    streaming = chat.model_copy(update={"streaming": True, "stream_usage": True})

    def node(state: MessagesState) -> dict[str, Any]:
        invoked = streaming.invoke("one")
        streamed = functools.reduce(operator.add, chat.stream("two", stream_usage=True))
        return {"messages": [invoked, AIMessage(streamed.content)]}

    async def anode(state: MessagesState) -> dict[str, Any]:
        chunks = [c async for c in chat.astream("three", stream_usage=True)]
        return {"messages": [AIMessage(functools.reduce(operator.add, chunks).content)]}

    (step,) = store.steps(run(record(single_node(node), store), "go"))
    assert [c.response["content"] for c in step.model_calls] == ["echo: one", "echo: two"]
    assert [(c.prompt_tokens, c.completion_tokens) for c in step.model_calls] == [(7, 3)] * 2
    assert [c.finish_reason for c in step.model_calls] == ["stop", "stop"]
    (step,) = store.steps(await arun(record(single_node(anode), store), "go"))
    assert [(c.response["content"], c.prompt_tokens) for c in step.model_calls] == [
        ("echo: three", 7)
    ]


def test_self_recording_models_are_not_recorded_twice(store: TraceStore, chat: ChatOpenAI) -> None:
    own = chat.model_copy(update={"metadata": {"counterfact_recorded": True}})
    graph = single_node(lambda state: {"messages": [own.invoke("mine"), chat.invoke("theirs")]})
    (step,) = store.steps(run(record(graph, store), "go"))
    assert [c.request[-1]["content"] for c in step.model_calls] == ["theirs"]


def test_secrets_in_calls_never_reach_the_store(store: TraceStore, base_url: str) -> None:
    secret = "sk-" + "s" * 32
    chat = ChatOpenAI(model=MODEL, base_url=base_url, api_key=KEY, max_retries=0)
    client = instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))

    def node(state: MessagesState) -> dict[str, Any]:
        said = chat.invoke(f"my key is {secret}")
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": secret}])
        return {"messages": [said]}

    (step,) = store.steps(run(record(single_node(node), store), "go"))
    assert len(step.model_calls) == 2
    with store.engine.connect() as conn:
        blobs = b"".join(d for d in conn.execute(select(Blob.data)).scalars() if d)
        params = repr(conn.execute(select(ModelCall.params)).scalars().all())
    assert secret.encode() not in blobs and KEY.encode() not in blobs
    assert KEY not in params and b"[REDACTED]" in blobs
    assert step.model_calls[0].request == [{"role": "user", "content": "my key is [REDACTED]"}]


def test_failed_model_calls_and_plain_llms_are_recorded(store: TraceStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    down = ChatOpenAI(model=MODEL, base_url=closed, api_key=KEY, max_retries=0)
    llm = FakeListLLM(responses=["plain text"])

    def node(state: MessagesState) -> dict[str, Any]:
        assert llm.invoke("a prompt") == "plain text"
        return {"messages": [down.invoke("hello")]}

    result = record(single_node(node), store).invoke({"messages": []}, config=captured())
    assert result.status == "error"
    (step,) = store.steps(result.run_id)
    plain, failed = step.model_calls
    assert plain.backend == "langchain:fakelist"
    assert (plain.request, plain.response["content"]) == (
        [{"role": "user", "content": "a prompt"}],
        "plain text",
    )
    assert failed.finish_reason == "error" and failed.request[-1]["content"] == "hello"
    assert "ConnectionError: Connection error" in failed.response["error"]


def test_two_captures_record_each_call_once(chat: ChatOpenAI) -> None:
    with collect_calls() as calls:
        chat.invoke("once", {"callbacks": [CallCapture(), CallCapture()]})
        add.invoke({"a": 1, "b": 1}, {"callbacks": [CallCapture(), CallCapture()]})
    assert len(calls.model_calls) == 1 and len(calls.tool_calls) == 1


# -- the instrumented openai client ----------------------------------------------------------


def test_instrumented_client_calls_and_streams_are_recorded(
    store: TraceStore, base_url: str, server: ScriptedChatModel
) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    assert instrument(instrument(client)) is client

    def node(state: MessagesState) -> dict[str, Any]:
        completion = client.chat.completions.create(
            model=MODEL,
            messages=iter([{"role": "user", "content": "add 2 and 3"}]),  # read only once
            temperature=0.5,
            max_tokens=20,
            seed=3,
            tools=[SPEC],
        )
        call = completion.choices[0].message.tool_calls[0]
        history = [
            {"role": "user", "content": "add 2 and 3"},
            completion.choices[0].message,  # a response message sent back, as SDK users do
            {"role": "tool", "tool_call_id": call.id, "content": "5"},
        ]
        with client.chat.completions.create(
            model=MODEL, messages=history, stream=True, stream_options={"include_usage": True}
        ) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return {"messages": [AIMessage(text)]}

    before = len(server.requests)
    (step,) = store.steps(run(record(single_node(node), store), "go"))
    assert len(server.requests) == before + 2
    assert step.output["content"] == "result: 5"
    first, streamed = step.model_calls
    assert first.backend == "openai" and first.model == MODEL
    assert first.params == {"temperature": 0.5, "max_tokens": 20, "seed": 3, "tools": ["add"]}
    assert first.request == [{"role": "user", "content": "add 2 and 3"}]
    assert first.response["tool_calls"] == [
        {"id": "call_add", "name": "add", "arguments": {"a": 2, "b": 3}}
    ]
    assert (first.finish_reason, first.prompt_tokens, first.completion_tokens) == (
        "tool_calls",
        7,
        3,
    )
    assert streamed.request[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_add", "name": "add", "arguments": {"a": 2, "b": 3}}],
    }
    assert streamed.request[2] == {"role": "tool", "content": "5", "tool_call_id": "call_add"}
    assert streamed.response == {"content": "result: 5", "tool_calls": []}
    assert (streamed.finish_reason, streamed.prompt_tokens, streamed.completion_tokens) == (
        "stop",
        7,
        3,
    )


@shared_loop
async def test_instrumented_async_client_is_recorded(store: TraceStore, base_url: str) -> None:
    client = instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))

    async def node(state: MessagesState) -> dict[str, Any]:
        plain = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "add twice"}], tools=[SPEC]
        )
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        return {"messages": [AIMessage(text or str(plain.choices[0].message.content))]}

    (step,) = store.steps(await arun(record(single_node(node), store), "go"))
    plain, streamed = step.model_calls
    assert [c["arguments"] for c in plain.response["tool_calls"]] == [
        {"a": 1, "b": 2},
        {"a": 3, "b": 4},
    ]
    assert streamed.response["content"] == "echo: hi" and streamed.finish_reason == "stop"
    assert streamed.prompt_tokens == 0  # usage was not asked for


# -- replay directives, directly inside a step scope ------------------------------------------


async def _ask(model: ChatOpenAI, how: str, text: str) -> AIMessage:
    config = captured()
    if how == "invoke":
        return model.invoke(text, config)
    if how == "ainvoke":
        return await model.ainvoke(text, config)
    if how == "stream":
        return functools.reduce(operator.add, model.stream(text, config))
    if how == "astream":
        return functools.reduce(operator.add, [c async for c in model.astream(text, config)])
    assert how == "streaming"
    return model.model_copy(update={"streaming": True}).invoke(text, config)


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream", "streaming"])
@shared_loop
async def test_forced_response_replaces_the_model_call(
    how: str, chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    forced = ModelResponse(call=1, content="forced", tool_calls=[{"name": "add", "args": {"a": 1}}])
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})
    before = len(server.requests)
    with replaying("agent", directives) as calls:
        first = await _ask(chat, how, "hello")
        second = await _ask(chat, how, "again")
    assert len(server.requests) == before + 1  # only the first call reached the server
    assert first.content == "echo: hello" and first.tool_calls == []
    assert second.content == "forced"
    [(name, args, call_id)] = [(c["name"], c["args"], c["id"]) for c in second.tool_calls]
    assert (name, args) == ("add", {"a": 1}) and call_id
    real, replaced = calls.model_calls
    assert real.response["content"] == "echo: hello" and "forced" not in real.params
    assert replaced.params["forced"] is True
    assert replaced.request == [{"role": "user", "content": "again"}]
    assert replaced.response == {
        "content": "forced",
        "tool_calls": [{"id": call_id, "name": "add", "arguments": {"a": 1}}],
    }


def test_batch_calls_are_counted_and_forced(chat: ChatOpenAI, server: ScriptedChatModel) -> None:
    responses = [ModelResponse(call=i, content=f"forced {i}") for i in range(2)]
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=responses)})
    before = len(server.requests)
    with replaying("agent", directives) as calls:
        answers = chat.batch(["a", "b"], captured())
        third = chat.invoke("c")
    assert len(server.requests) == before + 1
    assert sorted(a.content for a in answers) == ["forced 0", "forced 1"]
    assert third.content == "echo: c"
    assert sorted(c.response["content"] for c in calls.model_calls) == ["forced 0", "forced 1"]


def test_self_recording_models_are_left_alone(chat: ChatOpenAI, server: ScriptedChatModel) -> None:
    own = chat.model_copy(update={"metadata": {"counterfact_recorded": True}})
    forced = ModelResponse(call=0, content="forced")
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})
    before = len(server.requests)
    with replaying("agent", directives):
        assert own.invoke("mine").content == "echo: mine"  # neither forced nor counted
        assert chat.invoke("theirs").content == "forced"
    assert len(server.requests) == before + 1


def test_hooks_pass_everything_through_outside_a_replay(
    chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    before = len(server.requests)
    with collect_calls() as calls:
        assert chat.invoke("plain", captured()).content == "echo: plain"
        assert add.invoke({"a": 1, "b": 1}) == 2
    assert len(server.requests) == before + 1
    assert [c.response["content"] for c in calls.model_calls] == ["echo: plain"]


@shared_loop
async def test_removed_tools_are_not_sent(chat: ChatOpenAI, server: ScriptedChatModel) -> None:
    remove_fail = ToolChange(agent="agent", tool="fail", action="remove", from_step="agent#1")
    bound = chat.bind_tools([add, fail])
    with replaying("agent", Directives(tool_changes=[remove_fail]), invocation=0):
        bound.invoke("early")  # before the change's step: both tools offered
    assert tool_names(server.requests[-1]) == ["add", "fail"]
    with replaying("agent", Directives(tool_changes=[remove_fail]), invocation=1) as calls:
        bound.invoke("later", captured())
        assert tool_names(server.requests[-1]) == ["add"]
        await bound.ainvoke("later")
        assert tool_names(server.requests[-1]) == ["add"]
        list(bound.stream("later"))
        assert tool_names(server.requests[-1]) == ["add"]
    assert calls.model_calls[0].params["tools"] == ["add"]
    # without any tool left, neither tools nor the tool choice are sent
    remove_add = ToolChange(agent="agent", tool="add", action="remove", from_step="agent#0")
    with replaying("agent", Directives(tool_changes=[remove_add])):
        chat.bind_tools([add], tool_choice="add").invoke("none left")
    assert server.requests[-1].tools is None
    # a tool choice naming a removed tool goes with it
    remove_fail = remove_fail.model_copy(update={"from_step": "agent#0"})
    kwargs = {"tools": [SPEC, {"name": "fail"}], "tool_choice": {"name": "fail"}}
    with replaying("agent", Directives(tool_changes=[remove_fail])):
        assert without_removed_tools(kwargs) == {"tools": [SPEC]}
    # another node keeps its tools
    with replaying("other", Directives(tool_changes=[remove_add])):
        chat.bind_tools([add]).invoke("elsewhere")
    assert tool_names(server.requests[-1]) == ["add"]


@shared_loop
async def test_forced_tool_results_skip_the_tool() -> None:
    forced = {"add": 42, "amul": [{"type": "text", "text": "many"}]}
    directives = Directives(steps={"tools#0": StepDirectives(tool_results=forced)})
    call = {"type": "tool_call", "name": "add", "args": {"a": 1, "b": 2}, "id": "call_9"}
    RAN.clear()
    with replaying("tools", directives) as calls:
        assert add.invoke({"a": 1, "b": 2}, captured()) == 42
        message = add.invoke(call, captured())
        amessage = await add.ainvoke(call, captured())
        tools = StateGraph(MessagesState)
        tools.add_node("tools", ToolNode([add]))
        tools.add_edge(START, "tools")
        asked = AIMessage("", tool_calls=[{**call, "id": "call_7"}])
        out = tools.compile().invoke({"messages": [asked]}, captured())
        product = await amul.ainvoke({**call, "name": "amul"}, captured())
        with pytest.raises(ValueError, match="no luck"):
            fail.invoke({"x": 2})  # not forced: it runs
    assert RAN == []
    answers = [(message, "call_9"), (amessage, "call_9"), (out["messages"][-1], "call_7")]
    for answer, call_id in answers:
        assert isinstance(answer, ToolMessage)
        assert (answer.content, answer.tool_call_id, answer.name) == ("42", call_id, "add")
    assert product.content == [{"type": "text", "text": "many"}]
    # the callbacks saw the forced results: raw, or as the content of a ToolMessage
    assert [(c.name, c.arguments, c.result) for c in calls.tool_calls] == [
        *[("add", {"a": 1, "b": 2}, result) for result in (42, "42", "42", "42")],
        ("amul", {"a": 1, "b": 2}, [{"type": "text", "text": "many"}]),
    ]


@shared_loop
async def test_recorded_identical_tool_calls_are_reused() -> None:
    directives = Directives(reuse_tool_results={tool_call_key("add", {"a": 2, "b": 3}): 5})
    RAN.clear()
    with replaying("tools", directives):
        assert add.invoke({"a": 2, "b": 3}) == 5
        assert await add.ainvoke({"b": 3, "a": 2}) == 5
        assert add.invoke({"a": 2, "b": 4}) == 6  # a different call runs
    assert RAN == [("add", {"a": 2, "b": 4})]


def test_instrumented_client_honours_directives(
    base_url: str, server: ScriptedChatModel
) -> None:
    client = instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    forced = ModelResponse(call=0, content="", tool_calls=[{"name": "add", "args": {"a": 4}}])
    streamed = ModelResponse(call=1, content="forced text")
    directives = Directives(
        steps={"agent#0": StepDirectives(model_responses=[forced, streamed])},
        tool_changes=[ToolChange(agent="agent", tool="add", action="remove", from_step="agent#0")],
    )
    messages = [{"role": "user", "content": "hi"}]
    before = len(server.requests)
    with replaying("agent", directives) as calls:
        completion = client.chat.completions.create(model=MODEL, messages=messages)
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        live = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[SPEC], tool_choice="auto"
        )
    assert len(server.requests) == before + 1 and server.requests[-1].tools is None
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    (call,) = completion.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("add", '{"a": 4}') and call.id
    assert completion.choices[0].finish_reason == "tool_calls"
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "forced text"
    assert chunks[-1].usage is not None
    assert live.choices[0].message.content == "echo: hi"
    assert [c.params.get("forced", False) for c in calls.model_calls] == [True, True, False]
    assert calls.model_calls[1].response == {"content": "forced text", "tool_calls": []}
    assert calls.model_calls[2].params["tools"] == []


@shared_loop
async def test_instrumented_async_client_honours_directives(
    base_url: str, server: ScriptedChatModel
) -> None:
    client = instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))
    responses = [ModelResponse(call=i, content=f"forced {i}") for i in range(2)]
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=responses)})
    messages = [{"role": "user", "content": "hi"}]
    before = len(server.requests)
    with replaying("agent", directives) as calls:
        completion = await client.chat.completions.create(model=MODEL, messages=messages)
        async with await client.chat.completions.create(
            model=MODEL, messages=messages, stream=True
        ) as stream:
            chunks = [c async for c in stream]
    assert len(server.requests) == before
    assert completion.choices[0].message.content == "forced 0"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "forced 1"
    assert [(c.response["content"], c.params["forced"]) for c in calls.model_calls] == [
        ("forced 0", True),
        ("forced 1", True),
    ]


# -- replay directives through a recorded graph ------------------------------------------------


def test_replayed_graph_uses_a_forced_answer(
    store: TraceStore, chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    forced = ModelResponse(content="forced")
    directives = Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})
    before = len(server.requests)
    run_id = run(record(agent_graph(chat), store), "add 2 and 3", with_directives(None, directives))
    assert len(server.requests) == before
    (step,) = store.steps(run_id)
    assert step.output["content"] == "forced"
    assert step.model_calls[0].params["forced"] is True


def test_replayed_graph_forces_and_reuses_tool_results(
    store: TraceStore, chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    recorded = record(agent_graph(chat), store)
    RAN.clear()
    forced = Directives(steps={"tools#0": StepDirectives(tool_results={"add": 99})})
    steps = store.steps(run(recorded, "add 2 and 3", with_directives(None, forced)))
    assert server.requests[-1].messages[-1].content == "99"
    assert steps[1].tool_calls[0].result == "99" and steps[-1].output["content"] == "result: 99"
    reused = Directives(reuse_tool_results={tool_call_key("add", {"a": 2, "b": 3}): 5})
    steps = store.steps(run(recorded, "add 2 and 3", with_directives(None, reused)))
    assert steps[1].tool_calls[0].result == "5" and steps[-1].output["content"] == "result: 5"
    assert RAN == []


def test_replayed_graph_no_longer_offers_a_removed_tool(
    store: TraceStore, chat: ChatOpenAI, server: ScriptedChatModel
) -> None:
    change = ToolChange(agent="agent", tool="fail", action="remove", from_step="agent#1")
    before = len(server.requests)
    config = with_directives(None, Directives(tool_changes=[change]))
    steps = store.steps(run(record(agent_graph(chat), store), "add 2 and 3", config))
    assert [tool_names(r) for r in server.requests[before:]] == [["add", "fail"], ["add"]]
    assert [s.model_calls[0].params["tools"] for s in steps if s.node == "agent"] == [
        ["add", "fail"],
        ["add"],
    ]
