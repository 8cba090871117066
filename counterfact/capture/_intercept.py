"""Replay directives for LangChain chat models and tools, applied by class-level hooks.

Why hooks on the classes: LangChain has no interception point that reaches the models and tools
a user's node calls directly. Callbacks only observe, the model and tool objects are the user's
own, and a node need not pass its config on. So `install_langchain_hooks()` wraps, once per
process, the `BaseChatModel` and `BaseTool` methods every call goes through. Outside a replayed
step they pass everything through unchanged; inside one:

- each chat-model request counts as one model call of the step (`next_model_call`); when the
  replay forces a response for it, that response is returned as an `AIMessage` (one chunk when
  streaming) and the model is not called. Callbacks still fire, so `CallCapture` records it.
- tools the replay took away from the node (`tool_changes_for`) are dropped from the `tools` a
  bound model sends. Adding a tool is not supported here: a change names a tool, not an object.
- the replay's prompt changes (`rewrite_prompt`) are made in the system messages and the tool
  descriptions a model is sent.
- a tool call with a forced or reused result (`tool_result_for`) returns it without running the
  tool, through the tool's callbacks, as a `ToolMessage` when called with a model's tool call.

Models that record their own calls (metadata `counterfact_recorded`) read the directives
themselves and are left alone.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from langchain_core.tools.base import _format_output

from counterfact.capture._capture import (
    FORCED,
    SELF_RECORDING,
    tool_arguments,
    tool_name,
)
from counterfact.capture._directives import (
    ModelResponse,
    current_directives,
    next_model_call,
    prompts_rewritten,
    rewrite_prompt,
    step_instruction,
    step_seed,
    step_temperature,
    tool_changes_for,
    tool_result_for,
)
from counterfact.capture._records import current_step

# A response `stream` already counted and found forced, handed to the `invoke` it answers through.
_claimed: contextvars.ContextVar[ModelResponse | None] = contextvars.ContextVar(
    "counterfact_claimed_response", default=None
)
_install_lock = threading.Lock()
_installed = False


def install_langchain_hooks() -> None:
    """Hook LangChain's chat models and tools (idempotent, process-wide)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        for cls, name, hook in _HOOKS:
            setattr(cls, name, hook(getattr(cls, name)))
        _installed = True


def forced_tool_calls(forced: ModelResponse) -> list[dict[str, Any]]:
    """A forced response's tool calls as {"id", "name", "args"}, each with an id."""
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "name": call["name"],
            "args": dict(call.get("args") or {}),
        }
        for call in forced.tool_calls
    ]


def without_removed_tools(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Request `kwargs` without the tools a replay took away from the node executing now."""
    step = current_step()
    if step is None or not kwargs.get("tools"):
        return kwargs
    removed: set[str] = set()
    for change in tool_changes_for(step.node):
        if change.action == "remove":
            removed.add(change.tool)
        else:
            removed.discard(change.tool)
    if not removed:
        return kwargs
    kept = [spec for spec in kwargs["tools"] if tool_name(spec) not in removed]
    if not kept:  # APIs refuse an empty tool list, and a tool choice without tools
        dropped = ("tools", "tool_choice", "parallel_tool_calls")
        return {k: v for k, v in kwargs.items() if k not in dropped}
    out = {**kwargs, "tools": kept}
    if tool_name(out.get("tool_choice")) in removed:
        del out["tool_choice"]
    return out


# -- chat models ---------------------------------------------------------------------------


def _self_recording(model: BaseChatModel) -> bool:
    return bool((model.metadata or {}).get(SELF_RECORDING))


def _request_kwargs(model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
    if _self_recording(model):
        return kwargs
    return with_sampling(model, with_rewritten_tools(without_removed_tools(kwargs)))


def with_sampling(model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A replay's seed (per step) and temperature, for models that take them per request
    (`seed` and `temperature` fields, as ChatOpenAI has): replays pair arms by seed and
    resampling raises the temperature."""
    fields = type(model).model_fields
    extra: dict[str, Any] = {}
    if (seed := step_seed()) is not None and "seed" in fields:
        extra["seed"] = seed
    if (temperature := step_temperature()) is not None and "temperature" in fields:
        extra["temperature"] = temperature
    return {**kwargs, **extra}


def _forced_response(model: BaseChatModel) -> ModelResponse | None:
    """Count this request (unless `stream` did) and return the response forced for it."""
    if _self_recording(model):
        return None
    claimed = _claimed.get()
    if claimed is not None:
        _claimed.set(None)
        return claimed
    return next_model_call()[1]


def _forced_message(forced: ModelResponse) -> AIMessage:
    calls = [{**call, "type": "tool_call"} for call in forced_tool_calls(forced)]
    return AIMessage(content=forced.content, tool_calls=calls)


def _forced_result(forced: ModelResponse) -> ChatResult:
    message = _forced_message(forced)
    finish_reason = "tool_calls" if message.tool_calls else "stop"
    info = {"finish_reason": finish_reason, FORCED: True}
    return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])


def _as_chunk(message: AIMessage) -> AIMessageChunk:
    return AIMessageChunk(
        content=message.content,
        tool_calls=message.tool_calls,
        id=message.id,
        response_metadata=message.response_metadata,
        chunk_position="last",
    )


def _instructed(model: BaseChatModel, batches: list[list[BaseMessage]]) -> list[list[BaseMessage]]:
    """Each conversation with the replay's prompt changes made in its system messages, and its
    instruction for this step as a last user message (once: a stream that falls back to invoke
    brings it already added)."""
    if _self_recording(model):
        return batches
    if prompts_rewritten():
        batches = [[_rewritten(m) for m in messages] for messages in batches]
    note = step_instruction()
    if note is None:
        return batches
    return [messages if _ends_with(messages, note) else [*messages, HumanMessage(content=note)] for messages in batches]


def _rewritten(message: BaseMessage) -> BaseMessage:
    if not isinstance(message, SystemMessage) or not isinstance(message.content, str):
        return message
    text = rewrite_prompt(message.content)
    return message if text == message.content else message.model_copy(update={"content": text})


def with_rewritten_tools(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Request `kwargs` with the replay's prompt changes made in the tools' descriptions."""
    if not prompts_rewritten() or not kwargs.get("tools"):
        return kwargs
    tools = []
    for spec in kwargs["tools"]:
        function = spec.get("function") if isinstance(spec, dict) else None
        if isinstance(function, dict) and isinstance(function.get("description"), str):
            spec = {**spec, "function": {**function, "description": rewrite_prompt(function["description"])}}
        tools.append(spec)
    return {**kwargs, "tools": tools}


def _ends_with(messages: list[BaseMessage], note: str) -> bool:
    return bool(messages) and isinstance(messages[-1], HumanMessage) and messages[-1].content == note


def _hook_generate(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def generate(self: BaseChatModel, messages: list[list[BaseMessage]], *args: Any, **kwargs: Any) -> Any:
        return original(self, _instructed(self, messages), *args, **_request_kwargs(self, kwargs))

    return generate


def _hook_agenerate(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def agenerate(self: BaseChatModel, messages: list[list[BaseMessage]], *args: Any, **kwargs: Any) -> Any:
        return await original(self, _instructed(self, messages), *args, **_request_kwargs(self, kwargs))

    return agenerate


def _hook_generate_with_cache(original: Callable[..., ChatResult]) -> Callable[..., ChatResult]:
    @functools.wraps(original)
    def generate_with_cache(self: BaseChatModel, *args: Any, **kwargs: Any) -> ChatResult:
        forced = _forced_response(self)
        return original(self, *args, **kwargs) if forced is None else _forced_result(forced)

    return generate_with_cache


def _hook_agenerate_with_cache(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def agenerate_with_cache(self: BaseChatModel, *args: Any, **kwargs: Any) -> ChatResult:
        forced = _forced_response(self)
        return await original(self, *args, **kwargs) if forced is None else _forced_result(forced)

    return agenerate_with_cache


def _instructed_input(model: BaseChatModel, input: Any) -> Any:
    """A streamed request's input with the step's instruction (see `_instructed`)."""
    if _self_recording(model) or (step_instruction() is None and not prompts_rewritten()):
        return input
    return _instructed(model, [model._convert_input(input).to_messages()])[0]


def _hook_stream(original: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(original)
    def stream(
        self: BaseChatModel,
        input: Any,
        config: Any = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        kwargs = _request_kwargs(self, kwargs)
        input = _instructed_input(self, input)
        # A model that does not stream answers through invoke, which counts the request.
        streams = self._should_stream(async_api=False, **{**kwargs, "stream": True})
        forced = None if _self_recording(self) or not streams else next_model_call()[1]
        if forced is None:
            yield from original(self, input, config, stop=stop, **kwargs)
            return
        token = _claimed.set(forced)
        try:  # invoke, so the callbacks see the forced response
            message = self.invoke(input, config, stop=stop, **kwargs)
        finally:
            _claimed.reset(token)
        yield _as_chunk(message)

    return stream


def _hook_astream(original: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(original)
    async def astream(
        self: BaseChatModel,
        input: Any,
        config: Any = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        kwargs = _request_kwargs(self, kwargs)
        input = _instructed_input(self, input)
        streams = self._should_stream(async_api=True, **{**kwargs, "stream": True})
        forced = None if _self_recording(self) or not streams else next_model_call()[1]
        if forced is None:
            async for chunk in original(self, input, config, stop=stop, **kwargs):
                yield chunk
            return
        token = _claimed.set(forced)
        try:
            message = await self.ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _claimed.reset(token)
        yield _as_chunk(message)

    return astream


# -- tools ---------------------------------------------------------------------------------


def _answer(tool: BaseTool, tool_input: str | dict[str, Any]) -> tuple[bool, Any]:
    """`tool_result_for` this call; cheap when the step has no tool results to give."""
    directives, here = current_directives()
    if not directives.reuse_tool_results and not (here is not None and (here.tool_results or here.kept_handoffs)):
        return False, None
    return tool_result_for(tool.name, tool_arguments(*_inputs(tool, tool_input)))


def _inputs(tool: BaseTool, tool_input: str | dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """What `BaseTool.run` reports of an input: the dict without injected arguments, and text."""
    inputs = tool._filter_injected_args(tool_input) if isinstance(tool_input, dict) else None
    return inputs, tool_input if isinstance(tool_input, str) else str(inputs)


def _answered(
    signature: inspect.Signature,
    manager: type[CallbackManager] | type[AsyncCallbackManager],
    tool: BaseTool,
    tool_input: str | dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Callable[[], Any], dict[str, Any]]:
    """How `BaseTool.run` would start this call's callbacks, and its arguments by name."""
    bound = signature.bind(tool, tool_input, *args, **kwargs)
    bound.apply_defaults()
    call = bound.arguments
    callbacks = manager.configure(
        call["callbacks"],
        tool.callbacks,
        tool.verbose or bool(call["verbose"]),
        call["tags"],
        tool.tags,
        call["metadata"],
        tool.metadata,
    )
    inputs, text = _inputs(tool, tool_input)
    start = functools.partial(
        callbacks.on_tool_start,
        {"name": tool.name, "description": tool.description},
        text,
        name=call["run_name"],
        run_id=call["run_id"],
        inputs=inputs,
        tool_call_id=call["tool_call_id"],
        **call["kwargs"],
    )
    return start, call


def _hook_run(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def run(self: BaseTool, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        given, result = _answer(self, tool_input)
        if not given:
            return original(self, tool_input, *args, **kwargs)
        start, call = _answered(signature, CallbackManager, self, tool_input, args, kwargs)
        run_manager = start()
        output = _format_output(result, None, call["tool_call_id"], self.name, "success")
        run_manager.on_tool_end(output, name=self.name)
        return output

    return run


def _hook_arun(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def arun(
        self: BaseTool, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        given, result = _answer(self, tool_input)
        if not given:
            return await original(self, tool_input, *args, **kwargs)
        start, call = _answered(signature, AsyncCallbackManager, self, tool_input, args, kwargs)
        run_manager = await start()
        output = _format_output(result, None, call["tool_call_id"], self.name, "success")
        await run_manager.on_tool_end(output, name=self.name)
        return output

    return arun


# What `install_langchain_hooks` wraps: class, method, and the wrapper of the original.
_HOOKS: list[tuple[type[Any], str, Callable[[Any], Any]]] = [
    (BaseChatModel, "generate", _hook_generate),
    (BaseChatModel, "agenerate", _hook_agenerate),
    (BaseChatModel, "_generate_with_cache", _hook_generate_with_cache),
    (BaseChatModel, "_agenerate_with_cache", _hook_agenerate_with_cache),
    (BaseChatModel, "stream", _hook_stream),
    (BaseChatModel, "astream", _hook_astream),
    (BaseTool, "run", _hook_run),
    (BaseTool, "arun", _hook_arun),
]
