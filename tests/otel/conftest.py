"""A real Arize Phoenix server on loopback, for the tests of counterfact's OpenTelemetry export.

Phoenix lives in a virtual environment of its own, .venv-phoenix (scripts/setup.sh installs it;
its dependency tree must not steer .venv's), and runs as a subprocess: the `phoenix` fixture
starts `phoenix serve` on free ports of 127.0.0.1 with a fresh SQLite working directory,
offline and without telemetry, and stops it when the module's tests are done. Tests that use it
are marked `phoenix` (by the hook below) and skip, saying why, where Phoenix is not installed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from ..conftest import require

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PHOENIX = REPO / ".venv-phoenix" / "bin" / "phoenix"
START_TIMEOUT = 120.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the `phoenix` fixture is marked `phoenix`, so that
    `-m 'not phoenix'` leaves out the tests that start a Phoenix server (and only those)."""
    for item in items:
        if "phoenix" in getattr(item, "fixturenames", ()):
            item.add_marker("phoenix")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Phoenix:
    """A running Phoenix: `url` is its HTTP root (UI and REST API under /v1), `otlp_url` the
    OTLP/HTTP traces endpoint to give OTLPSpanExporter(endpoint=...), `log` its stdout+stderr."""

    url: str
    otlp_url: str
    log: Path

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if v is not None}
        r = httpx.get(self.url + path, params=params, timeout=30.0, trust_env=False)
        r.raise_for_status()
        return r.json()

    def _paged(self, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(out) < limit:
            page = self._get(path, limit=min(limit - len(out), 1000), cursor=cursor, **params)
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return out

    def projects(self) -> list[dict[str, Any]]:
        """The projects: each {"id", "name", "description", ...}."""
        return self._paged("/v1/projects", 10_000)

    def spans(self, project: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` spans of the project named `project`, oldest first, as Phoenix's REST API
        gives them: {"id", "name", "context": {"trace_id", "span_id"}, "span_kind", "parent_id",
        "start_time", "end_time", "status_code", "status_message", "attributes", "events"}.
        An unknown project (one that has received no span yet) gives []."""
        try:
            path = f"/v1/projects/{quote(project, safe='')}/spans"
            return self._paged(path, limit, sort="start_time", order="asc")
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return []
            raise

    def wait_for_spans(
        self, project: str, count: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The project's spans once there are at least `count` (Phoenix ingests asynchronously:
        an exporter's flush returns before the spans are queryable)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def _phoenix_env(port: int, grpc_port: int, workdir: Path) -> dict[str, str]:
    # Nothing of the caller's Phoenix or OpenTelemetry settings (a database URL, an exporter
    # endpoint Phoenix would trace itself to) leaks into the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        # Offline and quiet: no web fonts, pixels or sandbox download; no telemetry; no agent
        # assistant, its shell or MCP endpoint (nothing the tests use).
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
        PHOENIX_ENABLE_MCP_SERVER="false",
        PHOENIX_AGENTS_DISABLE_BASH="true",
        PYTHONUNBUFFERED="1",
    )
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        # Its own session (start_new_session): the group is Phoenix and whatever it started.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """A Phoenix server of its own for the module, on free ports of 127.0.0.1."""
    exe = Path(os.environ.get("COUNTERFACT_PHOENIX") or DEFAULT_PHOENIX)
    require(
        exe.is_file() and os.access(exe, os.X_OK),
        f"Phoenix is not installed ({exe} is missing): scripts/setup.sh installs it into .venv-phoenix",
    )
    workdir = tmp_path_factory.mktemp("phoenix")
    log = workdir / "phoenix.log"
    port, grpc_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve"],
            env=_phoenix_env(port, grpc_port, workdir),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Phoenix exited with {proc.returncode} on start; log:\n{_tail(log)}")
            try:
                answer = httpx.get(url + "/v1/projects", timeout=2.0, trust_env=False)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Phoenix did not answer on {url} in {START_TIMEOUT:.0f} s; log:\n{_tail(log)}"
                )
            time.sleep(0.25)
        yield Phoenix(url=url, otlp_url=url + "/v1/traces", log=log)
    finally:
        _stop(proc)
