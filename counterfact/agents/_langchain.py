"""`ChatCounterfact`: counterfact's models as a LangChain chat model, for users' own graphs.

A user's LangGraph graph runs on the same models as counterfact's agents:
`ChatCounterfact(model="embedded")`, `"local:PATH"` or `"openai:MODEL"`. The spec is resolved
once per process (`shared_model`), so every instance naming a local model shares its weights
and batching engine.

Tools (`bind_tools`) reach remote models as native OpenAI tool specs. White-box local models
are too small for those, so, as with counterfact's agents, they are taught the text protocol of
`counterfact.agents._tools`: the tools are described in the system message, `CALL` lines in the
answer become the AI message's `tool_calls` (the lines themselves are taken out of its text),
and the tool messages of the next request go back as one user message of `RESULT` lines. The
backend then gets no tool specs, so a local model does not teach them a second time.

Inside a recorded step a replay's directives apply as in counterfact's agent nodes: its
temperature, the step's seed, a response prefix and activation edits; and, as the recorder's
LangChain hooks do for other chat models, a response forced for the step's nth model call
(returned without calling the model) and tools taken away from the node. Recording: the backend
reports each call to the trace recorder itself (a forced response is reported here), so the
LangChain model carries the metadata `{"counterfact_recorded": True}`, which tells the
recorder's LangChain callback handler and hooks to leave it alone (otherwise every call would be
stored twice).

Streaming: the backends return whole completions, so `stream`/`astream` yield the answer (with
its tool calls, usage and metadata) as one chunk.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages import ChatMessage as LangChainChatMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, field_validator

from counterfact.agents._agent import forced_completion
from counterfact.agents._registry import shared_model
from counterfact.agents._tools import (
    format_text_results,
    parse_spec_calls,
    spec_protocol_prompt,
)
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelError,
    ModelRequest,
    ToolCall,
)
from counterfact.capture import (
    SELF_RECORDING,
    ModelResponse,
    ToolCallRecord,
    current_directives,
    next_model_call,
    rewrite_prompt,
    step_seed,
    step_temperature,
    with_rewritten_tools,
    without_removed_tools,
)


class ChatCounterfact(BaseChatModel):
    """A LangChain chat model over a counterfact model spec (or a `ChatModel` instance).

    `temperature` 0 is greedy; a sampled request without a seed gets a random one, reported in
    `response_metadata["seed"]`, so the answer can be reproduced.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | ChatModel = "embedded"
    temperature: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=256, gt=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] | None = Field(default=None, exclude=True, validate_default=True)

    @field_validator("metadata")
    @classmethod
    def _marked_recorded(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        """Always carry the mark, also next to the user's own metadata."""
        return {**(value or {}), SELF_RECORDING: True}

    @property
    def chat_model(self) -> ChatModel:
        """The counterfact model behind this one (loaded on first use, shared in the process)."""
        return self.model if isinstance(self.model, ChatModel) else shared_model(self.model)

    @property
    def _llm_type(self) -> str:
        return "counterfact"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model if isinstance(self.model, str) else self.model.name,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` to the model; `tool_choice` "none" offers none and a tool's name only
        that one. "any"/"required" offer all: the backends cannot force a call."""
        specs = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=_chosen(specs, tool_choice), **kwargs)

    # --- generation ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._model_call(messages, stop, **kwargs)
        message = AIMessage(**call.reply(call.send()))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._model_call(messages, stop, **kwargs)
        message = AIMessage(**call.reply(await call.asend()))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._model_call(messages, stop, **kwargs)
        yield _one_chunk(call.reply(call.send()))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._model_call(messages, stop, **kwargs)
        yield _one_chunk(call.reply(await call.asend()))

    def _model_call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> _ModelCall:
        """The backend call for `messages`, under the directives aimed at this step."""
        model = self.chat_model
        directives, here = current_directives()
        replay_seed = step_seed()
        settings = GenerationSettings(
            max_tokens=self.max_tokens,
            temperature=self.temperature if (forced_t := step_temperature()) is None else forced_t,
            top_p=self.top_p,
            seed=self.seed if replay_seed is None else replay_seed,
            stop=_merged(self.stop, stop or []),
        )
        if settings.temperature > 0 and settings.seed is None:
            settings.seed = secrets.randbits(31)
        tools = with_rewritten_tools(without_removed_tools({"tools": tools})).get("tools")
        conversation = [m.model_copy(update={"content": rewrite_prompt(m.content)}) if m.role == "system" else m
                        for m in to_chat_messages(messages, text_protocol=model.white_box)]
        protocol = (tools or []) if model.white_box else []
        if protocol:
            conversation = _with_instructions(conversation, spec_protocol_prompt(protocol))
            # A model writing its own "RESULT" line is inventing a tool's answer: stop it there.
            marks = [f"RESULT {spec['function']['name']}" for spec in protocol]
            settings.stop = _merged(settings.stop, marks)
        edits = here.activation_edits if here is not None and here.activation_edits else None
        if edits and not model.white_box:
            raise ModelError(
                f"model {model.name!r} ({model.backend}) is black-box: "
                "activation edits need a local white-box model"
            )
        if here is not None and here.instruction:
            conversation.append(ChatMessage(role="user", content=here.instruction))
        prefix = here.prefix if here is not None and here.prefix else None
        if prefix:
            conversation.append(ChatMessage(role="assistant", content=prefix))
        return _ModelCall(
            model=model,
            request=ModelRequest(
                messages=conversation,
                settings=settings,
                tools=None if model.white_box else tools or None,
                activation_edits=edits,
            ),
            protocol=protocol,
            prefix=prefix,
            forced=next_model_call()[1],
        )


@dataclass(frozen=True)
class _ModelCall:
    """One backend call: its request, and what is needed to turn its completion into an AI
    message."""

    model: ChatModel
    request: ModelRequest  # its tools are native tool specs (remote models only)
    protocol: list[dict[str, Any]]  # tool specs taught by the text protocol (white-box models)
    prefix: str | None
    forced: ModelResponse | None  # the replay's response for this call: the model is not called

    def send(self) -> Completion:
        if self.forced is not None:
            return forced_completion(self.model, self.request, self.forced)
        return self.model.complete(self.request)

    async def asend(self) -> Completion:
        if self.forced is not None:
            return forced_completion(self.model, self.request, self.forced)
        return await self.model.acomplete(self.request)

    def reply(self, completion: Completion) -> dict[str, Any]:
        """The AI message's fields for `completion`."""
        text = completion.text
        if self.prefix and self.forced is None and not text.startswith(self.prefix):
            text = self.prefix + text  # the model continued the prefix; the reply is both
        calls = completion.tool_calls
        if not calls and self.protocol:
            calls = parse_spec_calls(text, self.protocol)
            if calls:
                text = "\n".join(
                    line for line in text.splitlines() if not parse_spec_calls(line, self.protocol)
                ).strip()
        finish = completion.finish_reason
        usage = completion.usage
        return {
            "content": text,
            "tool_calls": [
                {"type": "tool_call", "id": c.id, "name": c.name, "args": c.arguments}
                for c in calls
            ],
            "usage_metadata": UsageMetadata(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                total_tokens=usage.prompt_tokens + usage.completion_tokens,
            ),
            "response_metadata": {
                "finish_reason": "tool_calls" if calls and finish == "stop" else finish,
                "model_name": completion.model or self.model.name,
                "seed": self.request.settings.seed,
            },
        }


def _one_chunk(fields: dict[str, Any]) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(**fields, chunk_position="last"))


def _merged(first: list[str], second: list[str]) -> list[str]:
    return [*first, *(s for s in second if s not in first)]


def _chosen(
    specs: list[dict[str, Any]], tool_choice: str | dict[str, Any] | bool | None
) -> list[dict[str, Any]]:
    """The specs offered under `tool_choice`."""
    if tool_choice in (None, True, "auto", "any", "required"):
        return specs
    if tool_choice in (False, "none"):
        return []
    name = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else tool_choice
    chosen = [spec for spec in specs if spec["function"]["name"] == name]
    if not chosen:
        known = ", ".join(spec["function"]["name"] for spec in specs) or "none"
        raise ValueError(f"tool_choice {tool_choice!r} names no bound tool; bound tools: {known}")
    return chosen


# --- messages -----------------------------------------------------------------------------------

_PLAIN_ROLES = {"system", "user", "assistant"}  # roles a generic LangChain ChatMessage may have


def to_chat_messages(
    messages: Sequence[BaseMessage], *, text_protocol: bool = False
) -> list[ChatMessage]:
    """LangChain messages as counterfact `ChatMessage`s (only their text content is kept).

    With `text_protocol` (white-box models), an AI message's tool calls become `CALL` lines of
    its text and each run of tool messages becomes one user message of `RESULT` lines, as in
    counterfact's own agents' conversations with these models.
    """
    out: list[ChatMessage] = []
    tool_names: dict[str, str] = {}  # tool call id -> tool name, for tool messages without one
    results: list[ToolCallRecord] = []
    for message in messages:
        if isinstance(message, AIMessage):
            tool_names.update((c["id"], c["name"]) for c in message.tool_calls if c["id"])
        if text_protocol and isinstance(message, ToolMessage):
            name = message.name or tool_names.get(message.tool_call_id, "tool")
            results.append(ToolCallRecord(name=name, result=str(message.text)))
            continue
        if results:
            out.append(ChatMessage(role="user", content=format_text_results(results)))
            results = []
        out.append(_chat_message(message, text_protocol, tool_names))
    if results:
        out.append(ChatMessage(role="user", content=format_text_results(results)))
    return out


def _chat_message(
    message: BaseMessage, text_protocol: bool, tool_names: dict[str, str]
) -> ChatMessage:
    text = str(message.text)
    if isinstance(message, SystemMessage):
        return ChatMessage(role="system", content=text, name=message.name)
    if isinstance(message, HumanMessage):
        return ChatMessage(role="user", content=text, name=message.name)
    if isinstance(message, AIMessage):
        calls = [
            ToolCall(id=call["id"] or "", name=call["name"], arguments=call["args"])
            for call in message.tool_calls
        ]
        if text_protocol and calls:
            lines = [f"CALL {call.name} {json.dumps(call.arguments)}" for call in calls]
            content = "\n".join([text, *lines]).strip()
            return ChatMessage(role="assistant", content=content, name=message.name)
        return ChatMessage(role="assistant", content=text, name=message.name, tool_calls=calls)
    if isinstance(message, ToolMessage):
        return ChatMessage(
            role="tool",
            content=text,
            name=message.name or tool_names.get(message.tool_call_id),
            tool_call_id=message.tool_call_id,
        )
    if isinstance(message, LangChainChatMessage) and message.role in _PLAIN_ROLES:
        return ChatMessage.model_validate(
            {"role": message.role, "content": text, "name": message.name}
        )
    raise ModelError(f"cannot send a {type(message).__name__} to a counterfact model")


def _with_instructions(messages: list[ChatMessage], instructions: str) -> list[ChatMessage]:
    """`messages` with `instructions` at the end of the system message (one is added if none)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        taught = first.model_copy(update={"content": f"{first.content}\n\n{instructions}"})
        return [taught, *messages[1:]]
    return [ChatMessage(role="system", content=instructions), *messages]
