"""Live OpenTelemetry export while recording, from a process of its own.

Recording only hands the records it committed to a pipe; a child process builds their spans
(`SpanWriter`) and the SDK's batch processor there encodes and sends them. In a thread of the
recording process, span building and encoding took the GIL from the recorder for about as long
as a sixth of a step, however the work was queued; in a child, the recorder pays for pickling
a record (tens of microseconds) and nothing else. The child's warnings (a collector that cannot
be reached) come back to this process's `counterfact.otel` logger.

    python -m counterfact.formats._otel_live ENDPOINT PROJECT   # the child: records on stdin
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

from counterfact.formats._otel import (
    ENDPOINT_ENV,
    PROJECT,
    STANDARD_ENDPOINT_ENV,
    SpanWriter,
    _Checked,
    intervention_of,
    log,
    traces_url,
)
from counterfact.store import RunRecord, StepRecord, TraceStore, VerdictRecord

Redact = Callable[[Any], Any]
_FLUSHED, _LOG = "flushed", "log"  # the child's replies, one line each
# The child yields the CPU to the app it watches: where both want a core, recording goes first
# and spans wait in the pipe (none is lost; `flush` waits for them).
CHILD_NICENESS = 10


class LiveExport:
    """A store listener (see `counterfact.store.StoreListener`) that sends what stores commit
    to the span-building child, which it starts on creation and stops on `close`."""

    def __init__(self, endpoint: str, project: str = PROJECT) -> None:
        self.endpoint = traces_url(endpoint)
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, self.endpoint, project],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._redactors: dict[int, Redact] = {}  # sent to the child already, by id (kept alive here)
        self._flushes: dict[int, tuple[threading.Event, list[bool]]] = {}
        self._tokens = itertools.count()
        self._broken = False
        self._sender = threading.Thread(target=self._send, name="counterfact-otel-send", daemon=True)
        self._reader = threading.Thread(target=self._read, name="counterfact-otel-replies", daemon=True)
        self._sender.start()
        self._reader.start()

    # -- what the store tells, on its recording threads: queue it, nothing more ----------------

    def step(self, redact: Redact, run_id: str, step: StepRecord) -> None:
        self._outbox.put(("step", redact, run_id, step))

    def run_finished(self, store: TraceStore, run: RunRecord) -> None:
        intervention = intervention_of(store, run)  # read now: the store may be closed by the time it is built
        self._outbox.put(("run", store.redact, run, intervention))

    def verification(self, redact: Redact, verdict: VerdictRecord, replays: Sequence[RunRecord],
                     fork_step: int | None) -> None:
        self._outbox.put(("verification", redact, verdict, list(replays), fork_step))

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until the child has built the spans queued so far and sent every span built."""
        token = next(self._tokens)
        done, result = threading.Event(), [False]
        self._flushes[token] = (done, result)
        self._outbox.put(("flush", None, token, timeout_millis))
        finished = done.wait(timeout_millis / 1000 + 5)
        self._flushes.pop(token, None)
        return finished and result[0]

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=30)
        try:
            self._child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._child.kill()
        self._reader.join(timeout=5)

    # -- the pipe to the child and back ----------------------------------------------------------

    def _send(self) -> None:
        pipe = self._child.stdin
        assert pipe is not None
        while (message := self._outbox.get()) is not None:
            if self._broken:
                continue
            kind, redact, *rest = message
            try:
                if redact is not None and id(redact) not in self._redactors:
                    self._redactors[id(redact)] = redact
                    pickle.dump(("redactor", id(redact), redact), pipe)
                pickle.dump((kind, id(redact), *rest), pipe)
                pipe.flush()
            except (OSError, pickle.PicklingError) as exc:
                self._broken = True
                log.warning("counterfact: live export stopped (%s); the runs are in the store "
                            "(export them later with `counterfact export --otlp`)", exc)
        try:
            pipe.close()
        except OSError:
            pass

    def _read(self) -> None:
        assert self._child.stdout is not None
        for line in self._child.stdout:
            kind, _, rest = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
            if kind == _FLUSHED:
                token, _, ok = rest.partition(" ")
                if (waiting := self._flushes.get(int(token))) is not None:
                    waiting[1][0] = ok == "1"
                    waiting[0].set()
            elif kind == _LOG:
                level, _, text = rest.partition(" ")
                log.log(int(level), "%s", text)


_live: dict[str, LiveExport] = {}
_live_lock = threading.Lock()


def live_export() -> LiveExport | None:
    """The process's live exporter when `COUNTERFACT_OTLP_ENDPOINT` (or the standard
    `OTEL_EXPORTER_OTLP_ENDPOINT`) is set; None otherwise, and nothing of OpenTelemetry is
    imported."""
    endpoint = os.environ.get(ENDPOINT_ENV) or os.environ.get(STANDARD_ENDPOINT_ENV)
    if not endpoint:
        return None
    with _live_lock:
        if endpoint not in _live:
            _live[endpoint] = LiveExport(endpoint)
            import atexit

            atexit.register(_live[endpoint].close)
        return _live[endpoint]


# -- the child -------------------------------------------------------------------------------------


class _Replies(logging.Handler):
    """The child's `counterfact.otel` log records, as lines for the parent to log again."""

    def __init__(self, out: IO[bytes], lock: threading.Lock) -> None:
        super().__init__(logging.INFO)
        self._out, self._writing = out, lock  # not `self.lock`: Handler holds that one while it emits

    def emit(self, record: logging.LogRecord) -> None:
        reply(self._out, self._writing, f"{_LOG} {record.levelno} {record.getMessage()}".replace("\n", " "))


def reply(out: IO[bytes], lock: threading.Lock, line: str) -> None:
    with lock:
        out.write(f"{line}\n".encode())
        out.flush()


def serve(endpoint: str, project: str, source: IO[bytes], out: IO[bytes]) -> None:
    """Build and send spans from the records on `source` until it closes."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    lock = threading.Lock()
    log.addHandler(_Replies(out, lock))
    log.propagate = False
    processor = BatchSpanProcessor(_Checked(OTLPSpanExporter(endpoint=endpoint, timeout=5), warn=True))
    writer = SpanWriter(processor, lambda value: value, project)
    redactors: dict[int, Redact] = {}
    while True:
        try:
            kind, key, *rest = pickle.load(source)
        except EOFError:
            break
        if kind == "redactor":
            redactors[key] = rest[0]
            continue
        if kind == "flush":
            token, timeout_millis = rest
            reply(out, lock, f"{_FLUSHED} {token} {int(bool(processor.force_flush(timeout_millis)))}")
            continue
        try:
            redacting = writer.redacting(redactors[key])
            if kind == "step":
                redacting.step(*rest)  # run id, step
            elif kind == "run":
                redacting.run(rest[0], None, rest[1])  # run, intervention
            else:
                redacting.verification(*rest)  # verdict, replays, fork step
        except Exception as exc:  # noqa: BLE001 - a span that cannot be made never stops the others
            log.warning("counterfact: a span could not be made (%s); recording goes on", exc)
    processor.shutdown()


if __name__ == "__main__":
    os.nice(CHILD_NICENESS)
    serve(sys.argv[1], sys.argv[2], sys.stdin.buffer, sys.stdout.buffer)
