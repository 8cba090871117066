"""LangSmith run exports as runs: a run tree as the LangSmith SDK returns it
(`Client.read_run(id, load_child_runs=True)`, or a RunTree dumped), a list of such trees, or the
flat list of runs `Client.list_runs` gives (children found by `parent_run_id`).

A root run is a run; its child runs, in start order, are the steps; `llm` runs under a step are
its model calls (messages, model, provider, tokens) and `tool` runs its tool calls (inputs as
arguments, outputs as result, error). The mapping is the OpenTelemetry importer's (`_traced`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from counterfact._errors import validation_message
from counterfact.formats._base import (
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

RUN_TYPES = {"llm": LLM, "tool": TOOL, "chain": CHAIN, "agent": AGENT, "retriever": "RETRIEVER",
             "embedding": "EMBEDDING", "prompt": CHAIN, "parser": CHAIN}
EXPECTED = ("a LangSmith run export: a run (id, name, run_type, start_time, inputs, outputs, child_runs) as the "
            "LangSmith SDK returns it, or a list of runs")


class LangSmithRun(BaseModel):
    """One run of a LangSmith export, in the fields this import reads (others are kept aside)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    run_type: str
    start_time: datetime
    end_time: datetime | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None
    parent_run_id: str | None = None
    trace_id: str | None = None
    session_id: str | None = None
    tags: list[str] | None = None
    child_runs: list[LangSmithRun] | None = None


def _is_run(value: Any) -> bool:
    return isinstance(value, dict) and value.get("run_type") in RUN_TYPES and "id" in value and "start_time" in value


def _walk(run: LangSmithRun, parent: str | None) -> Iterator[tuple[LangSmithRun, str | None]]:
    yield run, parent or run.parent_run_id
    for child in run.child_runs or []:
        yield from _walk(child, run.id)


def _llm(run: LangSmithRun) -> dict[str, Any]:
    metadata = (run.extra or {}).get("metadata") or {}
    params = (run.extra or {}).get("invocation_params") or {}
    outputs = run.outputs or {}
    usage = outputs.get("usage_metadata") or metadata.get("usage_metadata") or outputs.get("usage") or {}
    choice = (outputs.get("choices") or [{}])[0]
    generation = ((outputs.get("generations") or [[{}]])[0] or [{}])[0]
    response = choice.get("message") or generation.get("message") or generation.get("text") or io_text(outputs)
    return llm_attributes(
        model=metadata.get("ls_model_name") or params.get("model") or (run.inputs or {}).get("model") or outputs.get("model"),
        provider=metadata.get("ls_provider") or "langsmith", request=run.inputs, response=response,
        input_tokens=usage.get("input_tokens", usage.get("prompt_tokens")),
        output_tokens=usage.get("output_tokens", usage.get("completion_tokens")),
        finish_reason=choice.get("finish_reason") or (generation.get("generation_info") or {}).get("finish_reason"),
    )


def _span(run: LangSmithRun, parent: str | None, trace_id: str, where: str) -> Span:
    attributes: dict[str, Any] = {"openinference.span.kind": RUN_TYPES[run.run_type]}
    if run.run_type == "llm":
        attributes.update(_llm(run))
    if run.run_type == "tool":
        attributes.update({"tool.name": run.name, "tool.parameters": run.inputs or {}})
    for key, value in (("input.value", io_text(run.inputs)), ("output.value", io_text(run.outputs))):
        if value is not None:
            attributes[key] = value
    if parent is None:
        attributes["gen_ai.workflow.name"] = run.name
    return Span(trace_id=trace_id, span_id=run.id, parent_id=parent, name=run.name, start=naive_utc(run.start_time),
                end=naive_utc(run.end_time or run.start_time), attributes=attributes, error=run.error, source=where)


def _parse(path: Path) -> list[ParsedRun]:
    document = load_json(path, EXPECTED)
    entries = document if isinstance(document, list) else [document]
    runs: list[tuple[LangSmithRun, str | None]] = []
    for number, entry in enumerate(entries):
        where = "top level" if isinstance(document, dict) else f"run[{number}]"
        if not _is_run(entry):
            problem = f"is {kind_of(entry)}" + (" with no run_type, id and start_time" if isinstance(entry, dict) else "")
            raise bad_entry(path, where, problem, EXPECTED)
        try:
            runs.extend(_walk(LangSmithRun.model_validate(entry), None))
        except ValidationError as exc:
            raise bad_entry(path, where, validation_message(exc, entry), EXPECTED) from None
    ids = {run.id for run, _ in runs}
    parent_of = {run.id: parent if parent in ids else None for run, parent in runs}
    root_of: dict[str, str] = {}
    for run, _ in runs:
        root = run.id
        seen = {root}
        while parent_of[root] is not None and parent_of[root] not in seen:
            root = parent_of[root]  # type: ignore[assignment]
            seen.add(root)
        root_of[run.id] = root
    spans = [_span(run, parent_of[run.id], root_of[run.id], f"{path} run {run.id}") for run, _ in runs]
    labels = {run.id: {"source_file": path.name, "langsmith": {"trace_id": run.trace_id, "session_id": run.session_id,
                                                               "tags": run.tags or []}}
              for run, _ in runs if parent_of[run.id] is None}
    return parsed_runs(spans, source="langsmith", where=str(path), labels=labels)


class LangSmithFormat(ReadOnlyFormat):
    """LangSmith run trees and run lists, as its SDK returns them."""

    name = "langsmith"
    summary = "LangSmith run exports: a root run per run, its child runs as steps, llm and tool runs as calls"
    noun = "LangSmith exports"

    def detect(self, sniff: Sniff) -> bool:
        document = sniff.document
        entries = document if isinstance(document, list) else [document]
        return bool(entries) and all(_is_run(e) for e in entries)

    def parse(self, path: Path) -> list[ParsedRun]:
        return _parse(path)


register_format(LangSmithFormat())
