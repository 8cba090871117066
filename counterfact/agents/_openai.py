"""A black-box chat model behind any OpenAI-compatible endpoint, on the official openai SDK.

Configuration comes from the arguments, else `OPENAI_BASE_URL` / `OPENAI_API_KEY`. An API key is
required only for OpenAI's own API (api.openai.com, the default base URL); a local or self-hosted
server often needs none, so there a placeholder key is sent. The key is never recorded.

Retries: the SDK's own `max_retries` is used. It retries connection errors, 408, 409, 429 and every
5xx with exponential backoff (0.5 s doubling per attempt, capped at 8 s, minus up to 25 percent
jitter) and honours a server's `Retry-After` of up to two minutes.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlparse

import openai

from counterfact.agents._limits import call_limit
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    ModelError,
    ModelRequest,
    ToolCall,
    Usage,
)
from counterfact.capture import ModelCallRecord, parse_tool_arguments, report_model_call

OPENAI_API_BASE = "https://api.openai.com/v1"
_FINISH_REASONS = {"stop", "length", "tool_calls"}


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    """A `ChatMessage` in the Chat Completions request shape."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [call.to_openai() for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class OpenAIChatModel(ChatModel):
    """A model served by an OpenAI-compatible API. Black-box: activation edits are refused."""

    backend = "openai"
    white_box = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self._model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_API_BASE).rstrip(
            "/"
        )
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if urlparse(self.base_url).hostname == "api.openai.com":
                raise ModelError(
                    "no API key for OpenAI's API: set OPENAI_API_KEY or pass api_key "
                    "(or set OPENAI_BASE_URL to a local server that needs none)"
                )
            key = "no-key-needed"
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": key,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client = openai.OpenAI(**options)
        self._async_client = openai.AsyncOpenAI(**options)
        # OpenAI's own API deprecates max_tokens; compatible servers commonly know only it.
        self._max_tokens_field = (
            "max_completion_tokens"
            if urlparse(self.base_url).hostname == "api.openai.com"
            else "max_tokens"
        )

    @property
    def name(self) -> str:
        return self._model

    def check(self) -> None:
        """Fail fast, before a run: the endpoint must answer `/models` and list this model."""
        client = self._client.with_options(max_retries=0, timeout=10.0)
        try:
            listed = [m.id for m in client.models.list()]
        except openai.APIError as exc:
            raise self._error(exc) from None
        if listed and self._model not in listed:
            raise ModelError(
                f"model {self._model!r} is not served at {self.base_url}; "
                f"it lists: {', '.join(listed[:20])}"
            )

    def complete(self, request: ModelRequest) -> Completion:
        body = self._body(request)
        limit = call_limit()
        start = time.perf_counter()
        try:
            with limit.hold(self.base_url) if limit is not None else nullcontext():
                response = self._client.chat.completions.create(**body)
        except openai.APIError as exc:
            raise self._error(exc) from None
        return self._completion(request, response, start)

    async def acomplete(self, request: ModelRequest) -> Completion:
        body = self._body(request)
        limit = call_limit()
        if limit is not None:  # waiting for a place must not block the event loop
            await asyncio.to_thread(limit.acquire, self.base_url)
        start = time.perf_counter()
        try:
            response = await self._async_client.chat.completions.create(**body)
        except openai.APIError as exc:
            raise self._error(exc) from None
        finally:
            if limit is not None:
                limit.release(self.base_url)
        return self._completion(request, response, start)

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        """The Chat Completions request body, shared by the sync and async calls."""
        if request.activation_edits:
            raise ModelError(
                f"model {self._model!r} at {self.base_url} is a remote black-box model: "
                "activation edits need a local white-box model"
            )
        settings = request.settings
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [to_openai_message(m) for m in request.messages],
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            self._max_tokens_field: settings.max_tokens,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        if settings.stop:
            body["stop"] = settings.stop
        if request.tools:
            body["tools"] = request.tools
        if settings.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": settings.json_schema, "strict": True},
            }
        return body

    def _completion(self, request: ModelRequest, response: Any, start: float) -> Completion:
        """The completion in `response`, reported to the trace recorder (shared by both calls)."""
        latency_ms = (time.perf_counter() - start) * 1000
        if not response.choices:
            raise ModelError(f"{self.base_url} returned no choices for model {self._model!r}")
        choice = response.choices[0]
        tool_calls = [
            ToolCall(
                id=call.id,
                name=call.function.name,
                arguments=parse_tool_arguments(call.function.arguments),
            )
            for call in choice.message.tool_calls or []
            if getattr(call, "function", None) is not None
        ]
        usage = response.usage
        completion = Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason
            if choice.finish_reason in _FINISH_REASONS
            else "stop",
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            latency_ms=latency_ms,
            model=response.model or self._model,
            tool_calls=tool_calls,
        )
        report_model_call(
            ModelCallRecord(
                backend=self.backend,
                model=self._model,
                params={**request.settings.model_dump(), "tools": request.tool_names()},
                request=[m.model_dump(exclude_defaults=True) for m in request.messages],
                response={
                    "content": completion.text,
                    "tool_calls": [c.model_dump() for c in tool_calls],
                },
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                latency_ms=latency_ms,
            )
        )
        return completion

    def _error(self, exc: openai.APIError) -> ModelError:
        """A one-line error naming the endpoint; never includes the key or headers."""
        if isinstance(exc, openai.APITimeoutError):
            return ModelError(f"request to {self.base_url} timed out")
        if isinstance(exc, openai.APIConnectionError):
            return ModelError(f"cannot reach the OpenAI-compatible endpoint at {self.base_url}")
        if isinstance(exc, openai.AuthenticationError):
            return ModelError(f"{self.base_url} rejected the API key (HTTP 401)")
        if isinstance(exc, openai.APIStatusError):
            return ModelError(
                f"{self.base_url} answered HTTP {exc.status_code} for model {self._model!r}: "
                f"{_one_line(exc.message)}"
            )
        return ModelError(f"{self.base_url}: {_one_line(exc.message)}")
