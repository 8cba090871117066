"""An agent: a role (its instructions), a chat model, tools and decoding settings.

`respond` runs the model and executes the tool calls it asks for in a bounded loop. Models that
emit OpenAI tool calls get the tools natively; white-box local models (too small for that) are
taught the text protocol of `counterfact.agents._tools` in the system message instead. Either way
a reply in the other form is still understood, so a mismatch does not silently drop a call.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from counterfact.agents._tools import (
    Tool,
    format_text_results,
    parse_text_calls,
    result_text,
    text_protocol_prompt,
)
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelRequest,
    ToolCall,
)
from counterfact.capture import (
    ModelCallRecord,
    ModelResponse,
    ToolCallRecord,
    forced_tool_calls,
    next_model_call,
    report_model_call,
    report_tool_call,
)

ToolMode = Literal["auto", "native", "text"]


class AgentReply(BaseModel):
    """An agent's final answer, the tool calls it made, and the messages it added on the way."""

    text: str
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    messages: list[ChatMessage] = Field(default_factory=list)
    rounds: int = 0  # tool rounds executed
    hit_round_limit: bool = False  # the model still wanted tools when the limit was reached
    completion: Completion | None = None  # the last model completion


class Agent(BaseModel):
    """A named role played by a chat model with tools. The model is not serialised."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    role: str
    model: ChatModel = Field(exclude=True, repr=False)
    tools: list[Tool] = Field(default_factory=list)
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    max_tool_rounds: int = Field(default=4, ge=0)
    tool_mode: ToolMode = "auto"

    def uses_native_tools(self) -> bool:
        """Whether tools go to the model as OpenAI specs (else as the text protocol)."""
        if self.tool_mode == "auto":
            return not self.model.white_box
        return self.tool_mode == "native"

    def respond(
        self, messages: list[ChatMessage], *, activation_edits: list[Any] | None = None
    ) -> AgentReply:
        """Answer the conversation `messages`, calling tools as the model asks."""
        turn = _Turn(self, messages, activation_edits)
        while True:
            completion = turn.forced() or self.model.complete(turn.request())
            if (reply := turn.step(completion)) is not None:
                return reply

    async def arespond(
        self, messages: list[ChatMessage], *, activation_edits: list[Any] | None = None
    ) -> AgentReply:
        """Async `respond`, so many agents or replays can share a batching backend."""
        turn = _Turn(self, messages, activation_edits)
        while True:
            completion = turn.forced() or await self.model.acomplete(turn.request())
            if (reply := turn.step(completion)) is not None:
                return reply


def forced_completion(model: ChatModel, request: ModelRequest, forced: ModelResponse) -> Completion:
    """A replay's forced response as the completion of `model`, reported as its call (no
    backend sees it, so none reports it)."""
    calls = [
        ToolCall(id=call["id"], name=call["name"], arguments=call["args"]) for call in forced_tool_calls(forced)
    ]
    completion = Completion(
        text=forced.content, tool_calls=calls, model=model.name, finish_reason="tool_calls" if calls else "stop"
    )
    report_model_call(
        ModelCallRecord(
            backend=model.backend,
            model=model.name,
            params={**request.settings.model_dump(), "forced": True},
            request=[m.model_dump(exclude_none=True) for m in request.messages],
            response={"content": forced.content, "tool_calls": [call.model_dump() for call in calls]},
            finish_reason=completion.finish_reason,
        )
    )
    return completion


class _Turn:
    """The state of one `respond` call, shared by the sync and async loops."""

    def __init__(
        self, agent: Agent, messages: list[ChatMessage], activation_edits: list[Any] | None
    ) -> None:
        self.agent = agent
        self.activation_edits = activation_edits
        self.native = agent.uses_native_tools()
        system = agent.role
        if agent.tools and not self.native:
            system = f"{system}\n\n{text_protocol_prompt(agent.tools)}"
        self.conversation = [ChatMessage(role="system", content=system), *messages]
        self.tool_specs = [t.spec() for t in agent.tools] if agent.tools and self.native else None
        self.settings = agent.settings
        if agent.tools and not self.native:
            # A model writing its own "RESULT" line is inventing a tool's answer: stop it there.
            marks = [f"RESULT {t.name}" for t in agent.tools]
            stop = [*agent.settings.stop, *(m for m in marks if m not in agent.settings.stop)]
            self.settings = agent.settings.model_copy(update={"stop": stop})
        self.added: list[ChatMessage] = []
        self.records: list[ToolCallRecord] = []
        self.rounds = 0

    def request(self) -> ModelRequest:
        """The model request for the conversation so far."""
        return ModelRequest(
            messages=self.conversation,
            settings=self.settings,
            tools=self.tool_specs,
            activation_edits=self.activation_edits,
        )

    def forced(self) -> Completion | None:
        """The completion a replay forces for this model call, if any."""
        _, response = next_model_call()
        if response is None:
            return None
        return forced_completion(self.agent.model, self.request(), response)

    def step(self, completion: Completion) -> AgentReply | None:
        """Take in one completion: run its tool calls and return None, or return the reply."""
        native_calls = completion.tool_calls
        calls: list[ToolCall] = native_calls or parse_text_calls(completion.text, self.agent.tools)
        if not calls or self.rounds >= self.agent.max_tool_rounds:
            # Calls left unexecuted at the limit are dropped: an unanswered call would make the
            # conversation invalid for the next request.
            self._add(ChatMessage(role="assistant", content=completion.text))
            return AgentReply(
                text=completion.text,
                tool_calls=self.records,
                messages=self.added,
                rounds=self.rounds,
                hit_round_limit=bool(calls),
                completion=completion,
            )
        self.rounds += 1
        records = [self._run(call) for call in calls]
        self.records.extend(records)
        if native_calls:
            self._add(ChatMessage(role="assistant", content=completion.text, tool_calls=calls))
            for call, record in zip(calls, records, strict=True):
                self._add(
                    ChatMessage(
                        role="tool",
                        content=result_text(record),
                        name=call.name,
                        tool_call_id=call.id,
                    )
                )
        else:
            self._add(ChatMessage(role="assistant", content=completion.text))
            self._add(ChatMessage(role="user", content=format_text_results(records)))
        return None

    def _run(self, call: ToolCall) -> ToolCallRecord:
        tool = next((t for t in self.agent.tools if t.name == call.name), None)
        if tool is None:
            known = ", ".join(t.name for t in self.agent.tools) or "none"
            record = ToolCallRecord(
                name=call.name,
                arguments=call.arguments,
                error=f"unknown tool {call.name!r}; available tools: {known}",
            )
            report_tool_call(record)
            return record
        return tool.run(call.arguments)

    def _add(self, message: ChatMessage) -> None:
        self.conversation.append(message)
        self.added.append(message)
