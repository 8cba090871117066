"""A real OTLP/HTTP trace receiver on 127.0.0.1, in a process of its own, as a collector is.

It decodes every `ExportTraceServiceRequest` (POST /v1/traces, protobuf, gzip or not) and
counts spans, per trace and in all, answering 200 with an empty `ExportTraceServiceResponse`.
The benchmarks read the counts over GET /counts and clear them with POST /reset. In its own
process, its decoding does not take the GIL from the recorder whose export is measured (in a
thread of the benchmark, it did: the collector's work was charged to the exporter).

    python benchmarks/otlp_receiver.py    # prints its port, serves until stdin closes
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Received:
    """What the receiver got since its last reset."""

    spans: int = 0
    requests: int = 0
    bytes: int = 0
    per_trace: Counter[int] = field(default_factory=Counter)  # spans by trace id
    roots: Counter[int] = field(default_factory=Counter)  # root spans by trace id
    bad: list[str] = field(default_factory=list)  # requests it could not take

    def take(self, trace_id: int) -> tuple[int, int]:
        """(spans, root spans) received for one trace, forgotten afterwards."""
        return self.per_trace.pop(trace_id, 0), self.roots.pop(trace_id, 0)


class OtlpReceiver:
    """The receiver's process, started on entering and stopped on leaving."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            raise SystemExit(f"the OTLP receiver did not start (it printed {port!r})")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)

    def received(self) -> Received:
        with urllib.request.urlopen(f"{self.url}/counts", timeout=10) as response:
            data = json.load(response)
        return Received(spans=data["spans"], requests=data["requests"], bytes=data["bytes"],
                        per_trace=Counter({int(k): v for k, v in data["per_trace"].items()}),
                        roots=Counter({int(k): v for k, v in data["roots"].items()}), bad=data["bad"])

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/reset", data=b"", method="POST"), timeout=10).close()


def serve() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    lock = threading.Lock()
    now = [Received()]  # since the last reset
    reply = ExportTraceServiceResponse().SerializeToString()

    def count(request: Any, size: int) -> None:
        per_trace: Counter[int] = Counter()
        roots: Counter[int] = Counter()
        n = 0
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    trace = int.from_bytes(span.trace_id, "big")
                    per_trace[trace] += 1
                    roots[trace] += not span.parent_span_id
                    n += 1
        with lock:
            got = now[0]
            got.requests += 1
            got.bytes += size
            got.spans += n
            got.per_trace.update(per_trace)
            got.roots.update(+roots)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/reset":
                with lock:
                    now[0] = Received()
                self._answer(200, b"", "text/plain")
                return
            if not self.path.endswith("/v1/traces"):
                now[0].bad.append(f"POST {self.path}")
                self._answer(404, b"")
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except Exception as exc:  # noqa: BLE001 - reported, answered 400
                now[0].bad.append(f"undecodable request: {exc}")
                self._answer(400, b"")
                return
            count(request, len(body))
            self._answer(200, reply)

        def do_GET(self) -> None:
            with lock:
                got = now[0]
                data = {"spans": got.spans, "requests": got.requests, "bytes": got.bytes, "bad": got.bad,
                        "per_trace": got.per_trace, "roots": got.roots}
            self._answer(200, json.dumps(data).encode(), "application/json")

        def _answer(self, code: int, payload: bytes, kind: str = "application/x-protobuf") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or exits)
    server.shutdown()


if __name__ == "__main__":
    serve()
