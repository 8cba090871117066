"""Recording and replaying the chat completions a user's own openai client makes in a step.

`instrument(client)` wraps the client's `chat.completions.create`. Each call made inside a
recorded step is reported as a `ModelCallRecord` (backend "openai"); a streamed call is reported
once its stream is used up or closed, a call that raises with its error (as `CallCapture` does).
Inside a replayed step a forced response (`next_model_call`) comes back as a real `ChatCompletion`, or as `ChatCompletionChunk`s when
streaming, without a request, and tools the replay took away from the node are not sent. Of a
request's parameters only decoding settings and tool names are recorded: never a key or header.

Calls through `with_raw_response` / `with_streaming_response` pass through unrecorded: they
return HTTP responses, not completions. openai is imported only once a client is instrumented,
since importing it takes over a second.
"""

from __future__ import annotations

import contextvars
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from counterfact.capture._capture import chat_message, model_settings
from counterfact.capture._directives import (
    ModelResponse,
    next_model_call,
    step_instruction,
)
from counterfact.capture._intercept import forced_tool_calls, without_removed_tools
from counterfact.capture._payloads import parse_tool_arguments, to_jsonable
from counterfact.capture._records import ModelCallRecord, report_model_call

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

Client = TypeVar("Client", "OpenAI", "AsyncOpenAI")

_MARK = "__counterfact_instrumented__"


def instrument(client: Client) -> Client:
    """Record and replay `client`'s chat completions (a no-op for a client already done)."""
    import openai

    completions = client.chat.completions
    if not getattr(completions.create, _MARK, False):
        hook = _hook_async if isinstance(client, openai.AsyncOpenAI) else _hook_sync
        create = hook(completions.create)
        setattr(create, _MARK, True)
        completions.create = create  # type: ignore[method-assign]
    return client


def _hook_sync(create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    def hooked(**kwargs: Any) -> Any:
        if _raw(kwargs):
            return create(**kwargs)
        kwargs, call = _begin(kwargs)
        stream = bool(kwargs.get("stream"))
        if (forced := next_model_call()[1]) is not None:
            call.forced = True
            if stream:
                chunks = iter(_forced_chunks(forced, kwargs))
                return RecordedStream(chunks, lambda: None, call)
            return call.completed(_forced_completion(forced, kwargs["model"]))
        try:
            result = create(**kwargs)
        except BaseException as error:
            call.failed(error)
            raise
        return RecordedStream(result, result.close, call) if stream else call.completed(result)

    return hooked


def _hook_async(create: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(create)
    async def hooked(**kwargs: Any) -> Any:
        if _raw(kwargs):
            return await create(**kwargs)
        kwargs, call = _begin(kwargs)
        stream = bool(kwargs.get("stream"))
        if (forced := next_model_call()[1]) is not None:
            call.forced = True
            if stream:
                return RecordedAsyncStream(_aiter(_forced_chunks(forced, kwargs)), _nothing, call)
            return call.completed(_forced_completion(forced, kwargs["model"]))
        try:
            result = await create(**kwargs)
        except BaseException as error:
            call.failed(error)
            raise
        return RecordedAsyncStream(result, result.close, call) if stream else call.completed(result)

    return hooked


def _raw(kwargs: dict[str, Any]) -> bool:
    from openai._constants import RAW_RESPONSE_HEADER

    return RAW_RESPONSE_HEADER in (kwargs.get("extra_headers") or {})


# -- the record of one call ----------------------------------------------------------------


@dataclass
class _Call:
    """A call being made: where its record goes, when it began, and what it asked for."""

    context: contextvars.Context
    at: float
    record: ModelCallRecord
    forced: bool = False

    def completed(self, completion: ChatCompletion) -> ChatCompletion:
        choice = next(iter(completion.choices), None)
        message = getattr(choice, "message", None)
        usage = completion.usage
        self.report(
            content=getattr(message, "content", None) or "",
            tool_calls=[
                {
                    "id": tool_call.id,
                    "name": tool_call.function.name,
                    "arguments": parse_tool_arguments(tool_call.function.arguments),
                }
                for tool_call in getattr(message, "tool_calls", None) or []
                if getattr(tool_call, "function", None) is not None  # not a custom tool call
            ],
            finish_reason=getattr(choice, "finish_reason", None),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
        return completion

    def failed(self, error: BaseException) -> None:
        """The call raised (the API refused it, the connection failed): reported with its error."""
        self.report(content="", tool_calls=[], finish_reason="error", prompt_tokens=0, completion_tokens=0,
                    error=f"{type(error).__name__}: {error}")

    def report(
        self,
        *,
        content: str,
        tool_calls: list[dict[str, Any]],
        finish_reason: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        error: str | None = None,
    ) -> None:
        params = {**self.record.params, "forced": True} if self.forced else self.record.params
        response: dict[str, Any] = {"content": content, "tool_calls": tool_calls}
        if error is not None:
            response["error"] = error
        record = self.record.model_copy(
            update={
                "params": params,
                "response": response,
                "finish_reason": finish_reason,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "latency_ms": (time.perf_counter() - self.at) * 1000,
            }
        )
        self.context.run(report_model_call, record)


def _begin(kwargs: dict[str, Any]) -> tuple[dict[str, Any], _Call]:
    """The request to send (its messages read once, removed tools left out), and its call."""
    from openai import NotGiven, Omit

    kwargs = without_removed_tools(dict(kwargs))
    if "messages" in kwargs:
        kwargs["messages"] = list(kwargs["messages"])  # any iterable: it is read twice
        if (note := step_instruction()) is not None:
            kwargs["messages"].append({"role": "user", "content": note})
    given = {k: v for k, v in kwargs.items() if not isinstance(v, (NotGiven, Omit))}
    record = ModelCallRecord(
        backend="openai",
        model=str(given.get("model", "")),
        params=model_settings(given),
        request=[_request_message(m) for m in given.get("messages", [])],
        response={},
    )
    return kwargs, _Call(contextvars.copy_context(), time.perf_counter(), record)


def _request_message(message: Any) -> dict[str, Any]:
    fields = to_jsonable(message)  # a dict, or a response message sent back, as SDK objects
    return chat_message(
        fields.get("role", ""),
        fields.get("content"),
        name=fields.get("name"),
        tool_calls=[
            {
                "id": tool_call.get("id"),
                "name": tool_call["function"]["name"],
                "arguments": parse_tool_arguments(tool_call["function"].get("arguments")),
            }
            for tool_call in fields.get("tool_calls") or []
            if "function" in tool_call
        ],
        tool_call_id=fields.get("tool_call_id"),
    )


# -- streams -------------------------------------------------------------------------------


@dataclass
class _Seen:
    """What a stream delivered so far, assembled from its chunks."""

    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, chunk: ChatCompletionChunk) -> None:
        if chunk.usage is not None:
            self.prompt_tokens = chunk.usage.prompt_tokens
            self.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            self.finish_reason = choice.finish_reason or self.finish_reason
            self.content.append(choice.delta.content or "")
            for delta in choice.delta.tool_calls or []:
                call = self.tool_calls.setdefault(delta.index, {"id": None, "name": "", "text": ""})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["text"] += delta.function.arguments or ""

    def report_to(self, call: _Call) -> None:
        call.report(
            content="".join(self.content),
            tool_calls=[
                {"id": c["id"], "name": c["name"], "arguments": parse_tool_arguments(c["text"])}
                for _, c in sorted(self.tool_calls.items())
            ],
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


class _Recording:
    """Reports a stream's call once, when the stream ends, fails or is closed."""

    def __init__(self, source: Any, call: _Call) -> None:
        self._source = source
        self._call = call
        self._seen = _Seen()
        self._done = False

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._seen.report_to(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)  # e.g. `response` of an SDK stream


class RecordedStream(_Recording):
    """A sync chat-completion stream whose call is recorded."""

    def __init__(self, source: Iterator[Any], close: Callable[[], object], call: _Call) -> None:
        super().__init__(source, call)
        self._close = close

    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        try:
            chunk = next(self._source)
        except BaseException:
            self._finish()
            raise
        self._seen.add(chunk)
        return chunk

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._finish()
        self._close()


class RecordedAsyncStream(_Recording):
    """An async chat-completion stream whose call is recorded."""

    def __init__(
        self, source: AsyncIterator[Any], close: Callable[[], Awaitable[object]], call: _Call
    ) -> None:
        super().__init__(source, call)
        self._close = close

    def __aiter__(self) -> RecordedAsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        try:
            chunk = await self._source.__anext__()
        except BaseException:
            self._finish()
            raise
        self._seen.add(chunk)
        return chunk

    async def __aenter__(self) -> RecordedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._finish()
        await self._close()


async def _aiter(chunks: list[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
    for chunk in chunks:
        yield chunk


async def _nothing() -> None:
    return None


# -- forced responses ----------------------------------------------------------------------


def _forced_message(forced: ModelResponse) -> tuple[dict[str, Any], str]:
    """The assistant message (OpenAI wire format) of a forced response, and its finish reason."""
    calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in forced_tool_calls(forced)
    ]
    message = {"role": "assistant", "content": forced.content, "tool_calls": calls or None}
    return message, "tool_calls" if calls else "stop"


def _forced_completion(forced: ModelResponse, model: str) -> ChatCompletion:
    from openai.types.chat import ChatCompletion

    message, finish_reason = _forced_message(forced)
    return ChatCompletion.model_validate(
        {
            "id": f"chatcmpl-forced-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        }
    )


def _forced_chunks(forced: ModelResponse, kwargs: dict[str, Any]) -> list[ChatCompletionChunk]:
    """A forced response as a stream: its message, its finish, and (if asked for) usage."""
    from openai.types.chat import ChatCompletionChunk

    message, finish_reason = _forced_message(forced)
    if message["tool_calls"]:
        message["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
    head = {
        "id": f"chatcmpl-forced-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": kwargs["model"],
    }
    bodies: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": message, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]},
    ]
    if (kwargs.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        bodies.append({"choices": [], "usage": usage})
    return [ChatCompletionChunk.model_validate({**head, **body}) for body in bodies]
