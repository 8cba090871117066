"""A missing prerequisite (PostgreSQL, Who&When logs, Ray, Phoenix) skips a test with its reason
on a user's machine, and fails it under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
from tests.conftest import require

def test_needs_something():
    require(False, "the thing is not at /nowhere")
"""


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 failed")])
def test_a_missing_prerequisite_skips_locally_and_fails_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    probe = Path("tests") / f"test_probe_{os.getpid()}_{ci or 'local'}.py"
    probe.write_text(PROBE)
    try:
        env = {**os.environ, "CI": ci}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
            capture_output=True, text=True, env=env, timeout=120,
        )
    finally:
        probe.unlink()
    assert outcome in result.stdout, result.stdout
    assert "the thing is not at /nowhere" in result.stdout
