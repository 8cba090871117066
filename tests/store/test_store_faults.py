"""The store failing under a run: a full disk, a dropped PostgreSQL connection. The run is cut
off with one clear line, nothing half-written stays, and it resumes to the end."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from counterfact.graphs import record
from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import Step
from tests.graphs.sample_graphs import loop_graph, loop_input

from ..conftest import _truncate
from .test_durability import _assert_steps_have_checkpoints


def _finish(store: TraceStore, run_id: str) -> None:
    result = record(loop_graph(), store, workflow="loop").resume(run_id)
    assert result.status == "succeeded" and result.state and result.state["n"] == 40
    assert _assert_steps_have_checkpoints(store, run_id) == 79  # none lost, none twice
    assert [s.node for s in store.steps(run_id, payloads=False)] == ["worker", "critic"] * 39 + ["worker"]
    assert verify_run(store, run_id).ok


def test_a_full_disk_cuts_the_run_off_and_it_resumes(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    recorded = record(loop_graph(), store, workflow="loop")
    run_id = recorded.start_run(loop_input(40))
    with store.begin() as conn:  # the write connection may grow the file by a few pages only
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages + 8}")
    result = recorded.continue_run(run_id, loop_input(40))
    assert result.status == "running" and store.get_run(run_id).status == "running"
    assert result.error is not None and "\n" not in result.error
    assert result.error.startswith("the store failed in the middle of the run (database or disk is full)")
    written = _assert_steps_have_checkpoints(store, run_id)
    assert 0 < written < 79 and verify_run(store, run_id).ok  # what was written is whole
    _finish(store, run_id)  # the failed connection was replaced: no page limit any more


@pytest.mark.postgres
def test_a_dropped_postgres_connection_cuts_the_run_off_and_it_resumes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TraceStore.open(pg_url)
    _truncate(store)
    monkeypatch.setenv("CF_TEST_NODE_DELAY", "0.03")
    recorded = record(loop_graph(), store, workflow="loop")
    run_id = recorded.start_run(loop_input(40))
    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=recorded.continue_run(run_id, loop_input(40))))
    runner.start()
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        deadline = time.monotonic() + 60
        while conn.execute(select(func.count()).select_from(Step)).scalar_one() < 6:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalar_one()
    admin.dispose()
    runner.join(timeout=120)
    assert killed >= 1
    result = outcome["result"]
    assert result.status == "running" and "\n" not in (result.error or "x\n")  # type: ignore[attr-defined]
    assert result.error.startswith("the store failed in the middle of the run")  # type: ignore[attr-defined]
    assert _assert_steps_have_checkpoints(store, run_id) < 79
    monkeypatch.setenv("CF_TEST_NODE_DELAY", "0")
    _finish(store, run_id)
