"""Serve any `ChatModel` over an OpenAI-compatible HTTP API (`/v1/chat/completions`, `/v1/models`).

Other tools and agents can then talk to a local white-box model as if it were a remote one. Besides
the usual fields (seed, temperature, top_p, max_tokens or max_completion_tokens, stop, tools,
response_format: text, json_object or json_schema, enforced during decoding on a local model) a
request may carry the extension field `counterfact_activation_edits`: a list of `ActivationEdit`
objects as JSON, applied to that request only. Requests go through `model.acomplete` (or
`model.astream`), so concurrent requests reach a batching local backend concurrently.

`stream=true` is answered with server-sent events in OpenAI's chunk shape (a role delta, content
deltas, a finish chunk, a usage chunk with `stream_options.include_usage`, `data: [DONE]`) through
`model.astream`: a local model streams plain text token by token, but with tools, a JSON schema or
stop strings its text comes in one delta once done, as does any other model's. The response
starts as soon as the request is accepted, so a client that disconnects mid-stream cancels its
generation (a local model's batch drops the row before its next step).

Limits, each refused with a 4xx in OpenAI's error JSON shape (as every error here): a request body
over `max_request_bytes` (413, before the body is read when Content-Length says so), `max_tokens`
or `max_completion_tokens` over `max_tokens_limit` (400), a prompt over the model's context window
(400, param `messages`). `serve` binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counterfact._errors import validation_message
from counterfact.agents._limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TOKENS_LIMIT,
)
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    ContextLengthExceeded,
    GenerationSettings,
    ModelError,
    ModelRequest,
    ToolCall,
)
from counterfact.capture import parse_tool_arguments


class _FunctionCall(BaseModel):
    name: str
    arguments: str = "{}"


class _RequestToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: _FunctionCall


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class _RequestMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None
    tool_calls: list[_RequestToolCall] | None = None
    tool_call_id: str | None = None

    def to_chat_message(self) -> ChatMessage:
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise _ApiError(400, "only text content parts are supported", "messages")
            content = "".join(part.text or "" for part in self.content)
        else:
            content = self.content or ""
        return ChatMessage(
            role="system" if self.role == "developer" else self.role,
            content=content,
            name=self.name,
            tool_calls=[
                ToolCall(
                    id=call.id,
                    name=call.function.name,
                    arguments=parse_tool_arguments(call.function.arguments),
                )
                for call in self.tool_calls or []
            ],
            tool_call_id=self.tool_call_id,
        )


class _StreamOptions(BaseModel):
    include_usage: bool = False


class _ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(BaseModel):
    """A tool offered to the model, in OpenAI's shape (checked here, not in the model)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: _ToolFunction


class _ResponseFormat(BaseModel):
    type: str
    json_schema: dict[str, Any] | None = None

    def schema_for_settings(self) -> dict[str, Any] | None:
        """The JSON schema the reply must match, or None for free text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "object"}
        if self.type != "json_schema":
            raise _ApiError(
                400,
                f"unsupported response_format type {self.type!r}; "
                "use text, json_object or json_schema",
                "response_format",
            )
        schema = (self.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise _ApiError(
                400, "response_format json_schema needs a schema object", "response_format"
            )
        return schema


class ChatCompletionRequest(BaseModel):
    """The supported subset of an OpenAI Chat Completions request, plus counterfact's extension."""

    model: str | None = None
    messages: list[_RequestMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    response_format: _ResponseFormat | None = None
    counterfact_activation_edits: list[dict[str, Any]] | None = None

    def settings(self, max_tokens_limit: int) -> GenerationSettings:
        """The decoding settings; `max_tokens_limit` refuses a larger request and caps the default."""
        requested = self.max_completion_tokens or self.max_tokens
        if requested is not None and requested > max_tokens_limit:
            field = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            raise _ApiError(
                400,
                f"{field} is {requested}; this server allows at most {max_tokens_limit}",
                field,
            )
        values: dict[str, Any] = {
            "max_tokens": requested or min(GenerationSettings().max_tokens, max_tokens_limit),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            "json_schema": self.response_format.schema_for_settings()
            if self.response_format
            else None,
        }
        return GenerationSettings(**{k: v for k, v in values.items() if v is not None})


class _ApiError(Exception):
    """An error answered in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _too_large(limit: int) -> _ApiError:
    return _ApiError(413, f"request body over this server's limit of {limit} bytes")


class _BodyLimit:
    """Refuses a request body over `limit` bytes with a 413 in OpenAI's shape: before reading
    it when Content-Length says so, else once the bytes read (of a chunked body) pass the limit.
    (Starlette's own limit answers in plain text.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit).response()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # an HTTPException, so that FastAPI passes it on from its body reading
                    raise StarletteHTTPException(413)
            return message

        await self.app(scope, limited, send)


def _parse_edits(raw: list[dict[str, Any]] | None, model: ChatModel) -> list[Any] | None:
    """Validate the activation edits of a request with the local backend's `ActivationEdit`."""
    if not raw:
        return None
    if not model.white_box:
        raise _ApiError(
            400,
            f"model {model.name!r} is black-box: counterfact_activation_edits need a local model",
            "counterfact_activation_edits",
        )
    from counterfact.agents._activations import ActivationEdit

    try:
        return [ActivationEdit.model_validate(edit) for edit in raw]
    except ValidationError as exc:
        raise _ApiError(
            400, f"invalid activation edit: {_describe(exc)}", "counterfact_activation_edits"
        ) from None


def _describe(exc: ValidationError | RequestValidationError) -> str:
    return validation_message(exc, every=True, skip=("body",))  # type: ignore[arg-type]


def create_app(
    model: ChatModel,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT,
) -> FastAPI:
    """An OpenAI-compatible API serving `model` under its own name, whatever a request names."""
    app = FastAPI(title="counterfact model server")
    app.add_middleware(_BodyLimit, limit=max_request_bytes)

    @app.exception_handler(_ApiError)
    async def api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            return _ApiError(400, f"request body is not valid JSON: {errors[0]['msg']}").response()
        first = errors[0]["loc"] if errors else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return _ApiError(400, _describe(exc), param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not UTF-8, say), in OpenAI's error shape too
        if exc.status_code == 413:  # from _BodyLimit, raised while the body was read
            return _too_large(max_request_bytes).response()
        return _ApiError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> JSONResponse:
        return _ApiError(404, f"no route {request.url.path}", kind="not_found_error").response()

    @app.exception_handler(405)
    async def bad_method(request: Request, _: Exception) -> JSONResponse:
        return _ApiError(405, f"{request.method} not allowed on {request.url.path}").response()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model.name, "object": "model", "created": 0, "owned_by": model.backend}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        if body.n != 1:
            raise _ApiError(400, "only n=1 is supported", "n")
        messages = [m.to_chat_message() for m in body.messages]
        edits = _parse_edits(body.counterfact_activation_edits, model)
        request = ModelRequest(
            messages=messages,
            settings=body.settings(max_tokens_limit),
            tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools is not None else None,
            activation_edits=edits,
        )
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.name}
        try:
            if body.stream:
                events = await model.astream(request)
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return StreamingResponse(
                    _chunks(head, events, include_usage), media_type="text/event-stream"
                )
            completion = await model.acomplete(request)
        except ContextLengthExceeded as exc:
            raise _ApiError(400, str(exc), "messages") from None
        except ModelError as exc:
            raise _ApiError(500, str(exc), kind="model_error") from None
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        if completion.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in completion.tool_calls]
        choice = {
            "index": 0, "message": message, "finish_reason": _finish_reason(completion), "logprobs": None
        }
        return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(completion)}

    return app


def _finish_reason(completion: Completion) -> str:
    return "stop" if completion.finish_reason == "error" else completion.finish_reason


def _usage(completion: Completion) -> dict[str, int]:
    prompt, generated = completion.usage.prompt_tokens, completion.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


async def _chunks(
    head: dict[str, Any], events: AsyncGenerator[str | Completion, None], include_usage: bool
) -> AsyncIterator[str]:
    """A model's stream as Chat Completions chunks, ending with `[DONE]`. The stream is closed
    however this ends, so a client's disconnect stops the generation too. An error after the
    response started can only be told in the stream: an `error` event, as OpenAI sends."""
    head = {**head, "object": "chat.completion.chunk"}

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    streamed: list[str] = []
    completion: Completion | None = None
    async with aclosing(events):
        try:
            async for item in events:
                if isinstance(item, Completion):
                    completion = item
                elif item:
                    streamed.append(item)
                    yield event({"content": item})
            if completion is None:
                raise ModelError("the model's stream ended without its completion")
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in the stream
            error = _ApiError(500, str(exc) or type(exc).__name__, kind="model_error")
            yield f"data: {json.dumps(error.body())}\n\n"
            return
    sent = "".join(streamed)
    if len(completion.text) > len(sent) and completion.text.startswith(sent):
        yield event({"content": completion.text[len(sent) :]})
    if completion.tool_calls:
        calls = [{"index": i, **call.to_openai()} for i, call in enumerate(completion.tool_calls)]
        yield event({"tool_calls": calls})
    yield event({}, _finish_reason(completion))
    if include_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(completion)})}\n\n"
    yield "data: [DONE]\n\n"


def serve(
    model_spec: str = "embedded",
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT,
) -> None:
    """Serve the model named by `model_spec` (see `resolve_model`) until interrupted."""
    from counterfact.agents._registry import resolve_model

    app = create_app(
        resolve_model(model_spec), max_request_bytes=max_request_bytes, max_tokens_limit=max_tokens_limit
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` under uvicorn in a background thread on a free port; yields its `/v1` base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the model server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
