"""The chat-model interface every backend implements, and the values it exchanges."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from counterfact._errors import CounterfactError


class ToolCall(BaseModel):
    """A tool call requested by the model."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        """The call in the Chat Completions wire shape (arguments as a JSON string)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": json.dumps(self.arguments)}}


class ChatMessage(BaseModel):
    """One chat message in OpenAI's shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class GenerationSettings(BaseModel):
    """Decoding settings; temperature 0 means greedy."""

    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    # The reply must be JSON matching this schema: enforced during decoding on local models,
    # sent as a `response_format` json_schema to OpenAI-compatible endpoints.
    json_schema: dict[str, Any] | None = None


class ModelRequest(BaseModel):
    """One request to a chat model: what every backend, wrapper and server passes on whole, so
    a new request field reaches them all without another parameter on each signature."""

    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage]
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    tools: list[dict[str, Any]] | None = None  # OpenAI-format tool specs
    activation_edits: list[Any] | None = None  # `ActivationEdit`s or their dicts (white-box only)

    def tool_names(self) -> list[str | None]:
        """The offered tools' names, as traces record them."""
        return [t.get("function", {}).get("name") for t in self.tools or []]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(BaseModel):
    """A model's answer to one request."""

    text: str
    finish_reason: Literal["stop", "length", "tool_calls", "error"] = "stop"
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    model: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ModelError(CounterfactError):
    """A model could not be used (bad configuration, unreachable endpoint, ...); one line."""


class ContextLengthExceeded(ModelError):
    """The prompt does not fit the model's context window: the request's fault, not the model's."""


class ChatModel(ABC):
    """A chat model. `white_box` models run in this process and accept activation edits."""

    backend: str = "base"
    white_box: bool = False

    @property
    @abstractmethod
    def name(self) -> str:
        """The model's name as recorded in traces."""

    @abstractmethod
    def complete(self, request: ModelRequest) -> Completion:
        """Answer `request`."""

    async def acomplete(self, request: ModelRequest) -> Completion:
        """Async variant; backends with a native async path override it."""
        import asyncio

        return await asyncio.to_thread(self.complete, request)

    async def astream(self, request: ModelRequest) -> AsyncGenerator[str | Completion, None]:
        """Check the request, then return its stream: text deltas as they are decoded, then the
        finished `Completion`, whose text starts with the deltas joined (anything not streamed
        yet follows them). A refused request raises here, before anything is streamed.

        This default answers the whole completion first and streams it as one `Completion`;
        backends that decode token by token override it. Closing the stream early stops it.
        """
        completion = await self.acomplete(request)

        async def finished() -> AsyncGenerator[str | Completion, None]:
            yield completion

        return finished()

    def forget_answers(self) -> None:
        """Drop answers kept to answer repeated requests from, if the backend keeps any."""
