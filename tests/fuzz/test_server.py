"""The model server's /v1/chat/completions on fuzzed requests: a 200, or a 4xx JSON error in
OpenAI's shape; never a 500 or a traceback (the scripted model never raises here)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from counterfact.agents import ScriptedChatModel, create_app
from tests.fuzz._mutate import VALUES, dumps, mutated, mutated_bytes
from tests.fuzz.conftest import count

REQUESTS: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
     "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n"], "n": 1},
    {"messages": [{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\": 1}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "4"}],
     "tools": [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}],
     "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
    {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}], "stream": True,
     "stream_options": {"include_usage": True}, "max_completion_tokens": 5,
     "counterfact_activation_edits": [{"layer": 0, "operation": "scale", "strength": 0.5}]},
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    model = ScriptedChatModel(lambda messages: "ok", name="scripted", white_box=True)
    return TestClient(create_app(model), raise_server_exceptions=False)


def _check(prop: str, response: Any, body: Any = None) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code == 200:
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["choices"][0]["message"]["role"] == "assistant"
        count(prop)
        return
    assert 400 <= response.status_code < 500
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert "Traceback" not in error["message"]
    count(prop, "rejected")


def test_real_requests(client: TestClient) -> None:
    for body in REQUESTS:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text


@given(body=st.sampled_from(REQUESTS).flatmap(lambda r: mutated(r, max_mutations=4)))
def test_mutated_requests(client: TestClient, body: Any) -> None:
    response = client.post("/v1/chat/completions", content=dumps(body), headers={"content-type": "application/json"})
    _check("serve: /v1/chat/completions (mutated fields)", response, body)


@given(raw=st.sampled_from(REQUESTS).flatmap(lambda r: mutated_bytes(json.dumps(r).encode())))
def test_broken_json(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    _check("serve: /v1/chat/completions (damaged bytes)", response)


@given(field=st.sampled_from(["max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n", "stop",
                              "stream", "tools", "response_format", "counterfact_activation_edits", "messages",
                              "unknown_field"]),
       value=VALUES | st.sampled_from([10**100, -(10**100), 1e308, "x" * 100_000, [{}] * 1000]))
def test_wrong_types_and_huge_values(client: TestClient, field: str, value: Any) -> None:
    body = {**REQUESTS[0], field: value}
    response = client.post("/v1/chat/completions", content=dumps(body), headers={"content-type": "application/json"})
    _check("serve: /v1/chat/completions (one field retyped)", response, body)


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_oversized_body(client: TestClient, size: int) -> None:
    body = {"messages": [{"role": "user", "content": "x" * size}]}
    _check("serve: /v1/chat/completions (oversized body)", client.post("/v1/chat/completions", json=body))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_not_json_content_type(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    _check("serve: /v1/chat/completions (content type)", client.post("/v1/chat/completions", content=b"a=b", headers=headers))


def test_tool_function_not_an_object_is_a_400(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": [{"name": "f"}]}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_non_utf8_body_gets_openai_error_shape(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", content=b'\xfb{"messages": []}', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
