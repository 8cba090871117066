"""Recording the model and tool calls LangChain makes inside a step, through its callbacks.

The recorder puts one `CallCapture` in the run config's callbacks; LangGraph passes them on to
everything a node runs, including models and tools the node calls without a config (LangChain
finds the node's config in a context variable). Each call is reported to the step that was
executing when the call started, whichever thread or task finishes it.

Starts and ends are paired by run id in a table shared by all `CallCapture`s, so a call seen by
two of them (the user's and the recorder's) is recorded once. Models that record their own calls
(counterfact's `ChatCounterfact`) say so in their metadata and are skipped.
"""

from __future__ import annotations

import ast
import contextvars
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, ChatMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from counterfact.capture._handoffs import handoff_of
from counterfact.capture._payloads import MESSAGE_ROLES
from counterfact.capture._records import (
    ModelCallRecord,
    ToolCallRecord,
    nested_agent,
    report_model_call,
    report_tool_call,
)

# Metadata of a model that reports its own calls: neither captured nor intercepted.
SELF_RECORDING = "counterfact_recorded"
# Generation info of a response a replay forced instead of calling the model.
FORCED = "counterfact_forced"

_SETTINGS = ("temperature", "max_tokens", "seed", "top_p", "stop")


def chat_message(
    role: str,
    content: Any,
    *,
    name: str | None = None,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """A request message as model calls are recorded: role, content, and the optional fields
    (tool calls as {"id", "name", "arguments"})."""
    out: dict[str, Any] = {"role": role, "content": "" if content is None else content}
    if name is not None:
        out["name"] = name
    if tool_calls:
        out["tool_calls"] = [dict(call) for call in tool_calls]
    if tool_call_id is not None:
        out["tool_call_id"] = tool_call_id
    return out


def _langchain_message(message: BaseMessage) -> dict[str, Any]:
    if isinstance(message, ChatMessage):
        role = message.role
    else:
        role = MESSAGE_ROLES.get(message.type, message.type)
    return chat_message(
        role,
        message.content,
        name=message.name,
        tool_calls=[
            {"id": call["id"], "name": call["name"], "arguments": call["args"]}
            for call in getattr(message, "tool_calls", None) or []
        ],
        tool_call_id=getattr(message, "tool_call_id", None),
    )


def tool_name(spec: Any) -> str | None:
    """The name of a tool as a model request offers it (OpenAI or Anthropic format, or a tool)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        function = spec.get("function")
        return function.get("name") if isinstance(function, Mapping) else spec.get("name")
    return getattr(spec, "name", None)


def tool_arguments(inputs: Mapping[str, Any] | None, input_str: str) -> dict[str, Any]:
    """A tool call's arguments: its input dict, else its input text read as JSON or a Python
    literal, else that text under "input". Recording and replay both match calls by these."""
    if inputs is not None:
        return dict(inputs)
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(input_str)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    return {"input": input_str}


def model_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The decoding settings and offered tool names among a request's parameters; nothing else
    (headers and clients never reach the store)."""
    settings = {k: params[k] for k in _SETTINGS if params.get(k) is not None}
    if "max_tokens" not in settings and params.get("max_completion_tokens") is not None:
        settings["max_tokens"] = params["max_completion_tokens"]
    settings["tools"] = [tool_name(t) for t in params.get("tools") or []]
    return settings


@dataclass(frozen=True)
class _Started:
    context: contextvars.Context  # the starting step's context: the record goes there
    at: float
    record: ModelCallRecord | ToolCallRecord


class CallCapture(BaseCallbackHandler):
    """Turns LangChain model and tool runs into `ModelCallRecord`s and `ToolCallRecord`s.

    Inline, so events are handled in the context of the code making the call.
    """

    run_inline = True
    # shared by all captures, so each run is recorded once however many see it
    _started: ClassVar[dict[UUID, _Started]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def ignore_chain(self) -> bool:
        return True  # LangGraph fires chain events for every node and channel write

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        request = [_langchain_message(m) for m in messages[0]]
        self._start_model(run_id, serialized, metadata or {}, invocation_params or {}, request)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        request = [chat_message("user", prompts[0])]
        self._start_model(run_id, serialized, metadata or {}, invocation_params or {}, request)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        if (started := self._pop(run_id)) is None:
            return
        generation = response.generations[0][0]
        message = generation.message if isinstance(generation, ChatGeneration) else None
        info = generation.generation_info or {}
        params = started.record.params
        record = started.record.model_copy(
            update={
                "params": {**params, "forced": True} if info.get(FORCED) else params,
                "response": {
                    "content": message.content if message is not None else generation.text,
                    "tool_calls": [
                        {"id": call["id"], "name": call["name"], "arguments": call["args"]}
                        for call in getattr(message, "tool_calls", None) or []
                    ],
                },
                "finish_reason": info.get("finish_reason")
                or (message.response_metadata.get("finish_reason") if message else None),
                **_tokens(response, message),
                "latency_ms": (time.perf_counter() - started.at) * 1000,
            }
        )
        started.context.run(report_model_call, record, started.at)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if (started := self._pop(run_id)) is None:
            return
        record = started.record.model_copy(
            update={
                "response": {"content": "", "tool_calls": [], "error": _describe(error)},
                "finish_reason": "error",
                "latency_ms": (time.perf_counter() - started.at) * 1000,
            }
        )
        started.context.run(report_model_call, record, started.at)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        record = ToolCallRecord(
            name=(serialized or {}).get("name") or "",
            arguments=tool_arguments(inputs, input_str),
            agent=nested_agent((kwargs.get("metadata") or {}).get("langgraph_checkpoint_ns")),
        )
        self._start(run_id, record)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if (started := self._pop(run_id)) is None:
            return
        latency = (time.perf_counter() - started.at) * 1000
        update: dict[str, Any]
        if isinstance(output, ToolMessage) and output.status == "error":
            update = {"error": str(output.content), "latency_ms": latency}
        elif (handoff := handoff_of(output)) is not None:
            update = {"result": handoff.text, "handoff": handoff.to, "latency_ms": latency}
        else:
            result = output.content if isinstance(output, ToolMessage) else output
            update = {"result": result, "latency_ms": latency}
        started.context.run(report_tool_call, started.record.model_copy(update=update), started.at)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if (started := self._pop(run_id)) is None:
            return
        latency = (time.perf_counter() - started.at) * 1000
        update = {"error": _describe(error), "latency_ms": latency}
        started.context.run(report_tool_call, started.record.model_copy(update=update), started.at)

    def _start_model(
        self,
        run_id: UUID,
        serialized: dict[str, Any],
        metadata: dict[str, Any],
        params: dict[str, Any],
        request: list[dict[str, Any]],
    ) -> None:
        if metadata.get(SELF_RECORDING):
            return
        provider = metadata.get("ls_provider") or (serialized.get("id") or ["unknown"])[-1]
        record = ModelCallRecord(
            agent=nested_agent(metadata.get("langgraph_checkpoint_ns")),
            backend=f"langchain:{provider}",
            model=metadata.get("ls_model_name") or params.get("model") or "",
            params=model_settings(params),
            request=request,
            response={},
        )
        self._start(run_id, record)

    def _start(self, run_id: UUID, record: ModelCallRecord | ToolCallRecord) -> None:
        started = _Started(contextvars.copy_context(), time.perf_counter(), record)
        with self._lock:
            self._started.setdefault(run_id, started)

    def _pop(self, run_id: UUID) -> _Started | None:
        with self._lock:
            return self._started.pop(run_id, None)


def _tokens(response: LLMResult, message: BaseMessage | None) -> dict[str, int]:
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"]}
    counts = (response.llm_output or {}).get("token_usage") or {}
    return {
        "prompt_tokens": counts.get("prompt_tokens") or 0,
        "completion_tokens": counts.get("completion_tokens") or 0,
    }


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
