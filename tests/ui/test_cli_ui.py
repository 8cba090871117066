"""`counterfact ui` as a user starts it: a real process on a free loopback port."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from counterfact.graphs import record
from counterfact.store import TraceStore

from ..interventions import apps
from .conftest import free_port


def test_ui_serves_the_store_and_refuses_a_taken_port(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id = record(apps.pipeline, store).invoke({"messages": [("user", "go")]}).run_id
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "counterfact.cli", "ui", "--db", sqlite_path, "--port", str(port), "--token", "abc"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline() + proc.stdout.readline()
        assert f"open http://127.0.0.1:{port}/" in first, first
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as response:
                    rows = json.load(response)["rows"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert [r["id"] for r in rows] == [run_id]
        taken = subprocess.run(
            [sys.executable, "-m", "counterfact.cli", "ui", "--db", sqlite_path, "--port", str(port)],
            check=False, capture_output=True, text=True, timeout=60,
        )
        assert taken.returncode == 1
        assert taken.stderr.strip() == (
            f"error: cannot serve on 127.0.0.1:{port}: Address already in use; pick another --port or --host"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
