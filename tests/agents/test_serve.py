"""The OpenAI-compatible server, the model registry, and (slow) the embedded model over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from counterfact.agents import _serve
from counterfact.agents._openai import OpenAIChatModel
from counterfact.agents._registry import resolve_model
from counterfact.agents._scripted import ScriptedChatModel
from counterfact.agents._serve import create_app, running_server
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelError,
    ToolCall,
    Usage,
)


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
        assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "stop"]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
        tool_chunks = list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    [streamed_call] = tool_chunks[0].choices[0].delta.tool_calls or []
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
    from counterfact.agents._activations import ActivationEdit

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

    def complete(self, *args: Any, **kwargs: Any) -> Completion:
        raise AssertionError("the server must use acomplete")

    async def acomplete(self, messages: list[ChatMessage], *args: Any, **kwargs: Any) -> Completion:
        self.inside += 1
        if self.inside == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=5)
        return Completion(text=messages[-1].content)


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

    from counterfact.agents._embedded import load_embedded

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
