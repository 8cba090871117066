"""A deterministic chat model that replies from a script, for fast unit tests (never a default)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    ModelError,
    ModelRequest,
)
from counterfact.capture import ModelCallRecord, report_model_call

Reply = str | Completion
Script = Callable[[list[ChatMessage]], Reply] | Sequence[Reply] | Mapping[str, Reply]


class ScriptedChatModel(ChatModel):
    """Replies from `script`, which is one of:

    - a function `(messages) -> str | Completion`;
    - a list of replies, returned in order (a `ModelError` once they run out);
    - a table from the last user message's text to the reply (whitespace-trimmed exact match;
      `default` answers anything else, or a `ModelError` names the unmatched message).

    `white_box=True` makes it accept activation edits (recorded, not applied) so code that
    forwards edits can be tested without a real local model. `requests` keeps every request
    received, so tests can check what reached it.
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
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: ModelRequest) -> Completion:
        if request.activation_edits and not self.white_box:
            raise ModelError("scripted model is black-box: it does not accept activation edits")
        self.requests.append(request)
        reply = self._reply(request.messages)
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
                params={
                    **request.settings.model_dump(),
                    **({"tools": request.tool_names()} if request.tools else {}),
                },
                request=[m.model_dump(exclude_defaults=True) for m in request.messages],
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
