"""Traces of other tracing tools (LangSmith run trees, Langfuse observations) as runs, by way of
the OpenTelemetry importer: each tool's run or observation becomes a `Span` with the
OpenInference and GenAI attributes its kind carries, and spans map to runs, steps, model calls
and tool calls by one set of rules (`runs_of_spans`): a trace is a run, its root's children in
start order are its steps, and the LLM and TOOL spans under a step its model and tool calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from counterfact.formats._imported import ParsedRun
from counterfact.formats._otel_import import OtelImport, Span, runs_of_spans

LLM, TOOL, CHAIN, AGENT = "LLM", "TOOL", "CHAIN", "AGENT"


def io_text(value: Any) -> str | None:
    """An input or output as text: a lone string field as it is, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), str):
        return next(iter(value.values()))
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def chat_message(value: Any) -> dict[str, Any] | None:
    """One chat message from the shapes SDKs log: OpenAI's {role, content}, LangChain's
    serialized message ({"lc": 1, "id": [..., "HumanMessage"], "kwargs": {...}}) or its dict
    ({"type": "human", "content": ...})."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("kwargs"), dict) and isinstance(value.get("id"), list):
        kind = str(value["id"][-1]).removesuffix("MessageChunk").removesuffix("Message").lower()
        kwargs = value["kwargs"]
        return {"role": {"human": "user", "ai": "assistant"}.get(kind, kind), "content": kwargs.get("content", ""),
                **({"tool_calls": kwargs["tool_calls"]} if kwargs.get("tool_calls") else {})}
    role = value.get("role") or {"human": "user", "ai": "assistant"}.get(str(value.get("type")), value.get("type"))
    if not isinstance(role, str) or "content" not in value and "tool_calls" not in value:
        return None
    return {**{k: v for k, v in value.items() if v is not None and k != "type"}, "role": role}


def chat_messages(value: Any) -> list[dict[str, Any]] | None:
    """A request's messages, where it is a list of them (or a batch of one list)."""
    if isinstance(value, dict):
        value = value.get("messages")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if not isinstance(value, list) or not value:
        return None
    messages = [chat_message(m) for m in value]
    return None if any(m is None for m in messages) else messages  # type: ignore[return-value]


def llm_attributes(model: str | None, provider: str | None, request: Any, response: Any,
                   input_tokens: int | None, output_tokens: int | None, finish_reason: str | None) -> dict[str, Any]:
    """The GenAI attributes of a model call, as the OTel importer reads them."""
    attributes: dict[str, Any] = {"openinference.span.kind": LLM}
    messages = chat_messages(request)
    if messages is not None:
        attributes["gen_ai.input.messages"] = messages
    reply = chat_message(response)
    if reply is None and response is not None:
        reply = {"role": "assistant", "content": io_text(response)}
    if reply is not None:
        attributes["gen_ai.output.messages"] = [reply]
    for key, value in (("gen_ai.request.model", model), ("gen_ai.provider.name", provider),
                       ("gen_ai.usage.input_tokens", input_tokens), ("gen_ai.usage.output_tokens", output_tokens)):
        if value is not None:
            attributes[key] = value
    if finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [finish_reason]
    return attributes


def parsed_runs(spans: Sequence[Span], *, source: str, where: str, labels: dict[str, dict[str, Any]]) -> list[ParsedRun]:
    """The runs spans make, each of `source` and named by it and its trace id, with the labels
    given for its trace (by trace id) in place of the OTel importer's own."""
    report = OtelImport()
    parsed: list[ParsedRun] = []
    for run, steps in runs_of_spans(spans, report):
        trace_id = run.labels["otel"]["trace_id"]
        run.id, run.source = f"{source}-{trace_id}", source
        if run.workflow == "otel":  # a trace of several roots
            run.workflow = source
        run.labels = labels.get(trace_id, {})
        parsed.append(ParsedRun(where=f"{where} trace {trace_id}", run=run, steps=steps))
    return parsed
