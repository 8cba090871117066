"""What `instrument(client)` records of a user's openai client, field by field, and how it
follows a replay's directives.

The real openai SDK (sync and async) talks HTTP to a small server on loopback that answers each
request with the exact body or server-sent events scripted for its last message: so the tests
control what a real stream delivers (tool-call arguments split over chunks, a second choice, a
chunk after the finish, an error mid-stream), which a well-behaved model server never sends.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from counterfact.capture import (
    Directives,
    ModelCallRecord,
    ModelResponse,
    StepAddress,
    StepCalls,
    StepDirectives,
    ToolChange,
    _instrument,
    at_step,
    collect_calls,
    directing,
    instrument,
)
from counterfact.capture._instrument import (
    RecordedAsyncStream,
    RecordedStream,
    _forced_chunks,
    _forced_completion,
)

MODEL = "raw-model"
KEY = "sk-raw"
SLOW = 0.06  # seconds the server waits before answering "slow"
USAGE = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}


def _completion(choices: list[dict[str, Any]], usage: dict[str, int] | None = USAGE) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def _choice(message: dict[str, Any], finish_reason: str | None = "stop", index: int = 0) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}


def _chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, index: int = 0,
           usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    body: dict[str, Any] = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def _call(index: int, call_id: str | None = None, name: str | None = None, arguments: str | None = None,
          function: bool = True) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if call_id is not None:
        call["id"], call["type"] = call_id, "function"
    if function:
        call["function"] = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    return call


REPLIES: dict[str, dict[str, Any]] = {  # a request's last message -> its answer
    "plain": _completion([_choice({"content": "hello there"})]),
    "slow": _completion([_choice({"content": "at last"})]),
    "tools": _completion([_choice({
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}},
            {"id": "call_c", "type": "custom", "custom": {"name": "grep", "input": "x"}},
            {"id": "call_b", "type": "function", "function": {"name": "mul", "arguments": "not json"}},
        ],
    }, "tool_calls")]),
    "empty": _completion([], usage=None),
    "cut": _completion([_choice({"content": "cut sh"}, "length")], usage=None),
}
STREAMS: dict[str, list[dict[str, Any]]] = {  # a streamed request's last message -> its chunks
    "stream": [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "IGNORED"}, "stop", index=1),  # a second choice is not recorded
        {**_chunk({"content": "NO"}, index=1), "choices": [  # the second choice first, then the first
            {"index": 1, "delta": {"content": "NO"}, "finish_reason": None},
            {"index": 0, "delta": {"content": "lo"}, "finish_reason": None},
        ]},
        _chunk({"tool_calls": [_call(2, name="noid", arguments="{}")]}),  # a call that never says its id
        _chunk({"tool_calls": [_call(1, "call_b", "mu", '{"a"')]}),
        _chunk({"tool_calls": [_call(0, "call_a", "add")]}),  # a name, no arguments yet
        _chunk({"tool_calls": [_call(0, arguments='{"x": 1}')]}),  # arguments, no name
        _chunk({"tool_calls": [_call(1, name="l", arguments=": 2}")]}),
        _chunk({"tool_calls": [_call(0, function=False)]}),
        _chunk({}, "tool_calls"),
        _chunk({"content": None}),  # after the finish: it is kept
        _chunk(usage={"prompt_tokens": 13, "completion_tokens": 8, "total_tokens": 21}),
    ],
    "long": [_chunk({"role": "assistant", "content": ""}), *[_chunk({"content": f"{i} "}) for i in range(50)],
             _chunk({}, "stop")],
}
BROKEN = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "so far"})]  # then an error


class _Server(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({**body, "headers": dict(self.headers)})
        last = body["messages"][-1]["content"]
        if last == "slow":
            time.sleep(SLOW)
        if last == "fail":
            return self._send(500, "application/json", json.dumps({"error": {"message": "down", "type": "server_error"}}))
        if not body.get("stream"):
            return self._send(200, "application/json", json.dumps(REPLIES.get(last) or REPLIES["plain"]))
        if last == "broken":
            events = [*BROKEN, {"error": {"message": "lost the model", "type": "server_error"}}]
        else:
            events = STREAMS.get(last) or STREAMS["long"]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, "text/event-stream", text)

    def _send(self, status: int, kind: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return instrument(openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0))


@pytest.fixture
def aclient(base_url: str) -> openai.AsyncOpenAI:
    return instrument(openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0))


@contextmanager
def _in_step(directives: Directives | None = None) -> Iterator[StepCalls]:
    address = StepAddress(run_id="r", node="agent", invocation=0)
    with collect_calls() as calls, at_step(address), directing(address, directives or Directives()):
        yield calls


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _timed(call: ModelCallRecord) -> None:
    assert 0 <= call.latency_ms < 10_000
    assert call.offset_ms is not None and 0 <= call.offset_ms < 60_000


def _spec(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


STREAMED_RESPONSE = {
    "content": "Hello",
    "tool_calls": [{"id": "call_a", "name": "add", "arguments": {"x": 1}},
                   {"id": "call_b", "name": "mul", "arguments": {"a": 2}},
                   {"id": None, "name": "noid", "arguments": {}}],
}


# -- plain calls -----------------------------------------------------------------------------------


def test_a_call_is_recorded_field_by_field(client: openai.OpenAI) -> None:
    history = [
        {"role": "system", "content": "be brief", "name": "rules"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": '{"a": 0}'}},
            {"type": "function", "function": {"name": "sub"}},
            {"id": "call_c", "type": "custom", "custom": {"name": "grep", "input": "x"}},
        ]},
        {"role": "tool", "tool_call_id": "call_0", "content": "0"},
        {"role": "user", "content": "tools"},
    ]
    with collect_calls() as calls:
        completion = client.chat.completions.create(
            model=MODEL, messages=history, temperature=0.0, top_p=0.5, seed=0, stop=["END"], max_completion_tokens=30,
            tools=[_spec("add"), _spec("mul")], tool_choice="auto", user="u-1", extra_headers={"X-Secret": "s"},
        )
    assert isinstance(completion, ChatCompletion) and completion.id == "chatcmpl-1"
    (call,) = calls.model_calls
    assert (call.backend, call.model, call.agent) == ("openai", MODEL, None)
    assert call.params == {"temperature": 0.0, "max_tokens": 30, "seed": 0, "top_p": 0.5, "stop": ["END"],
                           "tools": ["add", "mul"]}
    assert call.request == [
        {"role": "system", "content": "be brief", "name": "rules"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "name": "add", "arguments": {"a": 0}},
                                                             {"id": None, "name": "sub", "arguments": {}}]},
        {"role": "tool", "content": "0", "tool_call_id": "call_0"},
        {"role": "user", "content": "tools"},
    ]
    assert call.response == {"content": "", "tool_calls": [{"id": "call_a", "name": "add", "arguments": {"a": 1}},
                                                           {"id": "call_b", "name": "mul", "arguments": {"_unparsed": "not json"}}]}
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 11, 6)
    _timed(call)


def test_settings_not_given_are_not_recorded(client: openai.OpenAI, base_url: str) -> None:
    with collect_calls() as calls:
        client.chat.completions.create(model=MODEL, messages=_user("plain"), temperature=openai.NOT_GIVEN,
                                       seed=openai.omit, max_tokens=12, stream=False)
    (call,) = calls.model_calls
    assert call.params == {"max_tokens": 12, "tools": []}
    assert (call.response, call.finish_reason) == ({"content": "hello there", "tool_calls": []}, "stop")


def test_answers_without_choices_or_usage(client: openai.OpenAI) -> None:
    with collect_calls() as calls:
        assert client.chat.completions.create(model=MODEL, messages=_user("empty")).choices == []
        client.chat.completions.create(model=MODEL, messages=_user("cut"))
    empty, cut = calls.model_calls
    assert (empty.response, empty.finish_reason, empty.prompt_tokens, empty.completion_tokens) == (
        {"content": "", "tool_calls": []}, None, 0, 0)
    assert (cut.response, cut.finish_reason, cut.prompt_tokens, cut.completion_tokens) == (
        {"content": "cut sh", "tool_calls": []}, "length", 0, 0)


def test_latency_is_the_calls_own_in_milliseconds(client: openai.OpenAI) -> None:
    with collect_calls() as calls:
        time.sleep(0.02)
        started = time.perf_counter()
        client.chat.completions.create(model=MODEL, messages=_user("slow"))
        took = (time.perf_counter() - started) * 1000
        with client.chat.completions.create(model=MODEL, messages=_user("slow"), stream=True) as stream:
            list(stream)
    plain, streamed = calls.model_calls
    for call in (plain, streamed):
        assert SLOW * 1000 <= call.latency_ms < 10_000
        _timed(call)
    assert plain.latency_ms <= took
    assert plain.offset_ms >= 20  # from the step's start to the call's
    assert streamed.offset_ms >= plain.offset_ms + plain.latency_ms


def _assert_failed(calls: StepCalls, errors: list[BaseException]) -> None:
    assert len(calls.model_calls) == len(errors) == 2
    for call, error in zip(calls.model_calls, errors):
        assert (call.backend, call.model, call.request) == ("openai", MODEL, _user("fail"))
        assert call.params == {"temperature": 0.2, "tools": []}
        assert call.response == {"content": "", "tool_calls": [], "error": f"InternalServerError: {error}"}
        assert call.response["error"].startswith("InternalServerError: Error code: 500 - ")
        assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("error", 0, 0)
        _timed(call)


def test_a_failed_call_raises_and_is_recorded_with_its_error(client: openai.OpenAI) -> None:
    errors = []
    with collect_calls() as calls:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model=MODEL, messages=_user("fail"), temperature=0.2, stream=stream)
            errors.append(raised.value)
    _assert_failed(calls, errors)


async def test_a_failed_async_call_raises_and_is_recorded_with_its_error(aclient: openai.AsyncOpenAI) -> None:
    errors = []
    with collect_calls() as calls:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as raised:
                await aclient.chat.completions.create(model=MODEL, messages=_user("fail"), temperature=0.2, stream=stream)
            errors.append(raised.value)
    _assert_failed(calls, errors)


def test_instrumenting_twice_hooks_once(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    hooked = instrument(client).chat.completions.create
    assert instrument(client) is client and client.chat.completions.create is hooked
    assert hooked.__name__ == "create" and hooked.__counterfact_instrumented__ is True
    with collect_calls() as calls:
        client.chat.completions.create(model=MODEL, messages=_user("plain"))
    assert len(calls.model_calls) == 1


async def test_instrumenting_an_async_client_twice_hooks_once(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    hooked = instrument(instrument(client)).chat.completions.create
    assert asyncio.iscoroutinefunction(hooked) and hooked.__name__ == "create"
    with collect_calls() as calls:
        completion = await client.chat.completions.create(model=MODEL, messages=_user("tools"))
    assert completion.choices[0].finish_reason == "tool_calls"
    (call,) = calls.model_calls
    assert [c["id"] for c in call.response["tool_calls"]] == ["call_a", "call_b"]
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 11, 6)


def test_raw_and_streaming_responses_pass_through_unrecorded(client: openai.OpenAI) -> None:
    forced = ModelResponse(call=0, content="forced")
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})) as calls:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=_user("plain"))
        with client.chat.completions.with_streaming_response.create(model=MODEL, messages=_user("plain")) as response:
            streamed = json.loads(response.read())
        counted = client.chat.completions.create(model=MODEL, messages=_user("plain"))  # the step's first call
    assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content == "hello there"
    assert streamed["choices"][0]["message"]["content"] == "hello there"
    assert counted.choices[0].message.content == "forced"
    assert [c.response["content"] for c in calls.model_calls] == ["forced"]


async def test_raw_responses_of_the_async_client_pass_through_unrecorded(aclient: openai.AsyncOpenAI) -> None:
    with collect_calls() as calls:
        raw = await aclient.chat.completions.with_raw_response.create(model=MODEL, messages=_user("plain"))
    assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content == "hello there"
    assert calls.model_calls == []


# -- streams ----------------------------------------------------------------------------------------


def test_a_stream_is_assembled_from_its_chunks(client: openai.OpenAI) -> None:
    with collect_calls() as calls:
        stream = client.chat.completions.create(model=MODEL, messages=_user("stream"), stream=True,
                                                stream_options={"include_usage": True})
        assert isinstance(stream, RecordedStream) and iter(stream) is stream
        assert stream.response.status_code == 200  # the SDK stream's own attributes
        chunks = list(stream)
        assert len(calls.model_calls) == 1  # reported once used up
        stream.close()  # closing it afterwards does not report it again
    assert len(chunks) == len(STREAMS["stream"]) and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    (call,) = calls.model_calls
    assert call.request == _user("stream")
    assert call.response == STREAMED_RESPONSE
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 13, 8)
    _timed(call)


async def test_an_async_stream_is_assembled_from_its_chunks(aclient: openai.AsyncOpenAI) -> None:
    with collect_calls() as calls:
        stream = await aclient.chat.completions.create(model=MODEL, messages=_user("stream"), stream=True)
        assert isinstance(stream, RecordedAsyncStream) and stream.__aiter__() is stream
        assert stream.response.status_code == 200
        async with stream as same:
            assert same is stream
            chunks = [c async for c in same]
            assert len(calls.model_calls) == 1
    assert len(chunks) == len(STREAMS["stream"])
    (call,) = calls.model_calls
    assert call.response == STREAMED_RESPONSE
    assert (call.finish_reason, call.prompt_tokens, call.completion_tokens) == ("tool_calls", 13, 8)
    _timed(call)


def test_a_stream_closed_early_is_recorded_once_with_what_it_delivered(client: openai.OpenAI) -> None:
    with collect_calls() as calls:
        with client.chat.completions.create(model=MODEL, messages=_user("long"), stream=True) as stream:
            assert stream.__enter__() is stream
            for chunk in stream:
                if chunk.choices[0].delta.content == "2 ":
                    break
            assert calls.model_calls == [] and not stream.response.is_closed  # not yet: it may go on
        assert calls.model_calls[0].response == {"content": "0 1 2 ", "tool_calls": []}
        assert stream.response.is_closed  # the SDK stream was closed too
        stream.close()
    (call,) = calls.model_calls
    assert call.finish_reason is None and call.prompt_tokens == 0
    _timed(call)


async def test_an_async_stream_closed_early_is_recorded_once(aclient: openai.AsyncOpenAI) -> None:
    with collect_calls() as calls:
        stream = await aclient.chat.completions.create(model=MODEL, messages=_user("long"), stream=True)
        async for chunk in stream:
            if chunk.choices[0].delta.content == "1 ":
                break
        assert calls.model_calls == [] and not stream.response.is_closed
        await stream.close()
        assert stream.response.is_closed
        await stream.close()
    (call,) = calls.model_calls
    assert (call.response, call.finish_reason) == ({"content": "0 1 ", "tool_calls": []}, None)


def test_a_stream_that_fails_midway_is_recorded_with_what_it_delivered(client: openai.OpenAI) -> None:
    with collect_calls() as calls:
        stream = client.chat.completions.create(model=MODEL, messages=_user("broken"), stream=True)
        seen = []
        with pytest.raises(openai.APIError, match="lost the model"):
            for chunk in stream:
                seen.append(chunk)
    assert len(seen) == 2
    (call,) = calls.model_calls
    assert (call.response, call.finish_reason) == ({"content": "so far", "tool_calls": []}, None)


async def test_an_async_stream_that_fails_midway_is_recorded(aclient: openai.AsyncOpenAI) -> None:
    with collect_calls() as calls:
        stream = await aclient.chat.completions.create(model=MODEL, messages=_user("broken"), stream=True)
        with pytest.raises(openai.APIError, match="lost the model"):
            async for _ in stream:
                pass
    (call,) = calls.model_calls
    assert (call.response, call.finish_reason) == ({"content": "so far", "tool_calls": []}, None)


def test_a_stream_reports_to_the_step_that_started_it(client: openai.OpenAI) -> None:
    with collect_calls() as started_in:
        stream = client.chat.completions.create(model=MODEL, messages=_user("long"), stream=True)
    with collect_calls() as read_in:
        assert len(list(stream)) == 52
    assert [c.response["content"] for c in started_in.model_calls] == ["".join(f"{i} " for i in range(50))]
    assert read_in.model_calls == []


# -- a replay's directives ---------------------------------------------------------------------------


def test_the_instruction_is_sent_and_recorded_and_removed_tools_are_not(client: openai.OpenAI) -> None:
    directives = Directives(
        steps={"agent#0": StepDirectives(instruction="check twice")},
        tool_changes=[ToolChange(agent="agent", tool="add", action="remove", from_step="agent#0")],
    )
    before = len(_Server.requests)
    with _in_step(directives) as calls:
        client.chat.completions.create(model=MODEL, messages=iter(_user("plain")), tools=[_spec("add"), _spec("mul")])
        client.chat.completions.create(model=MODEL, messages=_user("plain"), tools=[_spec("add")], tool_choice="auto")
    first, second = _Server.requests[before:]
    assert first["messages"] == [*_user("plain"), {"role": "user", "content": "check twice"}]
    assert [t["function"]["name"] for t in first["tools"]] == ["mul"]
    assert "tools" not in second and "tool_choice" not in second
    assert [c.request for c in calls.model_calls] == [[*_user("plain"), {"role": "user", "content": "check twice"}]] * 2
    assert [c.params for c in calls.model_calls] == [{"tools": ["mul"]}, {"tools": []}]
    assert [c.params.get("forced") for c in calls.model_calls] == [None, None]


def test_forced_responses_come_back_as_real_completions(client: openai.OpenAI) -> None:
    responses = [
        ModelResponse(call=0, content="forced text"),
        ModelResponse(call=1, content="", tool_calls=[{"id": "call_f", "name": "add", "args": {"a": 4}},
                                                       {"id": "call_g", "name": "mul", "args": {}}]),
    ]
    before = len(_Server.requests)
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=responses)})) as calls:
        text = client.chat.completions.create(model=MODEL, messages=_user("plain"), temperature=0.1)
        tools = client.chat.completions.create(model="other-model", messages=_user("plain"))
        live = client.chat.completions.create(model=MODEL, messages=_user("plain"))
    assert len(_Server.requests) == before + 1
    assert text.id.startswith("chatcmpl-forced-") and len(text.id) == len("chatcmpl-forced-") + 32
    assert text.id != tools.id and text.object == "chat.completion"
    assert abs(text.created - time.time()) < 60 and (text.model, tools.model) == (MODEL, "other-model")
    (choice,) = text.choices
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert (choice.message.content, choice.message.tool_calls) == ("forced text", None)
    (choice,) = tools.choices
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_f", "function", "add", '{"a": 4}'), ("call_g", "function", "mul", "{}")]
    assert text.usage is None and live.choices[0].message.content == "hello there"
    forced_text, forced_tools, real = calls.model_calls
    assert forced_text.params == {"temperature": 0.1, "tools": [], "forced": True}
    assert (forced_text.model, forced_text.request) == (MODEL, _user("plain"))
    assert (forced_text.response, forced_text.finish_reason) == ({"content": "forced text", "tool_calls": []}, "stop")
    assert (forced_tools.model, forced_tools.params) == ("other-model", {"tools": [], "forced": True})
    assert forced_tools.response == {"content": "", "tool_calls": [{"id": "call_f", "name": "add", "arguments": {"a": 4}},
                                                                   {"id": "call_g", "name": "mul", "arguments": {}}]}
    assert (forced_tools.finish_reason, forced_tools.prompt_tokens, forced_tools.completion_tokens) == ("tool_calls", 0, 0)
    assert real.params == {"tools": []} and real.response["content"] == "hello there"
    for call in calls.model_calls:
        _timed(call)


def test_forced_streams_are_chunks_of_the_forced_response(client: openai.OpenAI) -> None:
    responses = [
        ModelResponse(call=0, content="forced", tool_calls=[{"id": "call_f", "name": "add", "args": {"a": 4}}]),
        ModelResponse(call=1, content="with usage"),
        ModelResponse(call=2, content="closed early"),
    ]
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=responses)})) as calls:
        stream = client.chat.completions.create(model=MODEL, messages=_user("x"), stream=True,
                                                stream_options={"include_usage": False})
        assert isinstance(stream, RecordedStream)
        chunks = list(stream)
        with client.chat.completions.create(model=MODEL, messages=_user("y"), stream=True,
                                            stream_options={"include_usage": True}) as counted:
            usage = list(counted)
        early = client.chat.completions.create(model=MODEL, messages=_user("z"), stream=True)
        next(early)
        early.close()
    assert len(chunks) == 2 and chunks[0].id == chunks[1].id and chunks[0].id.startswith("chatcmpl-forced-")
    assert all(c.model == MODEL and c.object == "chat.completion.chunk" and c.usage is None for c in chunks)
    first, finish = (c.choices[0] for c in chunks)
    assert (first.index, first.finish_reason, first.delta.role, first.delta.content) == (0, None, "assistant", "forced")
    assert [(t.index, t.id, t.function.name, t.function.arguments) for t in first.delta.tool_calls] == [
        (0, "call_f", "add", '{"a": 4}')]
    assert (finish.index, finish.finish_reason, finish.delta.content, finish.delta.tool_calls) == (0, "tool_calls", None, None)
    assert len(usage) == 3 and usage[-1].choices == [] and usage[1].choices[0].finish_reason == "stop"
    assert (usage[-1].usage.prompt_tokens, usage[-1].usage.completion_tokens, usage[-1].usage.total_tokens) == (0, 0, 0)
    assert usage[0].choices[0].delta.tool_calls is None
    streamed, with_usage, closed = calls.model_calls
    assert streamed.params == {"tools": [], "forced": True}
    assert streamed.response == {"content": "forced", "tool_calls": [{"id": "call_f", "name": "add", "arguments": {"a": 4}}]}
    assert (streamed.finish_reason, streamed.prompt_tokens, streamed.completion_tokens) == ("tool_calls", 0, 0)
    assert (with_usage.response["content"], with_usage.finish_reason, with_usage.params["forced"]) == ("with usage", "stop", True)
    assert (closed.response["content"], closed.finish_reason, closed.params["forced"]) == ("closed early", None, True)


async def test_the_async_client_forces_responses_and_streams(aclient: openai.AsyncOpenAI) -> None:
    responses = [
        ModelResponse(call=0, content="forced 0", tool_calls=[{"id": "call_f", "name": "add", "args": {"a": 4}}]),
        ModelResponse(call=1, content="forced 1"),
        ModelResponse(call=2, content="forced 2"),
    ]
    before = len(_Server.requests)
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=responses)})) as calls:
        completion = await aclient.chat.completions.create(model=MODEL, messages=_user("a"), seed=2)
        stream = await aclient.chat.completions.create(model=MODEL, messages=_user("b"), stream=True,
                                                       stream_options={"include_usage": True})
        assert isinstance(stream, RecordedAsyncStream)
        chunks = [c async for c in stream]
        async with await aclient.chat.completions.create(model=MODEL, messages=_user("c"), stream=True) as early:
            await early.__anext__()
        live = await aclient.chat.completions.create(model=MODEL, messages=_user("plain"))
    assert len(_Server.requests) == before + 1
    assert completion.model == MODEL and completion.id.startswith("chatcmpl-forced-")
    (call,) = completion.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_f", "add", '{"a": 4}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.choices[0].delta.content for c in chunks[:2]] == ["forced 1", None]
    assert chunks[-1].usage is not None and len(chunks) == 3
    assert live.choices[0].message.content == "hello there"
    forced, streamed, closed, real = calls.model_calls
    assert forced.params == {"seed": 2, "tools": [], "forced": True}
    assert forced.response == {"content": "forced 0", "tool_calls": [{"id": "call_f", "name": "add", "arguments": {"a": 4}}]}
    assert forced.finish_reason == "tool_calls"
    assert (streamed.response["content"], streamed.finish_reason, streamed.params["forced"]) == ("forced 1", "stop", True)
    assert (closed.response["content"], closed.finish_reason, closed.params["forced"]) == ("forced 2", None, True)
    assert (real.params, real.response["content"], real.finish_reason) == ({"tools": []}, "hello there", "stop")
    assert (real.prompt_tokens, real.completion_tokens) == (11, 6)


def test_forced_response_helpers_on_their_own() -> None:
    forced = ModelResponse(content="hi", tool_calls=[{"name": "add", "args": {"b": 1}}, {"name": "mul"}])
    completion = _forced_completion(forced, "m")
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("add", '{"b": 1}'), ("mul", "{}")]
    assert all(c.id.startswith("call_") for c in calls)
    chunks = _forced_chunks(forced, {"model": "m", "stream_options": None})
    assert [t.index for t in chunks[0].choices[0].delta.tool_calls] == [0, 1]
    assert [c.choices[0].finish_reason for c in chunks] == [None, "tool_calls"]
    assert len(_forced_chunks(ModelResponse(content="x"), {"model": "m", "stream_options": {}})) == 2


def test_a_forced_call_is_recorded_as_it_was_asked(client: openai.OpenAI) -> None:
    """A forced response needs no valid request: what was asked is recorded as it was."""
    responses = [ModelResponse(call=0, content="no messages"), ModelResponse(call=1, content="no role")]
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=responses)})) as calls:
        client.chat.completions.create(model=MODEL)  # type: ignore[call-overload]
        client.chat.completions.create(model=MODEL, messages=[{"content": "bare"}])  # type: ignore[list-item]
    assert [(c.request, c.response["content"]) for c in calls.model_calls] == [
        ([], "no messages"), ([{"role": "", "content": "bare"}], "no role")]


class _Clock:
    """Stands for `time` in the instrument module: `perf_counter` reads the given instants."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)

    def time(self) -> float:
        return time.time()


def test_latency_is_end_minus_start_in_milliseconds(client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """By the module's clock each call lasts 250 ms: plain, streamed and forced alike."""
    forced = ModelResponse(call=2, content="forced")
    with _in_step(Directives(steps={"agent#0": StepDirectives(model_responses=[forced])})) as calls:
        monkeypatch.setattr(_instrument, "time", _Clock(calls.started + 1.0, calls.started + 1.25))
        client.chat.completions.create(model=MODEL, messages=_user("plain"))
        monkeypatch.setattr(_instrument, "time", _Clock(calls.started + 2.0, calls.started + 2.25))
        list(client.chat.completions.create(model=MODEL, messages=_user("long"), stream=True))
        monkeypatch.setattr(_instrument, "time", _Clock(calls.started + 3.0, calls.started + 3.25))
        client.chat.completions.create(model=MODEL, messages=_user("plain"))
    assert [c.response["content"] for c in calls.model_calls][::2] == ["hello there", "forced"]
    for call in calls.model_calls:
        assert call.latency_ms == pytest.approx(250.0, rel=1e-6)


def test_a_call_the_sdk_refuses_is_recorded_with_its_error(client: openai.OpenAI) -> None:
    with collect_calls() as calls, pytest.raises(TypeError, match="Missing required arguments") as raised:
        client.chat.completions.create(messages=_user("plain"))  # type: ignore[call-overload]
    (call,) = calls.model_calls
    assert (call.model, call.request, call.finish_reason) == ("", _user("plain"), "error")
    assert call.response == {"content": "", "tool_calls": [], "error": f"TypeError: {raised.value}"}
