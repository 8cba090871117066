"""The OpenAI backend against real HTTP servers on loopback, driven by the real openai SDK."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    ModelError,
    ModelRequest,
    OpenAIChatModel,
    ScriptedChatModel,
    ToolCall,
    Usage,
    create_app,
    running_server,
)
from counterfact.capture import collect_calls

from ..cluster.delayed import delayed_server

KEY = "test-key"


def _ask(text: str, **fields: Any) -> ModelRequest:
    return ModelRequest(messages=[ChatMessage(role="user", content=text)], **fields)


def _echo(messages: list[ChatMessage]) -> Completion:
    last = messages[-1]
    if last.content == "use the calculator":
        return Completion(
            text="",
            tool_calls=[ToolCall(id="call_1", name="calculator", arguments={"expression": "2+3"})],
        )
    return Completion(
        text=f"echo: {last.content}", usage=Usage(prompt_tokens=7, completion_tokens=3)
    )


@pytest.fixture(scope="module")
def scripted() -> ScriptedChatModel:
    return ScriptedChatModel(_echo, name="echo-model")


@pytest.fixture(scope="module")
def base_url(scripted: ScriptedChatModel) -> Iterator[str]:
    with running_server(create_app(scripted)) as url:
        yield url


def test_complete_round_trip_with_settings_and_record(
    base_url: str, scripted: ScriptedChatModel
) -> None:
    model = OpenAIChatModel("echo-model", base_url=base_url, api_key=KEY)
    settings = GenerationSettings(max_tokens=17, temperature=0.5, top_p=0.9, seed=42, stop=["END"])
    with collect_calls() as calls:
        completion = model.complete(_ask("hello", settings=settings))
    assert completion.text == "echo: hello"
    assert completion.usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert completion.model == "echo-model"
    assert scripted.requests[-1].settings == settings
    [record] = calls.model_calls
    assert record.backend == "openai"
    assert record.params["seed"] == 42
    assert record.request == [{"role": "user", "content": "hello"}]
    assert record.response["content"] == "echo: hello"
    assert KEY not in record.model_dump_json()


def test_tool_calls_are_sent_and_parsed(base_url: str, scripted: ScriptedChatModel) -> None:
    model = OpenAIChatModel("echo-model", base_url=base_url, api_key=KEY)
    spec = {
        "type": "function",
        "function": {"name": "calculator", "description": "d", "parameters": {"type": "object"}},
    }
    completion = model.complete(_ask("use the calculator", tools=[spec]))
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [
        ToolCall(id="call_1", name="calculator", arguments={"expression": "2+3"})
    ]
    assert scripted.requests[-1].tools == [spec]
    # A history with an assistant tool call and a tool result round-trips to the server.
    history = [
        ChatMessage(role="user", content="use the calculator"),
        ChatMessage(role="assistant", tool_calls=completion.tool_calls),
        ChatMessage(role="tool", content="5", tool_call_id="call_1", name="calculator"),
    ]
    assert model.complete(ModelRequest(messages=history)).text == "echo: 5"
    assert scripted.requests[-1].messages == history


async def test_acomplete_runs_concurrently() -> None:
    """Four calls are in flight at the server at once (its delay is an asyncio sleep)."""
    with delayed_server(lambda messages: f"echo: {messages[-1].content}", 0.3) as (url, served):
        model = OpenAIChatModel("brain", base_url=url, api_key=KEY)
        results = await asyncio.gather(
            *(model.acomplete(_ask(f"m{i}")) for i in range(4))
        )
    assert [r.text for r in results] == [f"echo: m{i}" for i in range(4)]
    assert served.peak == 4


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_endpoint_limit_caps_calls_in_flight(asynchronous: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from counterfact.agents import LocalCallLimit, set_call_limit

    with delayed_server(lambda messages: "ok", 0.2) as (url, served):
        model = OpenAIChatModel("brain", base_url=url, api_key=KEY)
        set_call_limit(LocalCallLimit(2))
        try:
            if asynchronous:
                async def six() -> list[Completion]:
                    return await asyncio.gather(*(model.acomplete(_ask("x")) for _ in range(6)))

                results = asyncio.run(six())
            else:
                with ThreadPoolExecutor(6) as pool:
                    results = list(pool.map(lambda _: model.complete(_ask("x")), range(6)))
        finally:
            set_call_limit(None)
    assert [r.text for r in results] == ["ok"] * 6 and served.calls == 6
    assert served.peak == 2


def test_check_lists_the_model(base_url: str) -> None:
    OpenAIChatModel("echo-model", base_url=base_url, api_key=KEY).check()
    with pytest.raises(ModelError, match=r"'other' is not served at .*it lists: echo-model"):
        OpenAIChatModel("other", base_url=base_url, api_key=KEY).check()


def test_activation_edits_are_refused(base_url: str) -> None:
    model = OpenAIChatModel("echo-model", base_url=base_url, api_key=KEY)
    with pytest.raises(ModelError, match="black-box"):
        model.complete(_ask("x", activation_edits=[object()]))


def test_missing_key_for_openai_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4o-mini")


def test_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    model = OpenAIChatModel("echo-model")
    assert model.base_url == base_url
    assert model.complete(_ask("hi")).text == "echo: hi"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    model = OpenAIChatModel("m", base_url=url, api_key=KEY, max_retries=0)
    start = time.monotonic()
    with pytest.raises(ModelError, match=f"cannot reach .*{url}"):
        model.check()
    with pytest.raises(ModelError, match=f"cannot reach .*{url}"):
        model.complete(_ask("x"))
    assert time.monotonic() - start < 5


def _flaky_app(failures: list[int], seen: list[float]) -> FastAPI:
    """Answers the given error statuses in turn, then a valid completion."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        seen.append(time.monotonic())
        if len(seen) <= len(failures):
            status = failures[len(seen) - 1]
            return JSONResponse({"error": {"message": "busy", "type": "x"}}, status_code=status)
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "finally"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    return app


def test_retries_429_and_500_with_exponential_backoff() -> None:
    seen: list[float] = []
    with running_server(_flaky_app([429, 500], seen)) as url:
        model = OpenAIChatModel("m", base_url=url, api_key=KEY, max_retries=3)
        assert model.complete(_ask("x")).text == "finally"
    assert len(seen) == 3
    first_wait, second_wait = seen[1] - seen[0], seen[2] - seen[1]
    assert first_wait >= 0.3
    assert second_wait >= 1.4 * first_wait  # doubled, minus at most 25 percent jitter


def test_gives_up_after_max_retries_with_one_line_error() -> None:
    seen: list[float] = []
    with running_server(_flaky_app([503, 503], seen)) as url:
        model = OpenAIChatModel("m", base_url=url, api_key=KEY, max_retries=1)
        with pytest.raises(ModelError) as info:
            model.complete(_ask("x"))
    assert len(seen) == 2
    assert "HTTP 503" in str(info.value) and url in str(info.value)
    assert "\n" not in str(info.value)


async def test_async_errors_are_model_errors_too() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    model = OpenAIChatModel("m", base_url=url, api_key=KEY, max_retries=0)
    with pytest.raises(ModelError, match=f"cannot reach .*{url}"):
        await model.acomplete(_ask("x"))


def test_timeout_is_reported() -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(1.0)
        return {}

    with running_server(app) as url:
        model = OpenAIChatModel("m", base_url=url, api_key=KEY, timeout=0.2, max_retries=0)
        start = time.monotonic()
        with pytest.raises(ModelError, match=f"request to {url} timed out"):
            model.complete(_ask("x"))
        assert time.monotonic() - start < 0.9
