"""A real Ray cluster on loopback, started once for the cluster tests (`ray start --head`),
and the delayed model server its workers call."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))
# Read by Ray when it is imported: the cluster listens on loopback only, and the drivers of
# these tests send the token that `ray start` writes (token authentication is on in 2.60).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a one-node Ray cluster bound to 127.0.0.1, stopped after the session."""
    if RAY is None:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: scripts/setup.sh installs the ray extra")
        pytest.skip("Ray is not installed (pip install 'counterfact[ray]')")
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    subprocess.run(
        [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
         "--num-cpus=4", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
