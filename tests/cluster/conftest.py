"""A real Ray cluster on loopback, started once for the cluster tests (`ray start --head`),
and the delayed model server its workers call."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ..conftest import require
from ..graphs.scripted import arithmetic_brain
from .delayed import DelayedModel, delayed_server

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))
# Read by Ray when it is imported: the cluster listens on loopback only, and the drivers of
# these tests send the cluster's token (token authentication is on in 2.60).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a one-node Ray cluster bound to 127.0.0.1, stopped after the session."""
    require(RAY is not None, "Ray is not installed: scripts/setup.sh installs the ray extra")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")  # its own: `ray stop` would stop every Ray here
    # this cluster's own token: a new machine has none (`ray start` refuses to start without
    # one when token authentication is asked for), and a user's ~/.ray is left alone
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)  # read by `ray start`, drivers and CLIs run here
    env = {**os.environ, **RAY_ENV}
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
         "--num-cpus=4", "--disable-usage-stats", f"--temp-dir={temp}"],
        check=True, env=env, capture_output=True, timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(str(temp))


def _stop(temp: str) -> None:
    """Stop this cluster's processes (each names its temp dir), and their workers."""
    ours = [p for p in psutil.process_iter(["cmdline"]) if any(temp in part for part in p.info["cmdline"] or [])]
    family = {q for p in ours for q in [p, *_children(p)]}
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(family, timeout=15)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


@pytest.fixture(scope="session")
def brain_server() -> Iterator[DelayedModel]:
    """One delayed model server for the session, reached as `openai:brain` (a process resolves
    a model spec once, so the URL must not change): 0.3 s per call. Tests choose its brain."""
    with delayed_server(arithmetic_brain, 0.3) as (url, model):
        before = os.environ.get("OPENAI_BASE_URL")
        os.environ["OPENAI_BASE_URL"] = url
        yield model
        os.environ.pop("OPENAI_BASE_URL", None)
        if before is not None:
            os.environ["OPENAI_BASE_URL"] = before


@pytest.fixture
def brain(brain_server: DelayedModel, request: pytest.FixtureRequest) -> DelayedModel:
    """The server with the brain the test module names in `BRAIN`, its counters at zero."""
    brain_server.use(request.module.BRAIN)
    return brain_server
