"""The OpenAI-compatible server, the model registry, and (slow) the embedded model over HTTP;
streaming, its cancellation down to the engine's batch, and the server's limits."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from counterfact.agents import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    LocalModel,
    ModelError,
    ModelRequest,
    OpenAIChatModel,
    ScriptedChatModel,
    ToolCall,
    Usage,
    _serve,
    create_app,
    resolve_model,
    running_server,
)
from counterfact.agents._engine import Request

from .passes import CountingPasses


def _client(model: ChatModel) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(model))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def scripted() -> ScriptedChatModel:
    return ScriptedChatModel(
        lambda messages: Completion(
            text=f"echo: {messages[-1].content}", usage=Usage(prompt_tokens=5, completion_tokens=2)
        ),
        name="echo-model",
        white_box=True,
    )


@pytest.fixture
async def client(scripted: ScriptedChatModel) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(scripted) as client:
        yield client


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "whatever", "messages": [{"role": "user", "content": "hi"}], **extra}


def _assert_error(response: httpx.Response, status: int, param: str | None, text: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert text in error["message"]


async def test_models_lists_the_served_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json()["data"][0]["id"] == "echo-model"


@pytest.mark.parametrize("name", ["echo-model", "smollm2-135m-instruct", "org/Model-7B:q4_k_m", "model.gguf"])
async def test_every_listed_model_id_is_accepted_by_chat_completions(name: str) -> None:
    model = ScriptedChatModel(lambda messages: Completion(text="ok"), name=name)
    async with _client(model) as client:
        ids = [entry["id"] for entry in (await client.get("/v1/models")).json()["data"]]
        assert ids
        for model_id in ids:
            response = await client.post("/v1/chat/completions", json=_body(model=model_id))
            assert response.status_code == 200, response.text
            assert response.json()["model"] == model_id
            assert response.json()["choices"][0]["message"]["content"] == "ok"


async def test_chat_completion_passes_settings_and_returns_usage(
    client: httpx.AsyncClient, scripted: ScriptedChatModel
) -> None:
    body = _body(max_tokens=12, temperature=0.7, top_p=0.8, seed=11, stop="END")
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "echo-model"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo: hi"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert scripted.requests[-1].settings == GenerationSettings(
        max_tokens=12, temperature=0.7, top_p=0.8, seed=11, stop=["END"]
    )
    await client.post("/v1/chat/completions", json=_body(max_completion_tokens=5))
    assert scripted.requests[-1].settings == GenerationSettings(max_tokens=5)


async def test_messages_are_converted(
    client: httpx.AsyncClient, scripted: ScriptedChatModel
) -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calc", "arguments": '{"x": 1}'},
                }
            ],
        },
        {"role": "tool", "content": "2", "tool_call_id": "c1"},
    ]
    response = await client.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 200
    assert scripted.requests[-1].messages == [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="ab"),
        ChatMessage(
            role="assistant", tool_calls=[ToolCall(id="c1", name="calc", arguments={"x": 1})]
        ),
        ChatMessage(role="tool", content="2", tool_call_id="c1"),
    ]


async def test_tool_calls_in_the_response() -> None:
    call = ToolCall(id="c9", name="calculator", arguments={"expression": "1+1"})
    async with _client(ScriptedChatModel([Completion(text="", tool_calls=[call])])) as client:
        data = (await client.post("/v1/chat/completions", json=_body())).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "c9",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'},
        }
    ]


async def test_request_errors_have_openai_shape(client: httpx.AsyncClient) -> None:
    _assert_error(await client.post("/v1/chat/completions", json=_body(n=2)), 400, "n", "n=1")
    _assert_error(
        await client.post("/v1/chat/completions", json=_body(temperature=-1)),
        400,
        "temperature",
        "greater than or equal to 0",
    )
    _assert_error(
        await client.post("/v1/chat/completions", json={"model": "m"}),
        400,
        "messages",
        "Field required",
    )
    _assert_error(
        await client.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        400,
        None,
        "JSON",
    )
    _assert_error(await client.get("/v1/nothing"), 404, None, "/v1/nothing")


def test_streaming_with_the_openai_client() -> None:
    import openai

    call = ToolCall(id="c9", name="calculator", arguments={"expression": "1+1"})
    model = ScriptedChatModel(
        [
            Completion(text="streamed", usage=Usage(prompt_tokens=4, completion_tokens=1)),
            Completion(text="", tool_calls=[call]),
        ]
    )
    with running_server(create_app(model)) as url:
        client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "streamed"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, None, "stop"]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
        tool_chunks = list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    [with_calls] = [c for c in tool_chunks if c.choices and c.choices[0].delta.tool_calls]
    [streamed_call] = with_calls.choices[0].delta.tool_calls or []
    assert (streamed_call.index, streamed_call.id) == (0, "c9")
    assert streamed_call.function is not None
    assert streamed_call.function.arguments == '{"expression": "1+1"}'
    assert tool_chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.usage is None for c in tool_chunks)


async def test_model_error_is_a_500_with_its_message() -> None:
    async with _client(ScriptedChatModel([])) as client:
        response = await client.post("/v1/chat/completions", json=_body())
    _assert_error(response, 500, None, "ran out of replies")
    assert response.json()["error"]["type"] == "model_error"


async def test_activation_edits_are_parsed_and_passed(
    client: httpx.AsyncClient, scripted: ScriptedChatModel
) -> None:
    from counterfact.agents import ActivationEdit

    edit = {"layer": 3, "operation": "scale", "strength": 0.5, "positions": "prompt"}
    body = _body(counterfact_activation_edits=[edit])
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert scripted.requests[-1].activation_edits == [ActivationEdit.model_validate(edit)]
    bad = _body(counterfact_activation_edits=[{"layer": 3, "operation": "add"}])
    _assert_error(
        await client.post("/v1/chat/completions", json=bad),
        400,
        "counterfact_activation_edits",
        "needs a vector",
    )


async def test_activation_edits_refused_for_black_box_models() -> None:
    async with _client(ScriptedChatModel(["x"])) as client:
        body = _body(counterfact_activation_edits=[{"layer": 0, "operation": "scale"}])
        response = await client.post("/v1/chat/completions", json=body)
    _assert_error(response, 400, "counterfact_activation_edits", "black-box")


class _GatheringModel(ChatModel):
    """Answers only once `expected` requests are inside `acomplete` at the same time."""

    backend = "test"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.all_in = asyncio.Event()

    @property
    def name(self) -> str:
        return "gathering"

    def complete(self, request: ModelRequest) -> Completion:
        raise AssertionError("the server must use acomplete")

    async def acomplete(self, request: ModelRequest) -> Completion:
        self.inside += 1
        if self.inside == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=5)
        return Completion(text=request.messages[-1].content)


async def test_concurrent_requests_reach_the_model_concurrently() -> None:
    async with _client(_GatheringModel(3)) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": str(i)}]},
                )
                for i in range(3)
            )
        )
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == ["0", "1", "2"]


def test_serve_resolves_the_spec_and_binds_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_serve.uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    _serve.serve("openai:some-model")
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8000
    assert {route.path for route in calls[0]["app"].routes} >= {
        "/v1/chat/completions",
        "/v1/models",
    }


def test_registry_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = resolve_model("openai:gpt-x")
    assert isinstance(model, OpenAIChatModel) and model.name == "gpt-x"
    with pytest.raises(ModelError, match=r"unknown model spec 'gpt-x'; use one of: embedded"):
        resolve_model("gpt-x")
    with pytest.raises(ModelError, match="unknown model spec 'openai:'"):
        resolve_model("openai:")


def test_registry_local_path_must_exist(tmp_path: Any) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(f"local:{tmp_path}/missing#model.gguf")


@pytest.mark.slow
def test_embedded_model_over_http_with_the_openai_client() -> None:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    from counterfact.agents import load_embedded

    model = load_embedded()
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Name three colours."}
    ]
    with running_server(create_app(model)) as url:
        client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
        listed = [m.id for m in client.models.list()]
        assert listed == [model.name]

        def ask(**extra: Any) -> str:
            response = client.chat.completions.create(
                model=model.name, messages=question, max_tokens=12, temperature=0, seed=1, **extra
            )
            assert response.usage is not None and response.usage.completion_tokens > 0
            return response.choices[0].message.content or ""

        plain = ask()
        assert plain.strip()
        assert ask() == plain  # greedy decoding is deterministic

        async def four() -> list[str]:
            aclient = openai.AsyncOpenAI(base_url=url, api_key="test-key", max_retries=0)
            responses = await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model=model.name, messages=question, max_tokens=12, temperature=0
                    )
                    for _ in range(4)
                )
            )
            return [r.choices[0].message.content or "" for r in responses]

        assert asyncio.run(four()) == [plain] * 4

        edits = [{"layer": 5, "operation": "scale", "strength": 0.0, "positions": "all"}]
        edited = ask(extra_body={"counterfact_activation_edits": edits})
        assert edited != plain
        assert ask() == plain  # the edit applied to that request only


# -- streaming -----------------------------------------------------------------------------


class _StreamingModel(ChatModel):
    """Streams `deltas`, then ends as `end` says: with that completion, by raising that error,
    or (None) never: it waits until the stream is closed. It records that the stream was closed."""

    backend = "test"

    def __init__(self, deltas: list[str], end: Completion | Exception | None) -> None:
        self.deltas = deltas
        self.end = end
        self.closed = threading.Event()  # set from the server's thread

    @property
    def name(self) -> str:
        return "streaming"

    def complete(self, request: ModelRequest) -> Completion:
        raise AssertionError("a stream must go through astream")

    async def astream(self, request: ModelRequest) -> AsyncGenerator[str | Completion, None]:
        async def stream() -> AsyncGenerator[str | Completion, None]:
            try:
                for delta in self.deltas:
                    yield delta
                if self.end is None:
                    await asyncio.Event().wait()
                elif isinstance(self.end, Exception):
                    raise self.end
                else:
                    yield self.end
            finally:
                self.closed.set()

        return stream()


def _events(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of a server-sent event stream, JSON decoded (`[DONE]` as is)."""
    payloads = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


async def test_a_stream_sends_its_deltas_then_the_rest_of_the_completion() -> None:
    end = Completion(text="Hello world", usage=Usage(prompt_tokens=3, completion_tokens=2))
    model = _StreamingModel(["Hel", "lo"], end)
    async with _client(model) as client:
        body = _body(stream=True, stream_options={"include_usage": True})
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, usage, done = _events(response)
    assert done == "[DONE]"
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {"content": " world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
    assert model.closed.is_set()


def test_an_error_after_the_stream_started_reaches_the_openai_client() -> None:
    import openai

    model = _StreamingModel(["partial"], ModelError("the engine broke down"))
    with running_server(create_app(model)) as url:
        client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="the engine broke down"):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial"


def test_a_client_that_disconnects_closes_the_stream_at_once() -> None:
    model = _StreamingModel(["first"], None)
    with running_server(create_app(model)) as url, httpx.Client(timeout=5) as client:
        with client.stream("POST", f"{url}/chat/completions", json=_body(stream=True)) as response:
            lines = response.iter_lines()  # held: a dropped line iterator closes the response
            for line in lines:
                if "first" in line:
                    break
            time.sleep(0.1)
            assert not model.closed.is_set()  # still streaming, waiting for the model
        # leaving the block closes the connection
        assert model.closed.wait(1.0), "the server did not close the stream of a gone client"


# -- limits --------------------------------------------------------------------------------


async def test_a_request_body_over_the_limit_is_a_413(scripted: ScriptedChatModel) -> None:
    app = create_app(scripted, max_request_bytes=1000)
    pulled: list[int] = []

    async def body(chunks: int) -> AsyncIterator[bytes]:
        for i in range(chunks):
            pulled.append(i)
            yield b" " * 400
        yield json.dumps(_body()).encode()

    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", json=_body(padding="x" * 2000))
        _assert_error(response, 413, None, "limit of 1000 bytes")
        declared = {**headers, "content-length": "5000"}
        response = await client.post("/v1/chat/completions", content=body(12), headers=declared)
        _assert_error(response, 413, None, "limit of 1000 bytes")
        assert pulled == []  # refused on the declared length alone, before reading the body
        response = await client.post("/v1/chat/completions", content=body(3), headers=headers)
        _assert_error(response, 413, None, "limit of 1000 bytes")  # chunked, no length declared
        assert pulled == [0, 1, 2]
        assert (await client.post("/v1/chat/completions", json=_body())).status_code == 200


async def test_max_tokens_over_the_limit_is_a_400(scripted: ScriptedChatModel) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(scripted, max_tokens_limit=100)),
        base_url="http://t",
    ) as client:
        for field in ("max_tokens", "max_completion_tokens"):
            for stream in (False, True):
                response = await client.post(
                    "/v1/chat/completions", json=_body(stream=stream, **{field: 101})
                )
                _assert_error(response, 400, field, f"{field} is 101; this server allows at most 100")
        assert scripted.requests == []
        assert (await client.post("/v1/chat/completions", json=_body(max_tokens=100))).status_code == 200
        assert scripted.requests[-1].settings.max_tokens == 100
        await client.post("/v1/chat/completions", json=_body())
        assert scripted.requests[-1].settings.max_tokens == 100  # the default is capped too


async def test_a_prompt_over_the_context_window_is_a_400_naming_messages(tiny: LocalModel) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 600}]}
    async with _client(tiny) as client:
        for stream in (False, True):
            response = await client.post("/v1/chat/completions", json={**long, "stream": stream})
            _assert_error(response, 400, "messages", "the context window is 512")


def test_serve_command_binds_loopback_with_the_default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from counterfact.cli import app

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_serve, "serve", lambda spec, **kw: calls.append({"spec": spec, **kw}))
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert calls[-1] == {
        "spec": "embedded",
        "host": "127.0.0.1",
        "port": 8000,
        "max_request_bytes": _serve.DEFAULT_MAX_REQUEST_BYTES,
        "max_tokens_limit": _serve.DEFAULT_MAX_TOKENS_LIMIT,
    }
    monkeypatch.setenv("COUNTERFACT_MAX_TOKENS_LIMIT", "64")
    result = CliRunner().invoke(app, ["serve", "--max-request-bytes", "4096", "--port", "9001"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["max_tokens_limit"] == 64 and calls[-1]["max_request_bytes"] == 4096
    assert calls[-1]["host"] == "127.0.0.1"
    assert CliRunner().invoke(app, ["serve", "--max-tokens-limit", "0"]).exit_code == 2


# -- a local model's stream, and the engine's side of a disconnect --------------------------


def _ids(model: LocalModel, text: str) -> list[int]:
    return model.prompt_ids([ChatMessage(role="user", content=text)])


async def _collect(events: AsyncGenerator[str | Completion, None]) -> tuple[list[str], Completion]:
    items = [item async for item in events]
    assert isinstance(items[-1], Completion)
    assert all(isinstance(item, str) for item in items[:-1])
    return [item for item in items[:-1] if isinstance(item, str)], items[-1]


async def test_a_local_stream_comes_token_by_token_and_matches_complete(tiny: LocalModel) -> None:
    settings = GenerationSettings(max_tokens=40)
    question = ModelRequest(
        messages=[ChatMessage(role="user", content="Tell me a story.")], settings=settings
    )
    deltas, completion = await _collect(await tiny.astream(question))
    assert len(deltas) > 20  # the tiny model does not stop early: about a delta a token
    assert "".join(deltas) == completion.text == (await tiny.acomplete(question)).text
    assert completion.usage.completion_tokens == 40 and completion.finish_reason == "length"
    with_stop = settings.model_copy(update={"stop": ["never printed"]})
    deltas, completion = await _collect(
        await tiny.astream(question.model_copy(update={"settings": with_stop}))
    )
    assert deltas == [] and completion.text == (await tiny.acomplete(question)).text


async def test_closing_a_local_stream_cancels_its_request(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[Request] = []
    submit = tiny.engine.submit
    monkeypatch.setattr(tiny.engine, "submit", lambda r: submitted.append(r) or submit(r))
    question = [ChatMessage(role="user", content="Tell me a story.")]
    settings = GenerationSettings(max_tokens=450)
    events = await tiny.astream(ModelRequest(messages=question, settings=settings))
    assert submitted == []  # nothing reaches the engine before the stream is read
    assert isinstance(await anext(events), str)
    await events.aclose()
    [request] = submitted
    assert request.future.cancelled()
    await _until(lambda: tiny.engine.active == 0, within=1.0)


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not so within {within} s"
        await asyncio.sleep(0.005)


def test_a_cancelled_row_leaves_the_batch_and_the_others_go_on(tiny: LocalModel) -> None:
    other = _ids(tiny, "Another prompt, of another length.")
    alone = tiny.generate_ids(other, 40, ignore_eos=True)
    produced: list[int] = []
    running = threading.Event()

    def count(token: int) -> None:
        produced.append(token)
        if len(produced) == 5:
            running.set()

    doomed = Request(_ids(tiny, "One."), 400, ignore_eos=True, on_token=count)
    kept = Request(other, 40, ignore_eos=True)
    tiny.engine.submit(doomed)
    tiny.engine.submit(kept)
    assert running.wait(10)
    assert doomed.future.cancel()
    assert kept.future.result(timeout=30).token_ids == alone
    asyncio.run(_until(lambda: tiny.engine.active == 0, within=0.5))
    stopped_at = len(produced)
    time.sleep(0.2)
    assert len(produced) == stopped_at < 100


def test_a_cancelled_queued_request_is_never_admitted(
    tiny: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingPasses(tiny.engine.model)
    monkeypatch.setattr(tiny.engine, "model", counting)
    entered, release = threading.Event(), threading.Event()

    def hold(_: int) -> None:
        """Keeps the engine thread at the first token of `first`, so `queued` stays queued."""
        if not entered.is_set():
            entered.set()
            release.wait(10)

    prompt = _ids(tiny, "Hello.")
    first = Request(prompt, 20, ignore_eos=True, on_token=hold)
    tiny.engine.submit(first)
    assert entered.wait(10)
    chosen: list[int] = []
    queued = Request(prompt, 20, ignore_eos=True, on_token=chosen.append)
    tiny.engine.submit(queued)
    assert queued.future.cancel()
    prefills = counting.prefills
    release.set()
    assert len(first.future.result(timeout=30).token_ids) == 20
    assert chosen == [] and counting.prefills == prefills  # not even its prompt pass ran


def test_a_cancel_racing_with_the_finish_does_not_fail_the_batch(tiny: LocalModel) -> None:
    other = _ids(tiny, "Another prompt, of another length.")
    alone = tiny.generate_ids(other, 30, ignore_eos=True)
    chosen: list[int] = []

    def cancel_on_the_last(token: int) -> None:
        chosen.append(token)
        if len(chosen) == 10:  # the token that finishes it: its result is set just after
            racing.future.cancel()

    racing = Request(_ids(tiny, "One."), 10, ignore_eos=True, on_token=cancel_on_the_last)
    kept = Request(other, 30, ignore_eos=True)
    tiny.engine.submit(racing)
    tiny.engine.submit(kept)
    assert kept.future.result(timeout=30).token_ids == alone
    assert racing.future.cancelled() and len(chosen) == 10
