"""Runs as OpenTelemetry spans: GenAI semantic conventions and the OpenInference attributes that
Arize Phoenix reads, sent over OTLP/HTTP or written as OTLP JSON, and live while recording
(`_otel_live`).

A run is one trace: `invoke_workflow {workflow}` at its root, a child per step (`invoke_agent
{agent}` for an agent's step, the node's name otherwise), and under each step its model calls
(`chat {model}`) and tool calls (`execute_tool {tool}`). Ids are derived from run ids, so a
run exported twice is the same trace, and a replay links to the root span of the run it was
forked from without reading it. Timestamps are the recorded ones: steps carry their own; a
step's calls, which record latencies but not start times, are laid end to end from the
step's start. A verification is a trace of its own (`verify_intervention`) linking the run it
edited and its replays, with the verdict, both arms' success rates, interval and p-value.

Everything passes through the store's redactor again on the way out, so a secret pattern
added after a run was recorded still keeps it from leaving.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from counterfact._errors import CounterfactError
from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.store import (
    RunRecord,
    StepRecord,
    TraceStore,
    VerdictRecord,
    output_text,
    step_handoffs,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

log = logging.getLogger("counterfact.otel")

ENDPOINT_ENV = "COUNTERFACT_OTLP_ENDPOINT"
STANDARD_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
PROJECT = "counterfact"  # the resource's openinference.project.name (Phoenix's project)


def trace_id_of(run_id: str) -> int:
    """A run's trace id: its own id when that is 32 hex digits, else a hash of it."""
    if len(run_id) == 32:
        try:
            return int(run_id, 16) or 1
        except ValueError:
            pass
    return int(hashlib.sha256(f"run:{run_id}".encode()).hexdigest()[:32], 16) or 1


def span_id_of(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:16], 16) or 1


_EPOCH = datetime(1970, 1, 1)


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of a naive UTC time, exactly (no float rounding)."""
    delta = moment.replace(tzinfo=None) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


class SpanWriter:
    """Hands a run's spans, finished, with their planned ids and recorded times, to an
    OpenTelemetry SDK span processor (batching, OTLP encoding and sending are the SDK's).

    The spans are built as the SDK's `ReadableSpan`s rather than started and ended through a
    Tracer: they describe what already happened, and skipping the live-span machinery (context,
    sampler, attribute checks) is most of the cost of exporting while recording.
    """

    def __init__(self, processor: SpanProcessor, redact: Callable[[Any], Any], project: str = PROJECT) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.processor = processor
        self._redact = redact
        self._resource = Resource.create({"service.name": "counterfact", "openinference.project.name": project})
        self._scope = InstrumentationScope("counterfact")

    def redacting(self, redact: Callable[[Any], Any]) -> SpanWriter:
        """This writer with another store's redactor (the live exporter serves every store of
        the process, each with its own patterns)."""
        other = copy.copy(self)
        other._redact = redact
        return other

    # -- the spans of one run ---------------------------------------------------------------

    def run(self, run: RunRecord, verdict: VerdictRecord | None = None, intervention: dict[str, Any] | None = None) -> None:
        """The run's root span (its steps' spans are emitted on their own); a replay's carries
        its intervention (the edit, as JSON) and its verification's verdict when known."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": run.workflow,
            "gen_ai.conversation.id": run.id,
            "openinference.span.kind": "CHAIN",
            "counterfact.run.id": run.id,
            "counterfact.run.status": run.status,
            "counterfact.run.source": run.source,
            "session.id": run.id,
        }
        if run.task_input:
            attributes["input.value"] = self._redact(output_text(_question(run.task_input)))
            attributes["input.mime_type"] = "text/plain"
        if run.outcome is not None:
            attributes["counterfact.outcome.success"] = run.outcome.success
            attributes["counterfact.outcome.score"] = run.outcome.score
            if run.outcome.milestones:
                attributes["counterfact.outcome.milestones"] = list(run.outcome.milestones)
            if run.outcome.detail:
                attributes["output.value"] = self._redact(run.outcome.detail)
        if run.total_tokens:
            attributes["llm.token_count.total"] = run.total_tokens
        for key in ("arm", "verification_id", "repeat", "model", "task_id"):
            if isinstance(run.labels.get(key), str | int | float | bool):
                attributes[f"counterfact.label.{key}"] = run.labels[key]
        links = []
        if run.parent_run_id:
            attributes["counterfact.replay.parent_run_id"] = run.parent_run_id
            attributes["counterfact.replay.fork_step"] = run.fork_step if run.fork_step is not None else -1
            if run.intervention_id:
                attributes["counterfact.replay.intervention_id"] = run.intervention_id
            if intervention is not None:
                attributes["counterfact.replay.intervention"] = json.dumps(self._redact(intervention), ensure_ascii=False)
            links.append(_link_to_run(run.parent_run_id, {"counterfact.link": "forked_from",
                                                          "counterfact.fork_step": run.fork_step or 0}))
        if verdict is not None:
            attributes.update(verdict_attributes(verdict))
        ended = run.ended_at or run.created_at
        self._span(
            f"invoke_workflow {run.workflow}", trace_id_of(run.id), span_id_of("run", run.id), None,
            attributes, run.created_at, ended, error=run.error or (run.status == "error" and "error") or None,
            links=links,
        )

    def step(self, run_id: str, step: StepRecord) -> None:
        """A step's span, with its model and tool calls under it."""
        index = step.index or 0
        trace_id, step_span = trace_id_of(run_id), span_id_of("step", run_id, index)
        is_agent = step.kind == "agent" and bool(step.agent or step.model_calls)
        agent = step.agent or step.node
        attributes: dict[str, Any] = {
            "counterfact.step.index": index,
            "counterfact.step.node": step.node,
            "counterfact.step.kind": step.kind,
            "counterfact.step.invocation": step.invocation,
            "gen_ai.conversation.id": run_id,
        }
        if is_agent:
            attributes.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                               "openinference.span.kind": "AGENT", "agent.name": agent})
        else:
            attributes["openinference.span.kind"] = "CHAIN"  # a node running tools is a chain of its calls
        if step.agent:
            attributes["counterfact.step.agent"] = step.agent
        if step.input:
            attributes["input.value"] = self._redact(output_text(step.input[-1]))
        if step.output is not None:
            attributes["output.value"] = self._redact(output_text(step.output))
        if edges := step_handoffs(step):
            attributes["counterfact.handoffs"] = [f"{e.source} -> {e.to}" for e in edges]
            own = [e for e in edges if not e.nested]
            if own:
                attributes["counterfact.handoff.to"] = own[-1].to
                if own[-1].tool:
                    attributes["counterfact.handoff.tool"] = own[-1].tool
        name = f"invoke_agent {agent}" if is_agent else step.node
        self._span(name, trace_id, step_span, span_id_of("run", run_id), attributes,
                   step.started_at, step.ended_at, error=step.error)
        moment = step.started_at
        for kind, seq in call_order(step.model_calls, step.tool_calls):
            call: ModelCallRecord | ToolCallRecord = (step.model_calls if kind == "model" else step.tool_calls)[seq]
            took = timedelta(milliseconds=call.latency_ms)
            if call.offset_ms is not None:  # recorded when it started: no need to lay calls end to end
                moment = step.started_at + timedelta(milliseconds=call.offset_ms)
            if isinstance(call, ModelCallRecord):
                self._model_call(trace_id, span_id_of("model", run_id, index, seq), step_span, call, moment, moment + took)
            else:
                self._tool_call(trace_id, span_id_of("tool", run_id, index, seq), step_span, call, moment, moment + took)
            moment += took

    def verification(self, verdict: VerdictRecord, replays: Sequence[RunRecord], fork_step: int | None) -> None:
        """A verification as a trace of its own, linking the run it edited and its replays."""
        links = [_link_to_run(verdict.run_id, {"counterfact.link": "edited_run"})]
        links += [_link_to_run(r.id, {"counterfact.link": str(r.labels.get("arm") or "replay")}) for r in replays]
        attributes = {"openinference.span.kind": "EVALUATOR", "gen_ai.conversation.id": verdict.run_id,
                      "counterfact.verification.run_id": verdict.run_id,
                      "counterfact.verification.fork_step": fork_step if fork_step is not None else -1,
                      **verdict_attributes(verdict)}
        ends = [r.ended_at or r.created_at for r in replays]
        start = min([r.created_at for r in replays], default=verdict.created_at)
        self._span("verify_intervention", trace_id_of(f"verification:{verdict.id}"),
                   span_id_of("verification", verdict.id), None, attributes, start, max([*ends, verdict.created_at]),
                   links=links)

    # -- calls -----------------------------------------------------------------------------

    def _model_call(self, trace_id: int, span_id: int, parent: int, call: ModelCallRecord,
                    start: datetime, end: datetime) -> None:
        params = call.params or {}
        provider = "openai" if call.backend.startswith("openai") else call.backend
        request = self._redact(call.request or [])
        response = self._redact(call.response or {})
        request_json = json.dumps(request, ensure_ascii=False, default=str)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": call.model,
            "gen_ai.response.model": call.model,
            "gen_ai.usage.input_tokens": call.prompt_tokens,
            "gen_ai.usage.output_tokens": call.completion_tokens,
            "gen_ai.input.messages": request_json,
            "gen_ai.output.messages": json.dumps([response], ensure_ascii=False, default=str),
            "openinference.span.kind": "LLM",
            "llm.model_name": call.model,
            "llm.provider": provider,
            "llm.token_count.prompt": call.prompt_tokens,
            "llm.token_count.completion": call.completion_tokens,
            "llm.token_count.total": call.prompt_tokens + call.completion_tokens,
            "llm.invocation_parameters": json.dumps(params, default=str),
            "input.value": request_json,
            "input.mime_type": "application/json",
            "output.value": output_text(response),
            "counterfact.model.backend": call.backend,
            "counterfact.model.latency_ms": call.latency_ms,
        }
        if call.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
        for key, name in (("temperature", "temperature"), ("max_tokens", "max_tokens"), ("top_p", "top_p"),
                          ("seed", "seed")):
            if isinstance(params.get(key), int | float) and not isinstance(params.get(key), bool):
                attributes[f"gen_ai.request.{name}"] = params[key]
        for i, message in enumerate(request if isinstance(request, list) else []):
            if isinstance(message, dict):
                attributes[f"llm.input_messages.{i}.message.role"] = str(message.get("role", ""))
                attributes[f"llm.input_messages.{i}.message.content"] = output_text(message.get("content", ""))
        if isinstance(response, dict):
            attributes["llm.output_messages.0.message.role"] = str(response.get("role", "assistant"))
            attributes["llm.output_messages.0.message.content"] = output_text(response.get("content", ""))
        self._span(f"chat {call.model}".strip(), trace_id, span_id, parent, attributes, start, end, client=True)

    def _tool_call(self, trace_id: int, span_id: int, parent: int, call: ToolCallRecord,
                   start: datetime, end: datetime) -> None:
        arguments = json.dumps(self._redact(call.arguments), ensure_ascii=False, default=str)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.arguments": arguments,
            "openinference.span.kind": "TOOL",
            "tool.name": call.name,
            "tool.parameters": arguments,
            "input.value": arguments,
            "input.mime_type": "application/json",
        }
        if call.error is None:
            result = self._redact(output_text(call.result))
            attributes["gen_ai.tool.call.result"] = result
            attributes["output.value"] = result
        if call.handoff is not None:
            attributes["counterfact.tool.handoff"] = call.handoff
        if call.agent is not None:
            attributes["counterfact.call.agent"] = call.agent
        self._span(f"execute_tool {call.name}", trace_id, span_id, parent, attributes, start, end,
                   error=call.error and self._redact(call.error))

    def _span(self, name: str, trace_id: int, span_id: int, parent: int | None, attributes: dict[str, Any],
              start: datetime, end: datetime, *, error: str | None = None, links: Sequence[Any] = (),
              client: bool = False) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import (
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        sampled = TraceFlags(TraceFlags.SAMPLED)
        begin = _ns(start)
        span = ReadableSpan(
            name,
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=sampled),
            parent=None if parent is None else SpanContext(trace_id, parent, is_remote=False, trace_flags=sampled),
            resource=self._resource, attributes=attributes, links=tuple(links),
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
            start_time=begin, end_time=max(_ns(end), begin), instrumentation_scope=self._scope,
        )
        self.processor.on_end(span)


def _link_to_run(run_id: str, attributes: dict[str, Any]) -> Any:
    """A span link to a run's root span (its ids are derived, so the run need not be read)."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    context = SpanContext(trace_id_of(run_id), span_id_of("run", run_id), is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return Link(context, attributes)


def call_order(models: Sequence[ModelCallRecord], tools: Sequence[ToolCallRecord]) -> list[tuple[str, int]]:
    """A step's calls in the order they ran: by their recorded starts; for calls recorded
    without one (before revision 0006, or imported), each tool call goes after the first model
    call (not yet followed by one) whose answer asked for it, by a tool call of that name or a
    `CALL name` line, and the rest after the last model call."""
    placed = [("model", m, c.offset_ms) for m, c in enumerate(models)] + [("tool", t, c.offset_ms) for t, c in enumerate(tools)]
    if placed and all(offset is not None for _, _, offset in placed):
        return [(kind, seq) for kind, seq, _ in sorted(placed, key=lambda p: p[2] or 0.0)]
    asked = [_asked_tools(call.response) for call in models]
    after: dict[int, list[int]] = {}
    used = -1
    for t, tool in enumerate(tools):
        found = next((m for m in range(max(used, 0), len(models)) if tool.name in asked[m]), len(models) - 1)
        used = found
        after.setdefault(found, []).append(t)
    order = [("tool", t) for t in after.get(-1, [])]
    for m in range(len(models)):
        order += [("model", m)] + [("tool", t) for t in after.get(m, [])]
    return order


def _asked_tools(response: dict[str, Any]) -> set[str]:
    names = set()
    for call in response.get("tool_calls") or []:
        if isinstance(call, dict):
            names.add(str(call.get("name") or (call.get("function") or {}).get("name") or ""))
    content = response.get("content")
    if isinstance(content, str):
        names.update(line.split()[1] for line in content.splitlines() if line.startswith("CALL ") and len(line.split()) > 1)
    return names


def verdict_attributes(verdict: VerdictRecord) -> dict[str, Any]:
    comparison = verdict.stats.get("comparison") or {}
    attributes: dict[str, Any] = {
        "counterfact.verification.id": verdict.id,
        "counterfact.verification.verdict": verdict.verdict,
        "counterfact.verification.reason": verdict.reason,
        "counterfact.verification.intervention_id": verdict.intervention_id,
    }
    for key in ("treatment_rate", "control_rate", "difference", "ci_low", "ci_high", "p_value", "n"):
        if isinstance(comparison.get(key), int | float):
            attributes[f"counterfact.verification.{key}"] = comparison[key]
    if "deterministic" in verdict.stats:
        attributes["counterfact.verification.deterministic"] = bool(verdict.stats["deterministic"])
    return attributes


def _question(task_input: dict[str, Any]) -> Any:
    for key in ("question", "input", "task", "query"):
        if isinstance(task_input.get(key), str):
            return task_input[key]
    return task_input


# -- batch export ----------------------------------------------------------------------------


def emit_runs(
    store: TraceStore,
    run_ids: Iterable[str],
    writer: SpanWriter,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Emit each run's spans (and its verifications'); returns (runs, spans)."""
    ids = list(run_ids)
    spans = 0
    for done, run_id in enumerate(ids, start=1):
        run = store.get_run(run_id)
        verdict = _verdict_of(store, run)
        steps = store.steps(run.id)
        writer.run(run, verdict, intervention_of(store, run))
        for step in steps:
            writer.step(run.id, step)
        spans += 1 + sum(1 + len(s.model_calls) + len(s.tool_calls) for s in steps)
        for made in store.verdicts(run_id=run.id):
            replays = store.list_runs(parent=run.id, labels={"verification_id": made.id}, limit=None)
            writer.verification(made, replays, replays[0].fork_step if replays else None)
            spans += 1
        if on_progress is not None:
            on_progress(done, len(ids))
    return len(ids), spans


def intervention_of(store: TraceStore, run: RunRecord) -> dict[str, Any] | None:
    """A replay's edit, as stored (None for a run that is not a replay)."""
    if not run.intervention_id:
        return None
    try:
        return store.get_intervention(run.intervention_id).spec
    except CounterfactError:  # a replay whose intervention is gone still exports
        return None


def _verdict_of(store: TraceStore, run: RunRecord) -> VerdictRecord | None:
    """A replay's verification's verdict (None before it is stored, or for a plain run)."""
    verification = run.labels.get("verification_id")
    if not run.parent_run_id or not isinstance(verification, str):
        return None
    try:
        return store.get_verdict(verification)
    except CounterfactError:
        return None


def export_otlp(
    store: TraceStore,
    run_ids: Iterable[str],
    endpoint: str,
    *,
    project: str = PROJECT,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Send runs to an OTLP/HTTP collector (`endpoint` is its base URL or its /v1/traces URL);
    returns (runs, spans). Raises when the collector did not take them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = _Checked(OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=10))
    processor = BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048,
                                   schedule_delay_millis=200)
    try:
        counts = emit_runs(store, run_ids, SpanWriter(processor, store.redact, project), on_progress=on_progress)
        processor.force_flush(timeout_millis=60_000)
    finally:
        processor.shutdown()
    if exporter.failed:
        raise CounterfactError(f"the OTLP collector at {traces_url(endpoint)} did not take the spans "
                               f"({exporter.failed} batches failed); is it running?")
    return counts


def write_otlp_json(
    store: TraceStore,
    run_ids: Iterable[str],
    path: str | Path,
    *,
    project: str = PROJECT,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write runs as OTLP JSON lines (one ExportTraceServiceRequest per line, as collectors'
    file exporters write them, with hex ids); returns (runs, spans)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    counts = emit_runs(store, run_ids, SpanWriter(processor, store.redact, project), on_progress=on_progress)
    processor.shutdown()
    spans = memory.get_finished_spans()
    Path(path).write_text("".join(otlp_json_line(spans[i:i + 512]) + "\n" for i in range(0, len(spans), 512)),
                          encoding="utf-8")
    return counts


def otlp_json_line(spans: Sequence[Any]) -> str:
    """Spans as one line of OTLP JSON (the protobuf JSON mapping, with ids in hex as OTLP/JSON
    requires rather than protobuf's base64)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    data = MessageToDict(encode_spans(spans))
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = _b64_to_hex(span[key])
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if link.get(key):
                            link[key] = _b64_to_hex(link[key])
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def traces_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


class _Checked:
    """An exporter that counts failed batches and says so once (the live exporter goes on)."""

    def __init__(self, inner: Any, *, warn: bool = False) -> None:
        self.inner = inner
        self.failed = 0
        self._warn = warn

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - a collector's failure must not reach recording
            log.debug("OTLP export raised %s", exc)
            result = SpanExportResult.FAILURE
        if result != SpanExportResult.SUCCESS:
            self.failed += 1
            if self._warn and self.failed == 1:
                log.warning("counterfact: %d spans could not be sent to the OTLP collector; they are lost, "
                            "the runs are in the store (export them later with `counterfact export --otlp`)",
                            len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))
