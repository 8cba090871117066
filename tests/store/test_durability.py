"""Crashes and concurrent writers: no step without its checkpoint writes, no step lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from counterfact.graphs import record
from counterfact.store import TraceStore
from counterfact.store.schema import Checkpoint, CheckpointWrite, Run, Step
from tests.graphs.sample_graphs import loop_graph

ROOT = Path(__file__).resolve().parents[2]


def _worker(db: str, runs: int, limit: int, prefix: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.graphs.record_worker", db, str(runs), str(limit), prefix],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_steps_have_checkpoints(store: TraceStore, run_id: str) -> int:
    """Every recorded step's checkpoint exists, and so do the writes LangGraph resumes from."""
    steps = store.steps(run_id, payloads=False)
    with store.engine.connect() as conn:
        checkpoints = set(
            conn.execute(select(Checkpoint.checkpoint_id).where(Checkpoint.thread_id == run_id)).scalars()
        )
        writes = set(
            conn.execute(
                select(CheckpointWrite.checkpoint_id, CheckpointWrite.task_id).where(
                    CheckpointWrite.thread_id == run_id
                )
            ).tuples()
        )
    for step in steps:
        assert step.checkpoint_before in checkpoints, f"step {step.index} lost its checkpoint"
        assert (step.checkpoint_before, step.task_id) in writes, f"step {step.index} lost its writes"
    assert [s.index for s in steps] == list(range(len(steps)))
    return len(steps)


def test_killed_process_leaves_a_consistent_resumable_store(sqlite_path: str) -> None:
    proc = _worker(sqlite_path, 1, 40, "crash", env={"CF_TEST_NODE_DELAY": "0.05"})
    store = TraceStore.open(sqlite_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it mid-run, once some steps are in
        with store.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(Step)).scalar_one() >= 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run_id = "crash0000"
    assert store.get_run(run_id).status == "running"
    recorded = _assert_steps_have_checkpoints(store, run_id)
    assert 6 <= recorded < 79

    result = record(loop_graph(), store, workflow="loop").resume(run_id)
    assert result.status == "succeeded" and result.state and result.state["n"] == 40
    total = _assert_steps_have_checkpoints(store, run_id)
    assert total == 79  # 40 worker + 39 critic steps, none twice, none lost
    nodes = [s.node for s in store.steps(run_id, payloads=False)]
    assert nodes == ["worker", "critic"] * 39 + ["worker"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_writers_lose_no_step(backend: str, request: pytest.FixtureRequest, sqlite_path: str) -> None:
    db = sqlite_path if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = TraceStore.open(db)  # migrate once up front; workers also open it
    if backend == "postgres":
        with store.begin() as conn:
            for table in (Step, Run):
                conn.execute(table.__table__.delete())
    workers, runs, limit = 3, 4, 6
    # slow nodes: each writer records for a second or more, so the writers overlap however
    # long each takes to start
    procs = [_worker(db, runs, limit, f"w{w}-", env={"CF_TEST_NODE_DELAY": "0.05"}) for w in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    all_runs = store.list_runs(limit=None)
    assert len(all_runs) == workers * runs
    for run in all_runs:
        assert run.status == "succeeded"
        assert _assert_steps_have_checkpoints(store, run.id) == 2 * limit - 1
    windows = [
        (min(r.created_at for r in mine), max(r.ended_at for r in mine if r.ended_at))
        for w in range(workers)
        if (mine := [r for r in all_runs if r.id.startswith(f"w{w}-")])
    ]
    assert len(windows) == workers
    assert max(start for start, _ in windows) < min(end for _, end in windows), windows  # all writing at once
