"""Runs out as OpenTelemetry spans and back in: OTLP JSON round trips, redaction on the way
out, bad files, unknown span kinds, and live export while recording to a real OTLP/HTTP
receiver on loopback (and to a collector that is not there)."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from counterfact.formats import OtelImportError, import_otel, write_otlp_json
from counterfact.formats._otel import SpanWriter
from counterfact.graphs import record
from counterfact.interventions import Replayer, parse_intervention, verify
from counterfact.store import Redactor, StepRecord, TraceStore, excerpt

from ..interventions import apps


def _runs_with_a_verified_replay(store: TraceStore) -> tuple[str, str]:
    tool_run = record(apps.tool_agent(), store, ref="tests.interventions.apps:tool_agent",
                      check="tests.interventions.apps:answer_is_5").invoke({"messages": [("user", "add 2 and 2")]}).run_id
    run_id = record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    replayer = Replayer(store, run_id)
    verify(replayer, replayer.compile(parse_intervention({"kind": "message", "text": "compute 2+3"}), "planner#0"), pairs=1)
    return tool_run, run_id


def _shape(store: TraceStore, run_id: str) -> list[Any]:
    """What a round trip must keep: agents, steps, calls and texts, in order."""
    return [
        (s.node, s.agent, s.kind, excerpt(s.output, 400) if s.output is not None else None,
         [(c.model, c.prompt_tokens, c.completion_tokens, [excerpt(m, 400) for m in c.request],
           excerpt(c.response, 400)) for c in s.model_calls],
         [(t.name, t.arguments, str(t.result), t.error) for t in s.tool_calls])
        for s in store.steps(run_id)
    ]


def test_export_import_round_trip_keeps_agents_steps_calls_and_texts(tmp_path: Path) -> None:
    source = TraceStore.open(str(tmp_path / "source.db"))
    tool_run, _ = _runs_with_a_verified_replay(source)
    runs = [r.id for r in reversed(source.list_runs(limit=None))]
    assert len(runs) == 4  # two runs, a treatment and a control replay
    exported = tmp_path / "runs.jsonl"
    count, spans = write_otlp_json(source, runs, exported)
    assert count == 4 and spans > 10
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    span_ids = [s["spanId"] for line in lines for r in line["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
    assert len(span_ids) == spans and all(len(i) == 16 and int(i, 16) >= 0 for i in span_ids)  # hex, not base64

    target = TraceStore.open(str(tmp_path / "target.db"))
    report = import_otel(target, [exported])
    assert sorted(report.runs) == sorted(runs) and report.verifications == 1 and report.unknown_spans == 0
    for rid in runs:
        assert _shape(target, rid) == _shape(source, rid), rid
        a, b = source.get_run(rid), target.get_run(rid)
        assert (b.workflow, b.status, b.parent_run_id, b.fork_step) == (a.workflow, a.status, a.parent_run_id, a.fork_step)
        assert b.outcome is not None and a.outcome is not None and b.outcome.success == a.outcome.success
        assert b.source == "otel" and b.total_tokens == a.total_tokens
        assert [s.started_at for s in target.steps(rid)] == [s.started_at for s in source.steps(rid)]
    tool_steps = target.steps(tool_run)
    assert [c.name for s in tool_steps for c in s.tool_calls] == ["add"]
    assert len([c for s in tool_steps for c in s.model_calls]) == 2
    # imported runs verify, and importing again skips them
    from counterfact.store import verify_run

    assert all(verify_run(target, rid).ok for rid in runs)
    again = import_otel(target, [exported])
    assert again.runs == [] and sorted(again.existing) == sorted(runs)
    # imported runs export again, to the same shape
    second = tmp_path / "again.jsonl"
    write_otlp_json(target, runs, second)
    third = TraceStore.open(str(tmp_path / "third.db"))
    import_otel(third, [second])
    assert all(_shape(third, rid) == _shape(source, rid) for rid in runs)


def test_redaction_applies_on_the_way_out(tmp_path: Path) -> None:
    path = str(tmp_path / "trace.db")
    store = TraceStore.open(path)
    run_id = record(apps.pipeline, store).invoke({"messages": [("user", "my key is KEY-12345-SECRET")]}).run_id
    store.close()
    plain = tmp_path / "plain.jsonl"
    write_otlp_json(TraceStore.open(path), [run_id], plain)
    assert "KEY-12345-SECRET" in plain.read_text()
    guarded = tmp_path / "guarded.jsonl"  # a pattern added after the run was recorded
    write_otlp_json(TraceStore.open(path, redactor=Redactor([r"KEY-\d+-SECRET"])), [run_id], guarded)
    assert "KEY-12345-SECRET" not in guarded.read_text() and "[REDACTED" in guarded.read_text()


def _otlp(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                               "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}]}]}


def _raw(span_id: str, parent: str | None, name: str, start: int, attributes: dict[str, str]) -> dict[str, Any]:
    return {"traceId": "AAECAwQFBgcICQoLDA0ODw==", "spanId": span_id, **({"parentSpanId": parent} if parent else {}),
            "name": name, "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]}


def test_unknown_spans_are_kept_and_counted_and_base64_ids_read(tmp_path: Path) -> None:
    file = tmp_path / "trace.json"
    file.write_text(json.dumps(_otlp([
        _raw("AAAAAAAAAAE=", None, "workflow", 1_000, {"openinference.span.kind": "CHAIN", "input.value": "plan a trip"}),
        _raw("AAAAAAAAAAI=", "AAAAAAAAAAE=", "planner", 2_000, {"gen_ai.operation.name": "invoke_agent",
                                                               "gen_ai.agent.name": "planner", "output.value": "go to Oslo"}),
        _raw("AAAAAAAAAAM=", "AAAAAAAAAAI=", "chat gpt-x", 2_500, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-x",
                                                                  "gen_ai.usage.input_tokens": "12"}),
        _raw("AAAAAAAAAAQ=", "AAAAAAAAAAE=", "cache lookup", 3_000, {"db.system": "redis"}),
    ])))
    store = TraceStore.open(str(tmp_path / "s.db"))
    report = import_otel(store, [file])
    assert report.unknown_spans == 1 and len(report.runs) == 1
    run = store.get_run(report.runs[0])
    assert run.id == "otel-000102030405060708090a0b0c0d0e0f" and run.task_input == {"question": "plan a trip"}
    steps = store.steps(run.id)
    assert [(s.node, s.agent) for s in steps] == [("planner", "planner"), ("cache lookup", None)]
    assert steps[0].model_calls[0].model == "gpt-x" and steps[0].output["content"] == "go to Oslo"


@pytest.mark.parametrize("content, expected", [
    ("not json at all", "not OTLP JSON (line 1"),
    ('{"data": []}', "not OTLP JSON (object 1 has no resourceSpans list)"),
    (json.dumps(_otlp([{"name": "x"}])), "span 'x' is not an OTLP span"),
])
def test_bad_files_are_one_line_errors_and_write_nothing(tmp_path: Path, content: str, expected: str) -> None:
    good = tmp_path / "a-good.json"
    good.write_text(json.dumps(_otlp([_raw("AAAAAAAAAAE=", None, "w", 1_000, {"openinference.span.kind": "CHAIN"})])))
    bad = tmp_path / "b-bad.json"
    bad.write_text(content)
    store = TraceStore.open(str(tmp_path / "s.db"))
    with pytest.raises(OtelImportError) as caught:
        import_otel(store, [tmp_path])
    assert str(caught.value).startswith(f"{bad}: {expected}")
    assert store.list_runs() == []  # the good file before it was not written either
    import subprocess
    import sys

    cli = subprocess.run([sys.executable, "-m", "counterfact.cli", "import", "otel", str(bad), "--db", str(tmp_path / "s.db")],
                         capture_output=True, text=True, check=False)
    assert cli.returncode == 1 and cli.stderr.startswith(f"error: {bad}: ") and len(cli.stderr.strip().splitlines()) == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A real OTLP/HTTP endpoint on loopback that keeps what it is sent."""
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.bodies
    server.shutdown()


def test_live_export_while_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: tuple[str, list[bytes]]) -> None:
    url, bodies = receiver
    monkeypatch.setenv("COUNTERFACT_OTLP_ENDPOINT", url)
    store = TraceStore.open(str(tmp_path / "live.db"))
    assert store.live is not None
    _, run_id = _runs_with_a_verified_replay(store)
    store.live.flush()
    names, parents, links = [], {}, []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    names.append(span.name)
                    parents[span.span_id.hex()] = span.parent_span_id.hex()
                    links += [(span.name, link.trace_id.hex()) for link in span.links]
    assert names.count("invoke_workflow graph") == 4 and "verify_intervention" in names  # 2 runs, 2 replays
    assert names.count("invoke_agent agent") == 2 and names.count("execute_tool add") == 1
    assert ("invoke_workflow graph", run_id) in links  # each replay links the run it was forked from
    assert ("verify_intervention", run_id) in links


def test_live_spans_are_built_in_a_process_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: tuple[str, list[bytes]]
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("COUNTERFACT_OTLP_ENDPOINT", url)
    built_here: list[str] = []
    build = SpanWriter.step

    def spying(self: SpanWriter, run_id: str, step: StepRecord) -> None:
        built_here.append(threading.current_thread().name)
        build(self, run_id, step)

    monkeypatch.setattr(SpanWriter, "step", spying)
    store = TraceStore.open(str(tmp_path / "live.db"))
    assert store.live is not None
    record(apps.pipeline, store).invoke({"messages": [("user", "go")]})
    assert store.live.flush()  # waits for the spans queued, then sends them
    assert built_here == []  # not one span was built in the recording process
    sent = [s.name for b in bodies for r in ExportTraceServiceRequest.FromString(b).resource_spans
            for sc in r.scope_spans for s in sc.spans]
    assert sorted(sent) == ["invoke_agent planner", "invoke_agent worker", "invoke_workflow graph"]


def test_an_unreachable_collector_loses_spans_with_a_warning_never_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("COUNTERFACT_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    store = TraceStore.open(str(tmp_path / "live.db"))
    with caplog.at_level(logging.WARNING, logger="counterfact.otel"):
        run_id = record(apps.pipeline, store).invoke({"messages": [("user", "go")]}).run_id
        assert store.live is not None
        store.live.flush(timeout_millis=20_000)
    assert len(store.steps(run_id)) == 2 and store.get_run(run_id).status != "running"
    assert any("could not be sent to the OTLP collector" in r.getMessage() for r in caplog.records)


def test_export_cli_sends_to_a_collector_and_says_clearly_when_it_cannot(
    tmp_path: Path, receiver: tuple[str, list[bytes]]
) -> None:
    import socket
    import subprocess
    import sys

    db = str(tmp_path / "s.db")
    store = TraceStore.open(db)
    run_id = record(apps.pipeline, store).invoke({"messages": [("user", "go")]}).run_id
    store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "counterfact.cli", "export", *args, "--db", db],
                              capture_output=True, text=True, check=False, timeout=120)

    url, bodies = receiver
    sent = cli(run_id[:8], "--otlp", url)
    assert sent.returncode == 0 and f"exported 1 runs as 3 spans to {url}" in sent.stdout, sent.stderr
    received = [s.name for b in bodies for r in ExportTraceServiceRequest.FromString(b).resource_spans
                for sc in r.scope_spans for s in sc.spans]
    assert sorted(received) == ["invoke_agent planner", "invoke_agent worker", "invoke_workflow graph"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    for args, message in [
        ((run_id, "--otlp", f"http://127.0.0.1:{closed}"), f"the OTLP collector at http://127.0.0.1:{closed}/v1/traces did not take"),
        ((run_id,), "give exactly one of --jsonl FILE, --otlp URL or --otlp-json FILE"),
        (("--since", "2999-01-01", "--otlp-json", str(tmp_path / "x.jsonl")), "no run to export since 2999-01-01"),
    ]:
        failed = cli(*args)
        lines = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
        assert failed.returncode == 1 and len(lines) == 1 and message in lines[0], failed.stderr
        assert "Traceback" not in failed.stderr


def test_a_steps_calls_are_exported_in_the_order_they_ran() -> None:
    from counterfact.capture import ModelCallRecord, ToolCallRecord
    from counterfact.formats._otel import call_order

    def model(content: str, calls: list[dict[str, Any]] | None = None) -> ModelCallRecord:
        return ModelCallRecord(backend="local", model="m", request=[], response={"content": content, "tool_calls": calls or []})

    lookup, add = ToolCallRecord(name="lookup"), ToolCallRecord(name="add")
    # the text protocol: two CALL lines, then the answer
    assert call_order([model('CALL lookup {"key": 1}\nCALL lookup {"key": 2}'), model("FACTS: ...")], [lookup, lookup]) == [
        ("model", 0), ("tool", 0), ("tool", 1), ("model", 1)]
    # OpenAI-style tool calls, one per model call
    assert call_order([model("", [{"name": "lookup"}]), model("", [{"function": {"name": "add"}}]), model("5")],
                      [lookup, add]) == [("model", 0), ("tool", 0), ("model", 1), ("tool", 1), ("model", 2)]
    # a tool nothing asked for goes last; a step with tools only keeps them
    assert call_order([model("x")], [add]) == [("model", 0), ("tool", 0)]
    assert call_order([], [add]) == [("tool", 0)]
