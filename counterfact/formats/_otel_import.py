"""OpenTelemetry traces of other agent apps as log-only runs: OTLP JSON (the protobuf JSON
encoding collectors' file exporters write) of apps instrumented with the GenAI semantic
conventions or OpenInference.

A trace becomes a run. Its steps are the root span's children in start order (or the roots
themselves, when a trace has several or a lone root). Each step keeps the model calls (LLM /
`chat` spans) and tool calls (TOOL / `execute_tool` spans) found under it, in order. A span of
no kind either convention names is kept as a generic step and counted, never dropped. A
counterfact verification (a trace of its own) is not a run: it is counted and skipped. Every
file is read and checked before anything is written, and all runs are written in one
transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator

from counterfact._errors import validation_message
from counterfact._files import read_text_file
from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.formats._base import (
    ExportReport,
    FormatError,
    ImportReport,
    Progress,
    Skipped,
    Sniff,
    expand_paths,
    register_format,
)
from counterfact.formats._otel import write_otlp_json
from counterfact.store import Outcome, RunRecord, StepRecord, TraceStore

SOURCE = "otel"
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}
_EPOCH = datetime(1970, 1, 1)


class OtelImportError(FormatError):
    """A file that is not OTLP JSON, named with what was expected."""


class OtelImport(BaseModel):
    """What an import read and wrote."""

    runs: list[str] = Field(default_factory=list)
    spans: int = 0
    steps: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    unknown_spans: int = 0  # spans of no known kind, kept as generic steps
    verifications: int = 0  # counterfact verification traces: not runs, skipped
    existing: list[str] = Field(default_factory=list)  # runs already in the store, skipped


class Span(BaseModel):
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: datetime
    end: datetime
    attributes: dict[str, Any]
    error: str | None = None
    resource: dict[str, Any] = Field(default_factory=dict)
    source: str = ""  # the file and where in it, for errors

    @property
    def kind(self) -> str:
        """LLM, TOOL, AGENT, CHAIN (or another OpenInference kind), or UNKNOWN."""
        kind = self.attributes.get("openinference.span.kind")
        if isinstance(kind, str) and kind:
            return kind.upper()
        operation = self.attributes.get("gen_ai.operation.name")
        if operation in _LLM_OPERATIONS:
            return "LLM"
        if operation == "execute_tool":
            return "TOOL"
        if operation in ("invoke_agent", "create_agent"):
            return "AGENT"
        if operation == "invoke_workflow":
            return "CHAIN"
        return "UNKNOWN"


_EXPECTED = ("expected ExportTraceServiceRequest objects with resourceSpans, as an OpenTelemetry "
             "collector's file exporter writes; nothing was imported")


def read_otlp_json(path: Path) -> list[Span]:
    """Every span in one OTLP JSON file: one ExportTraceServiceRequest per line, or one
    document (an object, or a list of them). Raises `OtelImportError` naming the file, the
    object or line, the span and the field of the first thing that is not OTLP JSON."""
    spans: list[Span] = []
    for where, document in _documents(path):
        if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
            raise OtelImportError(f"{path}: not OTLP JSON ({where} has no resourceSpans list); {_EXPECTED}")
        try:
            export = ExportTraceServiceRequest.model_validate(document)
        except ValidationError as exc:
            raise OtelImportError(f"{path}: not OTLP JSON ({where}: {validation_message(exc, document)}); {_EXPECTED}") from None
        number = 0
        for resource_spans in export.resourceSpans:
            resource = _attributes(resource_spans.resource.attributes if resource_spans.resource else None)
            for scope in resource_spans.scopeSpans or resource_spans.instrumentationLibrarySpans or []:
                for raw in scope.spans or []:
                    number += 1
                    spans.append(_span(path, f"{where}, span {number}", raw, resource))
    return spans


def _documents(path: Path) -> list[tuple[str, Any]]:
    """The file's JSON documents, each with where it is: `object N` or `line N`."""
    text = read_text_file(path, "OTLP JSON", OtelImportError, then=f"; {_EXPECTED}")
    number = 0
    try:
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            documents = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    documents.append((f"line {number}", json.loads(line)))
            return documents
    except json.JSONDecodeError as exc:
        raise OtelImportError(f"{path}: not OTLP JSON (line {number or exc.lineno}: {exc.msg}); {_EXPECTED}") from None
    except RecursionError:
        raise OtelImportError(f"{path}: not OTLP JSON (line {number or 1} nests too deeply); {_EXPECTED}") from None
    if isinstance(whole, list):
        return [(f"object {n}", document) for n, document in enumerate(whole, start=1)]
    return [("object 1", whole)]


def _span(path: Path, where: str, raw: Any, resource: dict[str, Any]) -> Span:
    if not isinstance(raw, dict):
        kind = "null" if raw is None else "a list" if isinstance(raw, list) else f"the {type(raw).__name__} {str(raw)[:40]!r}"
        raise OtelImportError(f"{path}: not OTLP JSON ({where} is {kind}, not an object); {_EXPECTED}")
    name = raw.get("name")
    span = f"span {name[:80]!r}" if isinstance(name, str) else "a span"
    try:
        otlp = OtlpSpan.model_validate(raw)
    except ValidationError as exc:
        raise OtelImportError(f"{path}: {span} is not an OTLP span ({where}: {validation_message(exc, raw)}); expected "
                              "traceId, spanId and startTimeUnixNano as OTLP JSON writes them; nothing was imported") from None
    attributes = _attributes(otlp.attributes)
    try:
        typed = _ReadAttributes.model_validate(attributes)
    except ValidationError as exc:
        raise OtelImportError(f"{path}: {span} has an attribute of the wrong type ({where}: "
                              f"{validation_message(exc)}); nothing was imported") from None
    attributes.update(typed.model_dump(by_alias=True, exclude_unset=True))
    status = otlp.status or Status()
    return Span(
        trace_id=otlp.traceId, span_id=otlp.spanId, parent_id=otlp.parentSpanId, name=otlp.name,
        start=_time(otlp.startTimeUnixNano), end=_time(otlp.endTimeUnixNano or otlp.startTimeUnixNano),
        attributes=attributes, resource=resource, source=f"{path} ({where})",
        error=(status.message or "error") if status.code in (2, "STATUS_CODE_ERROR") else None,
    )


def _hex(value: str, size: int) -> str:
    """An id as hex: OTLP JSON writes hex, protobuf's own JSON mapping base64."""
    if len(value) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        decoded = b""
    if len(decoded) != size:
        raise ValueError(f"neither {size * 2} hex digits nor base64 of {size} bytes")
    return decoded.hex()


def _time(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def _attributes(items: list[KeyValue] | None) -> dict[str, Any]:
    return {item.key: item.value.python() if item.value else None for item in items or [] if item.key is not None}


# -- the OTLP JSON shape (protobuf's JSON mapping of ExportTraceServiceRequest) ---------------


def _storable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (a \ud800 escape): no database can store it
        raise ValueError(f"holds {text[exc.start]!r}, half of a UTF-16 surrogate pair, which is not text") from None
    return text


_Text = Annotated[str, AfterValidator(_storable)]
_MAX_NANOS = (datetime.max - _EPOCH) // timedelta(microseconds=1) * 1000
_Nanos = Annotated[int, Field(ge=0, le=_MAX_NANOS)]  # fixed64, a string in OTLP JSON


def _id(size: int) -> AfterValidator:
    return AfterValidator(lambda value: _hex(value, size))


class AnyValue(BaseModel):
    """OTLP's AnyValue: one of these set."""

    stringValue: _Text | None = None
    intValue: int | None = None  # int64, a string in OTLP JSON
    doubleValue: float | None = None
    boolValue: bool | None = None
    arrayValue: ArrayValue | None = None
    kvlistValue: KeyValueList | None = None
    bytesValue: _Text | None = None  # base64, kept as it is

    def python(self) -> Any:
        for field in type(self).model_fields:
            if field in self.model_fields_set:
                value = getattr(self, field)
                if isinstance(value, ArrayValue):
                    return [item.python() for item in value.values or []]
                if isinstance(value, KeyValueList):
                    return _attributes(value.values)
                return value
        return None


class KeyValue(BaseModel):
    key: _Text | None = None  # an attribute without a key is skipped
    value: AnyValue | None = None


class ArrayValue(BaseModel):
    values: list[AnyValue] | None = None


class KeyValueList(BaseModel):
    values: list[KeyValue] | None = None


class Status(BaseModel):
    code: int | _Text | None = None
    message: _Text | None = None


class OtlpSpan(BaseModel):
    traceId: Annotated[_Text, _id(16)]
    spanId: Annotated[_Text, _id(8)]
    parentSpanId: Annotated[_Text, _id(8)] | None = None
    name: _Text = ""
    startTimeUnixNano: _Nanos
    endTimeUnixNano: _Nanos | None = None
    attributes: list[KeyValue] | None = None
    status: Status | None = None

    @field_validator("parentSpanId", mode="before")
    @classmethod
    def _no_parent(cls, value: Any) -> Any:
        return value or None  # "" is a root span


class Resource(BaseModel):
    attributes: list[KeyValue] | None = None


class ScopeSpans(BaseModel):
    spans: list[Any] | None = None  # each read as an OtlpSpan on its own, to name it in an error


class ResourceSpans(BaseModel):
    resource: Resource | None = None
    scopeSpans: list[ScopeSpans] | None = None
    instrumentationLibrarySpans: list[ScopeSpans] | None = None  # before OTLP 0.15


class ExportTraceServiceRequest(BaseModel):
    resourceSpans: list[ResourceSpans]


class _ReadAttributes(BaseModel):
    """The attributes this importer converts, with the types it needs (other attributes are
    kept as they come)."""

    score: float | None = Field(None, alias="counterfact.outcome.score")
    milestones: list[_Text] | None = Field(None, alias="counterfact.outcome.milestones")
    fork_step: int | None = Field(None, alias="counterfact.replay.fork_step")
    intervention_id: _Text | None = Field(None, alias="counterfact.replay.intervention_id")
    invocation: int | None = Field(None, alias="counterfact.step.invocation")
    step_agent: _Text | None = Field(None, alias="counterfact.step.agent")
    agent_name: _Text | None = Field(None, alias="gen_ai.agent.name")
    openinference_agent: _Text | None = Field(None, alias="agent.name")
    input_tokens: int | None = Field(None, alias="gen_ai.usage.input_tokens")
    output_tokens: int | None = Field(None, alias="gen_ai.usage.output_tokens")
    prompt_tokens: int | None = Field(None, alias="llm.token_count.prompt")
    completion_tokens: int | None = Field(None, alias="llm.token_count.completion")
    latency_ms: float | None = Field(None, alias="counterfact.model.latency_ms")


AnyValue.model_rebuild()


# -- traces into runs -----------------------------------------------------------------------


def import_otel(
    store: TraceStore,
    paths: Iterable[str | Path],
    *,
    skip_existing: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OtelImport:
    """Import OTLP JSON files (or folders of `*.json`/`*.jsonl` files) as log-only runs."""
    spans = [span for path in expand_paths(paths, (".json", ".jsonl")) for span in read_otlp_json(path)]
    return import_spans(store, spans, skip_existing=skip_existing, on_progress=on_progress)


def runs_of_spans(spans: Sequence[Span], report: OtelImport) -> list[tuple[RunRecord, list[StepRecord]]]:
    """The runs spans make, one per trace, oldest first (a replay after the run it was forked
    from); counts what it read into `report`. Any tool's spans given as `Span`s map this way."""
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
        report.spans += 1
    built: list[tuple[RunRecord, list[StepRecord]]] = []
    for trace_id, trace in by_trace.items():
        made = _run_of(trace_id, trace, report)
        if made is not None:
            built.append(made)
    built.sort(key=lambda made: made[0].created_at)
    return built


def import_spans(
    store: TraceStore,
    spans: Sequence[Span],
    *,
    skip_existing: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OtelImport:
    """Store the runs `spans` make, in one transaction; runs already stored are skipped (or,
    without `skip_existing`, refused)."""
    report = OtelImport()
    built = runs_of_spans(spans, report)
    known = store.existing_run_ids([run.id for run, _ in built])
    parents = {run.parent_run_id for run, _ in built if run.parent_run_id}
    present = {run.id for run, _ in built} | store.existing_run_ids(list(parents))
    for run, _ in built:  # a replay whose parent is neither imported nor stored stands alone
        if run.parent_run_id and run.parent_run_id not in present:
            run.parent_run_id = run.fork_step = run.intervention_id = None
    if known and not skip_existing:
        raise OtelImportError(f"{len(known)} of these traces are already runs in the store (e.g. {min(known)})")
    with store.begin() as conn:
        for done, (run, steps) in enumerate(built, start=1):
            if run.id in known:
                report.existing.append(run.id)
                continue
            store.write_run(run, steps, conn)
            report.runs.append(run.id)
            report.steps += len(steps)
            report.model_calls += sum(len(s.model_calls) for s in steps)
            report.tool_calls += sum(len(s.tool_calls) for s in steps)
            if on_progress is not None:
                on_progress(done, len(built))
    return report


def _run_of(trace_id: str, spans: list[Span], report: OtelImport) -> tuple[RunRecord, list[StepRecord]] | None:
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.start, s.end))
    roots = children.get(None, [])
    if not roots:
        raise OtelImportError(f"{spans[0].source}: trace {trace_id} has no root span (each span's parent is "
                              "another of its spans: a cycle); nothing was imported")
    root = roots[0]
    if len(roots) == 1 and "counterfact.verification.id" in root.attributes and "counterfact.run.id" not in root.attributes:
        report.verifications += 1
        return None
    step_spans = children.get(root.span_id, []) if len(roots) == 1 and children.get(root.span_id) else roots
    steps = []
    for index, span in enumerate(step_spans):
        steps.append(_step(index, span, _descendants(span, children), report))
    attrs = root.attributes
    run_id = str(attrs.get("counterfact.run.id") or f"otel-{trace_id}")
    question = attrs.get("input.value") if len(roots) == 1 else None
    status = attrs.get("counterfact.run.status")
    if status not in ("running", "succeeded", "failed", "error"):
        status = "error" if root.error else "succeeded"
    outcome = None
    if isinstance(attrs.get("counterfact.outcome.success"), bool):
        outcome = Outcome(success=attrs["counterfact.outcome.success"],
                          score=float(attrs.get("counterfact.outcome.score") or 0.0),
                          milestones=list(attrs.get("counterfact.outcome.milestones") or []),
                          detail=_string(attrs["output.value"]) if attrs.get("output.value") is not None else None)
    workflow = attrs.get("gen_ai.workflow.name") or (root.name if len(roots) == 1 else "otel")
    service = root.resource.get("service.name")
    parent = attrs.get("counterfact.replay.parent_run_id")
    run = RunRecord(
        id=run_id, workflow=str(workflow)[:200], status=status, outcome=outcome, source=SOURCE,
        total_tokens=sum(c.prompt_tokens + c.completion_tokens for s in steps for c in s.model_calls),
        total_latency_ms=sum(c.latency_ms for s in steps for c in s.model_calls),
        parent_run_id=parent if isinstance(parent, str) else None,
        fork_step=attrs.get("counterfact.replay.fork_step") if isinstance(parent, str) else None,
        intervention_id=attrs.get("counterfact.replay.intervention_id"),
        task_input={"question": question} if isinstance(question, str) else {},
        labels={"otel": {"trace_id": trace_id, "service": service, "spans": len(spans)}},
        created_at=min(s.start for s in spans), ended_at=max(s.end for s in spans),
        error=root.error if len(roots) == 1 else None,
    )
    return run, steps


def _descendants(span: Span, children: dict[str | None, list[Span]]) -> list[Span]:
    found: list[Span] = []
    pending = list(children.get(span.span_id, []))
    expanded = {span.span_id}  # a span id twice in a trace must not loop
    while pending:
        child = pending.pop(0)
        found.append(child)
        if child.span_id not in expanded:
            expanded.add(child.span_id)
            pending.extend(children.get(child.span_id, []))
    return sorted(found, key=lambda s: (s.start, s.end))


def _step(index: int, span: Span, below: list[Span], report: OtelImport) -> StepRecord:
    attrs = span.attributes
    kind = span.kind
    if kind == "UNKNOWN":
        report.unknown_spans += 1
    report.unknown_spans += sum(1 for s in below if s.kind == "UNKNOWN")
    own = [span] if kind in ("LLM", "TOOL") and not any(s.kind == kind for s in below) else []
    model_calls = [_model_call(s) for s in [*own, *below] if s.kind == "LLM"]
    tool_calls = [_tool_call(s) for s in [*own, *below] if s.kind == "TOOL"]
    agent_name = attrs.get("counterfact.step.agent") or attrs.get("gen_ai.agent.name") or attrs.get("agent.name")
    node = str(attrs.get("counterfact.step.node") or agent_name or _strip(span.name))
    step_kind = attrs.get("counterfact.step.kind")
    if step_kind not in ("agent", "tool", "router", "plan", "input"):
        step_kind = "tool" if kind == "TOOL" else "agent"
    agent = agent_name or (node if model_calls or kind in ("AGENT", "LLM") else None)
    request = model_calls[0].request if model_calls else []
    inputs = request or ([{"role": "user", "content": _string(attrs["input.value"])}] if "input.value" in attrs else None)
    output: Any = None
    if "output.value" in attrs:
        output = {"role": "assistant", "content": _string(attrs["output.value"]), **({"name": agent} if agent else {})}
    elif model_calls:
        output = model_calls[-1].response
    return StepRecord(
        index=index, node=node, agent=agent, kind=step_kind,
        invocation=int(attrs.get("counterfact.step.invocation") or 0),
        input=inputs, output=output, started_at=span.start, ended_at=span.end, error=span.error,
        model_calls=model_calls, tool_calls=tool_calls,
    )


def _strip(name: str) -> str:
    for prefix in ("invoke_agent ", "execute_tool ", "chat "):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """OpenInference's flattened messages: `llm.input_messages.0.message.role`, ..."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix):
            rest = key[len(prefix):].split(".", 2)
            if len(rest) == 3 and rest[0].isdecimal() and rest[1] == "message" and rest[2] in ("role", "content", "name"):
                found.setdefault(int(rest[0]), {})[rest[2]] = value
    return [found[i] for i in sorted(found)]


def _model_call(span: Span) -> ModelCallRecord:
    attrs = span.attributes
    request = _json(attrs.get("gen_ai.input.messages"))
    if not isinstance(request, list):
        request = _messages(attrs, "llm.input_messages.")
    if not request and "input.value" in attrs:
        parsed = _json(attrs["input.value"])
        request = parsed if isinstance(parsed, list) else [{"role": "user", "content": _string(attrs["input.value"])}]
    outputs = _json(attrs.get("gen_ai.output.messages"))
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        response = outputs[0]
    else:
        flat = _messages(attrs, "llm.output_messages.")
        response = flat[0] if flat else {"role": "assistant", "content": _string(attrs.get("output.value", ""))}
    reasons = attrs.get("gen_ai.response.finish_reasons")
    params = _json(attrs.get("llm.invocation_parameters"))
    return ModelCallRecord(
        backend=str(attrs.get("counterfact.model.backend") or attrs.get("gen_ai.provider.name")
                    or attrs.get("gen_ai.system") or attrs.get("llm.provider") or SOURCE),
        model=str(next((attrs[k] for k in ("gen_ai.request.model", "llm.model_name", "gen_ai.response.model")
                        if attrs.get(k) is not None), _strip(span.name))),
        params=params if isinstance(params, dict) else {},
        request=[m if isinstance(m, dict) else {"role": "user", "content": _string(m)} for m in request],
        response=response,
        finish_reason=str(reasons[0]) if isinstance(reasons, list) and reasons else None,
        prompt_tokens=int(attrs.get("gen_ai.usage.input_tokens") or attrs.get("llm.token_count.prompt") or 0),
        completion_tokens=int(attrs.get("gen_ai.usage.output_tokens") or attrs.get("llm.token_count.completion") or 0),
        latency_ms=float(attrs.get("counterfact.model.latency_ms") or (span.end - span.start).total_seconds() * 1000),
    )


def _tool_call(span: Span) -> ToolCallRecord:
    attrs = span.attributes
    raw = attrs.get("gen_ai.tool.call.arguments") or attrs.get("tool.parameters") or attrs.get("input.value")
    arguments = _json(raw) if raw is not None else {}
    result = attrs.get("gen_ai.tool.call.result", attrs.get("output.value"))
    return ToolCallRecord(
        name=str(attrs.get("gen_ai.tool.name") or attrs.get("tool.name") or _strip(span.name)),
        arguments=arguments if isinstance(arguments, dict) else {"input": arguments},
        result=result if span.error is None else None,
        error=span.error,
        latency_ms=(span.end - span.start).total_seconds() * 1000,
    )


class OtlpFormat:
    """OpenTelemetry traces as OTLP JSON (GenAI or OpenInference spans), as collectors' file
    exporters write them: read as log-only runs, written from stored runs."""

    name = "otel"
    summary = "OpenTelemetry OTLP JSON (GenAI or OpenInference spans): log-only runs in, spans out"
    suffixes = (".json", ".jsonl")
    writes = True

    def detect(self, sniff: Sniff) -> bool:
        return sniff.head.lstrip()[:1] in ("{", "[") and '"resourceSpans"' in sniff.head

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: Progress | None = None) -> ImportReport:
        report = import_otel(store, files)
        if on_progress is not None:
            on_progress(len(files), len(files))
        notes = [f"{report.spans} spans: {report.model_calls} model calls, {report.tool_calls} tool calls"]
        if report.unknown_spans:
            notes.append(f"{report.unknown_spans} spans of no known kind were kept as generic steps or calls' context")
        if report.verifications:
            notes.append(f"{report.verifications} counterfact verification traces are not runs: skipped")
        return ImportReport(
            format=self.name, files=[str(f) for f in files], run_ids=report.runs, steps=report.steps,
            skipped=[Skipped(what=f"run {run_id}", reason="already in the store") for run_id in report.existing],
            notes=notes,
        )

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path,
              on_progress: Progress | None = None) -> ExportReport:
        runs, spans = write_otlp_json(store, run_ids, path, on_progress=on_progress)
        return ExportReport(format=self.name, target=str(path), run_ids=[store.resolve_run_id(r) for r in run_ids][:runs], units=spans, unit="spans")


register_format(OtlpFormat())
