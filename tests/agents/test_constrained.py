"""Constrained decoding: replies forced to match a JSON schema on the local engine, through
`counterfact serve`, and sent as `response_format` by the OpenAI backend."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from fastapi import Request
from fastapi.responses import Response

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    LocalModel,
    ModelError,
    ModelRequest,
    OpenAIChatModel,
    ScriptedChatModel,
    calculator_tool,
    create_app,
    running_server,
)
from counterfact.agents._constrained import Grammars
from counterfact.capture import collect_calls

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "step": {"type": "integer", "enum": [1, 2, 3, 4]},
        "agent": {"type": "string", "maxLength": 12},
    },
    "required": ["step", "agent"],
    "additionalProperties": False,
}
HYPOTHESES = [
    "Which step of the run failed?",
    "The planner wrote a wrong date at step 2. Which agent caused the failure?",
    "A coder and a reviewer worked on a bug. Who broke the build, and at which step?",
    "Name the agent who made the mistake.",
    "The search agent returned nothing at step 3. What went wrong?",
]


def msgs(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def ask(text: str, settings: GenerationSettings | None = None, **fields: Any) -> ModelRequest:
    """A request of the one user message `text`."""
    return ModelRequest(messages=msgs(text), settings=settings or GenerationSettings(), **fields)


def conforms(text: str) -> bool:
    """Whether `text` is JSON matching SCHEMA (checked by hand: jsonschema is not installed)."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and set(value) == {"step", "agent"}
        and type(value["step"]) is int
        and value["step"] in SCHEMA["properties"]["step"]["enum"]
        and isinstance(value["agent"], str)
        and len(value["agent"]) <= SCHEMA["properties"]["agent"]["maxLength"]
    )


def complete_concurrently(
    model: LocalModel, jobs: list[tuple[str, GenerationSettings]]
) -> list[Completion]:
    """Submit all jobs from threads at once, so the engine decodes them in one batch."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: model.complete(ask(job[0], job[1])), jobs))


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "hypothesis", "schema": schema},
    }


# --- the engine, on a tiny random model with the embedded model's tokenizer ---------------------


def test_importing_counterfact_does_not_import_xgrammar() -> None:
    code = (
        "import sys, counterfact, counterfact.agents._local, counterfact.agents._serve; "
        "print('xgrammar' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_random_model_is_forced_into_the_schema_and_free_rows_are_untouched(
    tiny: LocalModel,
) -> None:
    """Random weights never write JSON by themselves; masked, every row does, in schema order,
    and an unconstrained row decoding in the same batch gives the tokens it gives alone."""
    free = GenerationSettings(max_tokens=24)
    alone = tiny.complete(ask(HYPOTHESES[0], free)).text
    tiny.engine.memo.clear()  # the batch decodes it anew
    constrained = GenerationSettings(max_tokens=120, json_schema=SCHEMA)
    sampled = constrained.model_copy(update={"temperature": 1.0, "top_p": 0.9})
    jobs = [
        (HYPOTHESES[0], free),
        (HYPOTHESES[0], constrained),
        (HYPOTHESES[1], sampled.model_copy(update={"seed": 1})),
        (HYPOTHESES[2], sampled.model_copy(update={"seed": 2})),
    ]
    free_reply, *replies = complete_concurrently(tiny, jobs)
    assert free_reply.text == alone
    assert not conforms(alone)
    for reply in replies:
        assert reply.finish_reason == "stop", reply.text
        assert conforms(reply.text), reply.text
        assert list(json.loads(reply.text)) == ["step", "agent"]


def test_the_schema_is_recorded_with_the_call(tiny: LocalModel) -> None:
    with collect_calls() as calls:
        tiny.complete(ask("Hi", GenerationSettings(max_tokens=120, json_schema=SCHEMA)))
    (record,) = calls.model_calls
    assert record.params["json_schema"] == SCHEMA
    assert conforms(record.response["content"])


def test_grammars_are_cached_by_schema_json_in_a_small_lru(tiny: LocalModel) -> None:
    grammars = Grammars(
        tiny.tokenizer, tiny.model.config.vocab_size, tiny.engine.eos_ids, capacity=2
    )
    first = grammars.compile(SCHEMA)
    assert grammars.compile(copy.deepcopy(SCHEMA)) is first
    # Property order is the order the reply writes them in, so it is part of the key.
    reordered = {**SCHEMA, "properties": dict(reversed(SCHEMA["properties"].items()))}
    assert grammars.compile(reordered) is not first
    # A third schema evicts the least recently used one.
    grammars.compile({"type": "integer"})
    assert grammars.compile(SCHEMA) is not first


def test_bad_schemas_and_tools_are_one_line_model_errors(tiny: LocalModel) -> None:
    def refused(schema: dict[str, Any], **fields: Any) -> None:
        tiny.complete(ask("Hi", GenerationSettings(max_tokens=4, json_schema=schema), **fields))

    with pytest.raises(
        ModelError, match=r'^cannot use json_schema: Unsupported type "nosuchtype"$'
    ):
        refused({"type": "nosuchtype"})
    with pytest.raises(
        ModelError, match=r"^cannot use json_schema: enum must be an array$"
    ):
        refused({"type": "integer", "enum": 3})
    with pytest.raises(ModelError, match="json_schema and tools cannot be combined"):
        refused(SCHEMA, tools=[calculator_tool().spec()])


# --- the server and the OpenAI backend, over a scripted model -----------------------------------


async def test_serve_maps_response_format_to_the_schema() -> None:
    scripted = ScriptedChatModel(lambda _: '{"step": 1, "agent": "coder"}')
    transport = httpx.ASGITransport(app=create_app(scripted))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def post(**extra: Any) -> httpx.Response:
            body = {"messages": [{"role": "user", "content": "hi"}], **extra}
            return await client.post("/v1/chat/completions", json=body)

        cases: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = [
            (response_format(SCHEMA), SCHEMA),
            ({"type": "json_object"}, {"type": "object"}),
            ({"type": "text"}, None),
            (None, None),
        ]
        for given, expected in cases:
            extra = {} if given is None else {"response_format": given}
            assert (await post(**extra)).status_code == 200
            assert scripted.requests[-1].settings.json_schema == expected

        for bad, text in [
            ({"type": "xml"}, "unsupported response_format type 'xml'"),
            (
                {"type": "json_schema", "json_schema": {"name": "x"}},
                "needs a schema object",
            ),
        ]:
            response = await post(response_format=bad)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["param"] == "response_format" and text in error["message"]
            assert error["type"] == "invalid_request_error"


def test_openai_backend_sends_response_format() -> None:
    bodies: list[dict[str, Any]] = []
    app = create_app(ScriptedChatModel(lambda _: '{"step": 2, "agent": "planner"}'))

    @app.middleware("http")
    async def keep_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        bodies.append(json.loads(await request.body()))
        return await call_next(request)

    with running_server(app) as url:
        remote = OpenAIChatModel("m", base_url=url, max_retries=0)
        reply = remote.complete(ask("hi", GenerationSettings(json_schema=SCHEMA)))
        remote.complete(ask("hi"))
    assert conforms(reply.text)
    assert bodies[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True},
    }
    assert "response_format" not in bodies[1]


# --- the embedded model -------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_replies_match_the_schema_greedy_and_sampled(
    embedded: LocalModel,
) -> None:
    greedy = GenerationSettings(max_tokens=64, json_schema=SCHEMA)
    jobs = [(prompt, greedy) for prompt in HYPOTHESES] + [
        (
            prompt,
            greedy.model_copy(update={"temperature": 0.8, "top_p": 0.95, "seed": seed}),
        )
        for seed, prompt in enumerate(HYPOTHESES[:3])
    ]
    replies = complete_concurrently(embedded, jobs)
    for reply in replies:
        assert reply.finish_reason == "stop", reply.text
        assert conforms(reply.text), reply.text


@pytest.mark.slow
def test_embedded_without_the_schema_answers_in_prose(embedded: LocalModel) -> None:
    """The same prompt, in the same batch: only the constraint makes the reply JSON."""
    free, constrained = complete_concurrently(
        embedded,
        [
            (HYPOTHESES[0], GenerationSettings(max_tokens=24)),
            (HYPOTHESES[0], GenerationSettings(max_tokens=64, json_schema=SCHEMA)),
        ],
    )
    with pytest.raises(ValueError):
        json.loads(free.text)
    assert conforms(constrained.text), constrained.text


@pytest.mark.slow
def test_embedded_over_http_with_response_format(embedded: LocalModel) -> None:
    with running_server(create_app(embedded)) as url:
        client = openai.OpenAI(base_url=url, api_key="test-key", max_retries=0)
        response = client.chat.completions.create(
            model=embedded.name,
            messages=[{"role": "user", "content": HYPOTHESES[1]}],
            max_tokens=64,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "hypothesis", "schema": SCHEMA, "strict": True},
            },
        )
        assert response.choices[0].finish_reason == "stop"
        assert conforms(response.choices[0].message.content or "")

        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model=embedded.name,
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"response_format": {"type": "xml"}},
            )
        assert raised.value.status_code == 400
        body = raised.value.body
        assert isinstance(body, dict) and body["param"] == "response_format"

        remote = OpenAIChatModel(embedded.name, base_url=url, max_retries=0)
        reply = remote.complete(
            ask(HYPOTHESES[3], GenerationSettings(max_tokens=64, json_schema=SCHEMA))
        )
        assert conforms(reply.text), reply.text
