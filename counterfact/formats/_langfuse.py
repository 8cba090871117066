"""Langfuse exports as runs: a trace with its observations (the public API's trace with full
details, as the UI downloads it), a list of such traces, or observations as the SDK's
`api.observations.get_many` returns them ({"data": [...], "meta": ...}, grouped by `traceId`).

A trace is a run; its top-level observations, in start order, are the steps (an app's root
AGENT observation, when there is one, is the run itself); GENERATION observations under a step
are its model calls (input messages, output, model, usage) and TOOL observations its tool
calls. An observation at level ERROR carries its status message as the error. The mapping is
the OpenTelemetry importer's (`_traced`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from counterfact._errors import validation_message
from counterfact.formats._base import (
    FormatError,
    Sniff,
    register_format,
)
from counterfact.formats._imported import (
    ParsedRun,
    ReadOnlyFormat,
    bad_entry,
    kind_of,
    load_json,
    naive_utc,
)
from counterfact.formats._otel_import import Span
from counterfact.formats._traced import (
    AGENT,
    CHAIN,
    LLM,
    TOOL,
    io_text,
    llm_attributes,
    parsed_runs,
)

KINDS = {"GENERATION": LLM, "TOOL": TOOL, "AGENT": AGENT, "SPAN": CHAIN, "EVENT": CHAIN, "CHAIN": CHAIN,
         "RETRIEVER": "RETRIEVER", "EMBEDDING": "EMBEDDING", "EVALUATOR": "EVALUATOR", "GUARDRAIL": "GUARDRAIL"}
EXPECTED = ("a Langfuse export: a trace with observations (id, type, startTime, ...), a list of traces, or "
            "observations as the Langfuse API returns them ({\"data\": [...]})")


class Observation(BaseModel):
    """One Langfuse observation, in the fields this import reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    type: str
    trace_id: str | None = Field(None, alias="traceId")
    name: str | None = None
    start_time: datetime = Field(alias="startTime")
    end_time: datetime | None = Field(None, alias="endTime")
    parent_id: str | None = Field(None, alias="parentObservationId")
    input: Any = None
    output: Any = None
    model: str | None = None
    usage: dict[str, Any] | None = Field(None, validation_alias=AliasChoices("usageDetails", "usage"))
    level: str | None = None
    status_message: str | None = Field(None, alias="statusMessage")


class Trace(BaseModel):
    """A Langfuse trace with its observations and scores."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    name: str | None = None
    timestamp: datetime | None = None
    input: Any = None
    output: Any = None
    session_id: str | None = Field(None, alias="sessionId")
    user_id: str | None = Field(None, alias="userId")
    tags: list[str] = Field(default_factory=list)
    observations: list[Observation]
    scores: list[dict[str, Any]] = Field(default_factory=list)


def _is_observation(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in KINDS and "startTime" in value and "id" in value


def _is_trace(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("observations"), list) and "id" in value


def _entries(document: Any) -> list[Any]:
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return document["data"]
    return document if isinstance(document, list) else [document]


def _span(obs: Observation, trace_id: str, parent: str | None, where: str) -> Span:
    attributes: dict[str, Any] = {"openinference.span.kind": KINDS[obs.type]}
    if obs.type == "GENERATION":
        usage = obs.usage or {}
        attributes.update(llm_attributes(
            model=obs.model, provider="langfuse", request=obs.input, response=obs.output,
            input_tokens=usage.get("input", usage.get("promptTokens")),
            output_tokens=usage.get("output", usage.get("completionTokens")), finish_reason=None))
    if obs.type == "TOOL":
        attributes.update({"tool.name": obs.name or "tool", "tool.parameters": obs.input if obs.input is not None else {}})
    for key, value in (("input.value", io_text(obs.input)), ("output.value", io_text(obs.output))):
        if value is not None:
            attributes[key] = value
    if obs.type == "AGENT":
        attributes["agent.name"] = obs.name
    error = (obs.status_message or "error") if obs.level == "ERROR" else None
    return Span(trace_id=trace_id, span_id=obs.id, parent_id=parent, name=obs.name or obs.type.lower(),
                start=naive_utc(obs.start_time), end=naive_utc(obs.end_time or obs.start_time), attributes=attributes,
                error=error, source=where)


def _trace_spans(trace: Trace, where: str) -> list[Span]:
    """A trace's observations under one root made of the trace itself (so is one whose parent
    the export left out)."""
    ids = {o.id for o in trace.observations}
    observations = [_span(o, trace.id, o.parent_id if o.parent_id in ids else trace.id, where) for o in trace.observations]
    start = min([*([naive_utc(trace.timestamp)] if trace.timestamp else []), *(s.start for s in observations)], default=None)
    if start is None:
        raise FormatError(f"{where}: trace {trace.id} has no timestamp and no observations; expected a trace with "
                          "observations; nothing was imported")
    attributes: dict[str, Any] = {"openinference.span.kind": CHAIN, "gen_ai.workflow.name": trace.name or "langfuse"}
    for key, value in (("input.value", io_text(trace.input)), ("output.value", io_text(trace.output))):
        if value is not None:
            attributes[key] = value
    end = max([s.end for s in observations], default=start)
    return [Span(trace_id=trace.id, span_id=trace.id, parent_id=None, name=trace.name or "langfuse", start=start,
                 end=end, attributes=attributes, source=where), *observations]


def _parse(path: Path) -> list[ParsedRun]:
    document = load_json(path, EXPECTED)
    spans: list[Span] = []
    labels: dict[str, dict[str, Any]] = {}
    for number, entry in enumerate(_entries(document)):
        where = f"entry[{number}]"
        try:
            if _is_trace(entry):
                trace = Trace.model_validate(entry)
                spans += _trace_spans(trace, f"{path} {where}")
                labels[trace.id] = {"source_file": path.name, "langfuse": {
                    "trace_id": trace.id, "session_id": trace.session_id, "user_id": trace.user_id, "tags": trace.tags},
                    **({"scores": trace.scores} if trace.scores else {})}
            elif _is_observation(entry):
                obs = Observation.model_validate(entry)
                if obs.trace_id is None:
                    raise bad_entry(path, where, "has no traceId", EXPECTED)
                spans.append(_span(obs, obs.trace_id, obs.parent_id, f"{path} {where}"))
                labels.setdefault(obs.trace_id, {"source_file": path.name, "langfuse": {"trace_id": obs.trace_id}})
            else:
                problem = f"is {kind_of(entry)}" + (" that is neither a trace nor an observation" if isinstance(entry, dict) else "")
                raise bad_entry(path, where, problem, EXPECTED)
        except ValidationError as exc:
            raise bad_entry(path, where, validation_message(exc, entry), EXPECTED) from None
    return parsed_runs(spans, source="langfuse", where=str(path), labels=labels)


class LangfuseFormat(ReadOnlyFormat):
    """Langfuse traces and observations, as its API and UI export them."""

    name = "langfuse"
    summary = "Langfuse exports: a trace per run, its top observations as steps, GENERATION and TOOL as calls"
    noun = "Langfuse exports"

    def detect(self, sniff: Sniff) -> bool:
        entries = _entries(sniff.document)
        return bool(entries) and all(_is_trace(e) or _is_observation(e) for e in entries)

    def parse(self, path: Path) -> list[ParsedRun]:
        return _parse(path)


register_format(LangfuseFormat())
