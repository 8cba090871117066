"""The model server on the embedded model under the real `openai` client: token-by-token
streaming, a mid-stream disconnect freeing its batch row at once, 32 concurrent clients for a
bounded time, and the limits' 4xx (benchmarks/bench_server_load.py runs the longer load)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from counterfact.agents import (
    DEFAULT_MAX_TOKENS_LIMIT,
    LocalModel,
    create_app,
    running_server,
)

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Name three colours.",
    "What is the capital of France?",
    "Give me a tip for sleeping well.",
    "Why is the sea salty?",
    "Write a haiku about rain.",
    "What do bees make?",
    "How many legs does a spider have?",
    "Suggest a name for a cat.",
]
LONG_ANSWER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Repeat the word 'hello' 500 times."}
]


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="test-key", max_retries=0, timeout=120)


def _ask(question: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": question}]


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until `condition()` holds; fails after `within`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not so within {within} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_the_openai_client_streams_token_by_token_what_it_would_get_whole(
    embedded: LocalModel,
) -> None:
    with running_server(create_app(embedded)) as url:
        client = _client(url)
        for question in QUESTIONS[:2]:
            stream = await client.chat.completions.create(
                model="m", messages=_ask(question), max_tokens=40, temperature=0, stream=True,
                stream_options={"include_usage": True},
            )
            deltas: list[str] = []
            arrivals: list[float] = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic())
                    deltas.append(chunk.choices[0].delta.content)
            ended = time.monotonic()
            assert chunk.usage is not None and len(deltas) > chunk.usage.completion_tokens // 2
            # streamed as decoded: the deltas span the decoding, not one moment at its end
            assert arrivals[-1] - arrivals[0] > (ended - arrivals[0]) / 2, (arrivals, ended)
            whole = await client.chat.completions.create(
                model="m", messages=_ask(question), max_tokens=40, temperature=0
            )
            assert "".join(deltas) == whole.choices[0].message.content
        await client.close()


async def test_a_client_that_disconnects_mid_stream_frees_its_batch_row_at_once(
    embedded: LocalModel,
) -> None:
    with running_server(create_app(embedded)) as url:
        client = _client(url)
        stream = await client.chat.completions.create(
            model="m", messages=LONG_ANSWER, max_tokens=2000, temperature=0, stream=True
        )
        received = 0
        async for chunk in stream:
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received == 8:
                break
        assert embedded.engine.active == 1
        await stream.close()  # the connection goes: the client disconnected
        freed_in = await _until(lambda: embedded.engine.active == 0, within=1.0)

        # The same request, whole and just longer: generation would have gone on for at least
        # 60 more tokens (seconds on this model), and the server still answers.
        started = time.monotonic()
        longer = await client.chat.completions.create(
            model="m", messages=LONG_ANSWER, max_tokens=received + 60, temperature=0
        )
        took = time.monotonic() - started
        await client.close()
    assert longer.choices[0].finish_reason == "length"
    assert took * 60 / (received + 60) > 2 * freed_in, (took, freed_in)


async def test_32_concurrent_clients_half_streaming_get_well_formed_replies(
    embedded: LocalModel,
) -> None:
    max_tokens = 24
    with running_server(create_app(embedded)) as url:
        deadline = time.monotonic() + 15

        async def whole(client: openai.AsyncOpenAI, question: str) -> None:
            reply = await client.chat.completions.create(
                model="m", messages=_ask(question), max_tokens=max_tokens, temperature=0
            )
            [choice] = reply.choices
            assert choice.message.role == "assistant" and choice.message.content
            assert reply.usage is not None and 0 < reply.usage.completion_tokens <= max_tokens
            assert choice.finish_reason in ("stop", "length")
            if choice.finish_reason == "length":
                assert reply.usage.completion_tokens == max_tokens

        async def streamed(client: openai.AsyncOpenAI, question: str) -> None:
            stream = await client.chat.completions.create(
                model="m", messages=_ask(question), max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            *with_choices, last = chunks
            assert with_choices[0].choices[0].delta.role == "assistant"
            finishes = [c.choices[0].finish_reason for c in with_choices]
            assert finishes[:-1] == [None] * (len(finishes) - 1)
            assert finishes[-1] in ("stop", "length")
            contents = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
            assert last.choices == [] and last.usage is not None
            assert 0 < len(contents) <= last.usage.completion_tokens <= max_tokens
            assert len({c.id for c in chunks}) == 1

        async def one_client(index: int) -> int:
            client = _client(url)
            ask = streamed if index % 2 else whole
            replies = 0
            while time.monotonic() < deadline:
                await ask(client, QUESTIONS[(index + replies) % len(QUESTIONS)])
                replies += 1
            await client.close()
            return replies

        replies = await asyncio.gather(*(one_client(i) for i in range(32)))
        assert embedded.engine.active == 0
    assert min(replies) >= 1, replies


async def test_the_limits_are_4xx_for_the_openai_client(embedded: LocalModel) -> None:
    with running_server(create_app(embedded, max_request_bytes=100_000)) as url:
        client = _client(url)
        with pytest.raises(openai.BadRequestError) as too_many:
            await client.chat.completions.create(
                model="m", messages=_ask("hi"), max_tokens=DEFAULT_MAX_TOKENS_LIMIT + 1
            )
        assert too_many.value.param == "max_tokens"
        assert f"at most {DEFAULT_MAX_TOKENS_LIMIT}" in too_many.value.message
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as too_long:
                await client.chat.completions.create(
                    model="m", messages=_ask("word " * 9000), max_tokens=8, stream=stream
                )
            assert too_long.value.param == "messages"
            assert f"the context window is {embedded.context_window}" in too_long.value.message
        with pytest.raises(openai.APIStatusError) as too_big:
            await client.chat.completions.create(model="m", messages=_ask("x" * 150_000), max_tokens=8)
        assert too_big.value.status_code == 413
        assert "limit of 100000 bytes" in too_big.value.message
        reply = await client.chat.completions.create(model="m", messages=_ask("hi"), max_tokens=4)
        assert reply.choices[0].message.content
        await client.close()
