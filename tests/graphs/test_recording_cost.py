"""The recording hot path's shortcuts keep the store's guarantees: a blind (write-only)
transaction is all or nothing on PostgreSQL's pipeline too, reads work again after it, a
step costs two transactions, and message chunks already stored are not sent again."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from counterfact.graphs import record
from counterfact.store import RunRecord, TraceStore
from counterfact.store._blobs import MANIFEST_CHUNK
from counterfact.store.schema import Blob, Step
from tests.graphs.sample_graphs import loop_graph, loop_input


def _step_row(run_id: str, index: int) -> dict[str, Any]:
    from counterfact.store import utcnow

    now = utcnow()
    return {
        "run_id": run_id, "index": index, "node": "n", "agent": "n", "invocation": index,
        "kind": "agent", "input_digest": None, "output_digest": None, "delta_digest": None,
        "checkpoint_before": None, "checkpoint_after": None, "task_id": None,
        "started_at": now, "ended_at": now, "error": None, "digest": "0" * 64,
    }


def _run(store: TraceStore) -> str:
    return store.create_run(RunRecord(id="r1", workflow="w", status="running")).id


def _steps(store: TraceStore, run_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).where(Step.run_id == run_id)).scalar_one()


def test_blind_transaction_that_raises_keeps_nothing(store: TraceStore) -> None:
    run_id = _run(store)
    with pytest.raises(RuntimeError), store.begin(blind=True) as conn:
        conn.execute(store.sql.insert_step, _step_row(run_id, 0))
        raise RuntimeError("the recorder failed half way")
    assert _steps(store, run_id) == 0
    with store.begin(blind=True) as conn:  # the connection is usable again
        conn.execute(store.sql.insert_step, _step_row(run_id, 0))
    assert _steps(store, run_id) == 1


def test_blind_transaction_with_a_failing_statement_keeps_nothing(store: TraceStore) -> None:
    run_id = _run(store)
    with store.begin(blind=True) as conn:
        conn.execute(store.sql.insert_step, _step_row(run_id, 0))
    with pytest.raises(IntegrityError), store.begin(blind=True) as conn:
        conn.execute(store.sql.insert_step, _step_row(run_id, 1))
        conn.execute(store.sql.insert_step, _step_row(run_id, 0))  # (run_id, index) taken
    assert _steps(store, run_id) == 1
    with store.begin(blind=True) as conn:
        conn.execute(store.sql.insert_step, _step_row(run_id, 1))
    assert _steps(store, run_id) == 2


def test_reads_after_blind_transactions(store: TraceStore) -> None:
    """A transaction that reads, on the write connection, after pipelined ones."""
    run_id = _run(store)
    with store.begin(blind=True) as conn:
        conn.execute(store.sql.insert_step, _step_row(run_id, 0))
    with store.begin() as conn:
        assert conn.execute(select(func.count()).where(Step.run_id == run_id)).scalar_one() == 1
    store.finish_run(run_id, "succeeded")
    assert store.get_run(run_id).step_count == 1


def test_a_step_costs_two_transactions_of_few_statements(store: TraceStore) -> None:
    """Recording a step writes its checkpoint writes, blobs and row in one transaction and
    the next checkpoint in another, without reading anything back."""
    recorded = record(loop_graph(), store)
    recorded.invoke(loop_input(2))  # warm: the first run also creates the run's blobs
    statements: list[str] = []
    commits: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(store.engine, "before_cursor_execute", count)
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    try:
        result = recorded.invoke(loop_input(10))  # 19 steps
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    steps = len(store.steps(result.run_id, payloads=False))
    assert steps == 19
    assert statements.count("SELECT") <= 8  # to start and to finish the run, not per step
    # per step: checkpoint writes, blobs, step row, model call, tool call, checkpoint
    assert len(statements) <= 6 * steps + 10
    assert len(commits) <= 2 * steps + 6  # and the run's own: create, input, finish


def test_stored_message_chunks_are_not_sent_again(store: TraceStore) -> None:
    history: list[Any] = [HumanMessage("go", id="h")]
    history += [AIMessage(f"turn {i}", id=f"a{i}") for i in range(2 * MANIFEST_CHUNK + 3)]
    first = store.blobs.encode_messages(history)
    with store.begin(blind=True) as conn:
        store.blobs.put(conn, first)
    longer = [*history, AIMessage("one more", id="last")]
    rows = store.blobs.encode_messages(longer)
    # only the last, partial chunk (its messages and its manifest) is encoded for sending
    assert len(rows) == len(longer) - 2 * MANIFEST_CHUNK + 1
    with store.begin(blind=True) as conn:
        store.blobs.put(conn, rows)
    assert store.get_value(rows[-1][0]) == store.get_value(store.blobs.encode_messages(longer)[-1][0])
    assert [m["content"] for m in store.get_value(rows[-1][0])] == [m.content for m in longer]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Blob)).scalar_one() == len(longer) + 4  # and 4 manifests
