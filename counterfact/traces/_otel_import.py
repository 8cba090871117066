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
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.traces._models import Outcome, RunRecord, StepRecord
from counterfact.traces._records import ModelCallRecord, ToolCallRecord
from counterfact.traces._store import TraceStore

SOURCE = "otel"
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings"}
_EPOCH = datetime(1970, 1, 1)


class OtelImportError(CounterfactError):
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


def read_otlp_json(path: Path) -> list[Span]:
    """Every span in one OTLP JSON file: one ExportTraceServiceRequest per line, or one
    document (an object, or a list of them)."""
    text = path.read_text(encoding="utf-8")
    documents: list[Any] = []
    try:
        documents = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise OtelImportError(f"{path}: not OTLP JSON (line {exc.lineno}: {exc.msg}); expected "
                                  "ExportTraceServiceRequest objects with resourceSpans") from None
    if len(documents) == 1 and isinstance(documents[0], list):
        documents = documents[0]
    spans: list[Span] = []
    for number, document in enumerate(documents, start=1):
        if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
            raise OtelImportError(f"{path}: not OTLP JSON (object {number} has no resourceSpans list); expected "
                                  "ExportTraceServiceRequest objects, as an OpenTelemetry collector's file exporter writes")
        for resource_spans in document["resourceSpans"]:
            resource = _attributes((resource_spans.get("resource") or {}).get("attributes") or [])
            for scope in resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []:
                for raw in scope.get("spans") or []:
                    spans.append(_span(path, raw, resource))
    return spans


def _span(path: Path, raw: dict[str, Any], resource: dict[str, Any]) -> Span:
    try:
        status = raw.get("status") or {}
        error = None
        if status.get("code") in (2, "STATUS_CODE_ERROR"):
            error = status.get("message") or "error"
        return Span(
            trace_id=_hex(raw["traceId"], 16), span_id=_hex(raw["spanId"], 8),
            parent_id=_hex(raw["parentSpanId"], 8) if raw.get("parentSpanId") else None,
            name=str(raw.get("name", "")), start=_time(raw["startTimeUnixNano"]),
            end=_time(raw.get("endTimeUnixNano") or raw["startTimeUnixNano"]),
            attributes=_attributes(raw.get("attributes") or []), error=error, resource=resource,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise OtelImportError(f"{path}: span {raw.get('name', '?')!r} is not an OTLP span ({exc}); expected "
                              "traceId, spanId and startTimeUnixNano") from None


def _hex(value: str, size: int) -> str:
    """An id as hex: OTLP JSON writes hex, protobuf's own JSON mapping base64."""
    if len(value) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    decoded = base64.b64decode(value, validate=True)
    if len(decoded) != size:
        raise ValueError(f"id {value!r} is neither {size * 2} hex digits nor base64 of {size} bytes")
    return decoded.hex()


def _time(nanos: str | int) -> datetime:
    nanos = int(nanos)
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in (value["arrayValue"].get("values") or [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values") or [])
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value") or {}) for item in items if "key" in item}


# -- traces into runs -----------------------------------------------------------------------


def import_otel(
    store: TraceStore,
    paths: Iterable[str | Path],
    *,
    skip_existing: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OtelImport:
    """Import OTLP JSON files (or folders of `*.json`/`*.jsonl` files) as log-only runs."""
    files = _files(paths)
    report = OtelImport()
    by_trace: dict[str, list[Span]] = {}
    for path in files:
        for span in read_otlp_json(path):
            by_trace.setdefault(span.trace_id, []).append(span)
            report.spans += 1
    built: list[tuple[RunRecord, list[StepRecord]]] = []
    for trace_id, spans in by_trace.items():
        made = _run_of(trace_id, spans, report)
        if made is not None:
            built.append(made)
    built.sort(key=lambda made: made[0].created_at)  # a replay after the run it was forked from
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


def _files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
            if not found:
                raise OtelImportError(f"{path}: no .json or .jsonl file in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise OtelImportError(f"{path} does not exist")
    return files


def _run_of(trace_id: str, spans: list[Span], report: OtelImport) -> tuple[RunRecord, list[StepRecord]] | None:
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.start, s.end))
    roots = children.get(None, [])
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
                          detail=attrs.get("output.value"))
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
    while pending:
        child = pending.pop(0)
        found.append(child)
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
            if len(rest) == 3 and rest[0].isdigit() and rest[1] == "message" and rest[2] in ("role", "content", "name"):
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
