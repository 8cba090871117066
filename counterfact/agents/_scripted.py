"""A deterministic chat model that replies from a script, for fast unit tests (never a default)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelError,
)
from counterfact.capture._records import ModelCallRecord, report_model_call

Reply = str | Completion
Script = Callable[[list[ChatMessage]], Reply] | Sequence[Reply] | Mapping[str, Reply]


class ScriptedRequest(BaseModel):
    """One request the scripted model received, kept so tests can check what reached it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    messages: list[ChatMessage]
    settings: GenerationSettings
    tools: list[dict[str, Any]] | None = None
    activation_edits: list[Any] | None = None


class ScriptedChatModel(ChatModel):
    """Replies from `script`, which is one of:

    - a function `(messages) -> str | Completion`;
    - a list of replies, returned in order (a `ModelError` once they run out);
    - a table from the last user message's text to the reply (whitespace-trimmed exact match;
      `default` answers anything else, or a `ModelError` names the unmatched message).

    `white_box=True` makes it accept activation edits (recorded, not applied) so code that
    forwards edits can be tested without a real local model.
    """

    backend = "scripted"

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        default: Reply | None = None,
        white_box: bool = False,
    ) -> None:
        self._script = script
        self._name = name
        self._default = default
        self._position = 0
        self.white_box = white_box
        self.requests: list[ScriptedRequest] = []

    @property
    def name(self) -> str:
        return self._name

    def complete(
        self,
        messages: list[ChatMessage],
        settings: GenerationSettings | None = None,
        *,
        tools: list[dict[str, Any]] | None = None,
        activation_edits: list[Any] | None = None,
    ) -> Completion:
        settings = settings or GenerationSettings()
        if activation_edits and not self.white_box:
            raise ModelError("scripted model is black-box: it does not accept activation edits")
        self.requests.append(
            ScriptedRequest(
                messages=list(messages),
                settings=settings,
                tools=tools,
                activation_edits=activation_edits,
            )
        )
        reply = self._reply(messages)
        completion = (
            reply.model_copy(update={"model": reply.model or self._name})
            if isinstance(reply, Completion)
            else Completion(text=reply, model=self._name)
        )
        if completion.tool_calls and completion.finish_reason == "stop":
            completion = completion.model_copy(update={"finish_reason": "tool_calls"})
        report_model_call(
            ModelCallRecord(
                backend=self.backend,
                model=self._name,
                params={**settings.model_dump(), **({"tools": [t.get("function", {}).get("name") for t in tools]} if tools else {})},
                request=[m.model_dump(exclude_defaults=True) for m in messages],
                response={
                    "content": completion.text,
                    "tool_calls": [c.model_dump() for c in completion.tool_calls],
                },
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
            )
        )
        return completion

    def _reply(self, messages: list[ChatMessage]) -> Reply:
        if callable(self._script):
            return self._script(messages)
        if isinstance(self._script, Mapping):
            last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
            reply = self._script.get(last_user.strip(), self._default)
            if reply is None:
                raise ModelError(f"scripted model has no reply for user message {last_user!r}")
            return reply
        if self._position >= len(self._script):
            if self._default is not None:
                return self._default
            raise ModelError(f"scripted model ran out of replies after {self._position} calls")
        reply = self._script[self._position]
        self._position += 1
        return reply
