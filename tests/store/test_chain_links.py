"""Each link of the hash chain: a field altered in the database breaks verification, and says where.

A run of three steps with model and tool calls is written to a SQLite file; every column the
chain covers (of a step, a model call, a tool call, the run's anchor) is then changed by SQL,
and the report must name the step and the problem, word for word. Columns the chain leaves out
(a step's checkpoint_after, a call's row id) and calls recorded before the placement columns
existed must still verify; redaction removes exactly the payloads that hold the text.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from counterfact.capture import (
    ModelCallRecord,
    ToolCallRecord,
    canonical_json,
    sha256_hex,
)
from counterfact.store import (
    ChainReport,
    RunRecord,
    StepRecord,
    StoreError,
    TraceStore,
    redact_run_text,
    verify_run,
)
from counterfact.store._audit import redact_blobs
from counterfact.store.schema import Blob

BROKEN = "step content does not match its chain link (edited, or moved)"
T0 = datetime(2026, 1, 2, 3, 4, 5, 600000)
T1 = datetime(2026, 1, 2, 3, 4, 6, 700000)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store migrated once; each test gets a copy of its file (migrating takes a second)."""
    path = tmp_path_factory.mktemp("chain-links") / "empty.db"
    TraceStore.open(str(path)).close()
    return path


@pytest.fixture
def store(migrated: Path, sqlite_path: str) -> Iterator[TraceStore]:
    shutil.copyfile(migrated, sqlite_path)
    s = TraceStore.open(sqlite_path)
    yield s
    s.close()


def _model(n: int, **extra: Any) -> ModelCallRecord:
    return ModelCallRecord(
        backend="scripted", model=f"model-{n}", params={"seed": n}, request=[{"role": "user", "content": f"ask {n}"}],
        response={"role": "assistant", "content": f"answer {n}"}, finish_reason="stop", prompt_tokens=5 + n,
        completion_tokens=2 + n, latency_ms=1.5 + n, **extra,
    )


def _steps() -> list[StepRecord]:
    """Three steps; step 1 holds every optional field and two calls of each kind."""
    return [
        StepRecord(node="plan", kind="plan", input=[{"role": "user", "content": "task"}],
                   output={"plan": "p0"}, delta={"n": 0}, started_at=T0, ended_at=T1),
        StepRecord(
            node="work", agent="team/worker", invocation=1, kind="agent",
            input=[{"role": "user", "content": "task"}, {"role": "assistant", "content": "step one"}],
            output={"content": "o1"}, delta={"n": 1}, checkpoint_before="cp-1", checkpoint_after="cp-2",
            task_id="task-1", started_at=T0, ended_at=T1, error="it failed once",
            model_calls=[_model(1, offset_ms=0.5, agent="team/worker", activations=b"activations-1"), _model(2)],
            tool_calls=[
                ToolCallRecord(name="lookup", arguments={"q": "a"}, result="r-a", latency_ms=3.0),
                ToolCallRecord(name="transfer_to_b", arguments={"q": "b"}, result="r-b", error="late",
                               latency_ms=4.0, offset_ms=2.5, agent="team/worker", handoff="b"),
            ],
        ),
        StepRecord(node="end", kind="router", output={"goto": "end"}, delta={"n": 2}, started_at=T0, ended_at=T1),
    ]


def _write(store: TraceStore, run_id: str = "r1", status: str = "succeeded",
           steps: list[StepRecord] | None = None) -> str:
    store.write_run(RunRecord(id=run_id, workflow="w", status=status), _steps() if steps is None else steps)
    return run_id


def _exec(store: TraceStore, sql: str, **params: object) -> None:
    with store.begin() as conn:
        conn.execute(text(sql), params)


def _one(store: TraceStore, sql: str, **params: object) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _step_column(store: TraceStore, column: str, index: int, run_id: str = "r1") -> Any:
    return _one(store, f'SELECT {column} FROM steps WHERE run_id = :r AND "index" = :i', r=run_id, i=index)


def _bad(at: int, problem: str, steps: int = 3, run_id: str = "r1") -> ChainReport:
    return ChainReport(run_id=run_id, steps=steps, ok=False, first_bad_step=at, problem=problem)


def _ok(steps: int = 3, run_id: str = "r1", redacted: int = 0) -> ChainReport:
    return ChainReport(run_id=run_id, steps=steps, ok=True, redacted_blobs=redacted)


def _set_blob(store: TraceStore, digest: str, data: bytes | None) -> None:
    with store.begin() as conn:
        conn.execute(Blob.__table__.update().where(Blob.digest == digest).values(data=data))


def _blob(store: TraceStore, digest: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(
            select(Blob.data, Blob.redacted, Blob.redaction_note).where(Blob.digest == digest)
        ).one()


def _manifest_messages(store: TraceStore, digest: str) -> list[str]:
    return json.loads(_blob(store, digest).data)["messages"]


# -- the untouched run, and the link's exact format ------------------------------------------


def test_untouched_run_verifies_with_an_exact_report(store: TraceStore) -> None:
    assert verify_run(store, _write(store)) == _ok()
    _write(store, "abcdef123")
    assert verify_run(store, "abcdef") == _ok(run_id="abcdef123")  # by a unique prefix of its id


def test_links_are_sha256_of_previous_colon_content_digest(store: TraceStore) -> None:
    """Step 0 and step 2 (no calls) hash exactly the documented fields, chained from 64 zeros."""
    _write(store)
    content = {
        "index": 0, "node": "plan", "agent": None, "invocation": 0, "kind": "plan",
        "input_digest": _step_column(store, "input_digest", 0), "output_digest": _step_column(store, "output_digest", 0),
        "delta_digest": _step_column(store, "delta_digest", 0), "checkpoint_before": None, "task_id": None,
        "started_at": "2026-01-02T03:04:05.600000", "ended_at": "2026-01-02T03:04:06.700000", "error": None,
        "model_calls": [], "tool_calls": [],
    }
    link0 = sha256_hex(f"{'0' * 64}:{sha256_hex(canonical_json(content))}".encode())
    assert _step_column(store, "digest", 0) == link0
    last = {**content, "index": 2, "node": "end", "kind": "router",
            "input_digest": None, "output_digest": _step_column(store, "output_digest", 2),
            "delta_digest": _step_column(store, "delta_digest", 2)}
    link2 = sha256_hex(f"{_step_column(store, 'digest', 1)}:{sha256_hex(canonical_json(last))}".encode())
    assert _step_column(store, "digest", 2) == link2 == _one(store, "SELECT head_digest FROM runs")


# -- every chained column of a step, a model call and a tool call ----------------------------

STEP_EDITS = {
    "node": "'forged'", "agent": "NULL", "invocation": "7", "kind": "'tool'",
    "input_digest": "output_digest", "output_digest": "delta_digest", "delta_digest": "output_digest",
    "checkpoint_before": "'cp-0'", "task_id": "NULL", "started_at": "'2026-01-02 03:04:05.600001'",
    "ended_at": "'2026-01-02 03:04:06.700001'", "error": "NULL", "digest": "'" + "0" * 64 + "'",
}


@pytest.mark.parametrize("column", list(STEP_EDITS))
def test_each_chained_step_column_breaks_its_link(store: TraceStore, column: str) -> None:
    _write(store)
    _exec(store, f'UPDATE steps SET {column} = {STEP_EDITS[column]} WHERE "index" = 1')
    assert verify_run(store, "r1") == _bad(1, BROKEN)


@pytest.mark.parametrize("column", ["node", "agent", "task_id", "error", "checkpoint_before"])
def test_a_column_set_where_it_was_empty_breaks_the_link(store: TraceStore, column: str) -> None:
    _write(store)
    _exec(store, f"UPDATE steps SET {column} = 'x' WHERE \"index\" = 2")
    assert verify_run(store, "r1") == _bad(2, BROKEN)


MODEL_EDITS = {
    "seq": "seq + 5", "backend": "'openai'", "model": "'other'", "params": "'{\"seed\": 9}'",
    "request_digest": "response_digest", "response_digest": "request_digest", "activations_digest": "NULL",
    "finish_reason": "'length'", "prompt_tokens": "prompt_tokens + 1", "completion_tokens": "0",
    "latency_ms": "latency_ms + 0.25", "offset_ms": "1.5", "agent": "'team/other'",
}


@pytest.mark.parametrize("column", list(MODEL_EDITS))
def test_each_chained_model_call_column_breaks_its_steps_link(store: TraceStore, column: str) -> None:
    _write(store)
    _exec(store, f"UPDATE model_calls SET {column} = {MODEL_EDITS[column]} WHERE model = 'model-1'")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


TOOL_EDITS = {
    "seq": "seq + 5", "name": "'other'", "arguments_digest": "result_digest", "result_digest": "arguments_digest",
    "error": "'new error'", "latency_ms": "latency_ms + 1", "offset_ms": "NULL", "agent": "NULL", "handoff": "'c'",
}


@pytest.mark.parametrize("column", list(TOOL_EDITS))
def test_each_chained_tool_call_column_breaks_its_steps_link(store: TraceStore, column: str) -> None:
    _write(store)
    _exec(store, f"UPDATE tool_calls SET {column} = {TOOL_EDITS[column]} WHERE name = 'transfer_to_b'")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


def test_swapped_call_order_breaks_the_link(store: TraceStore) -> None:
    _write(store)
    _exec(store, "UPDATE tool_calls SET seq = 1 - seq")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


def test_a_call_moved_to_another_step_breaks_the_first_of_them(store: TraceStore) -> None:
    _write(store)
    _exec(store, "UPDATE model_calls SET step_id = (SELECT id FROM steps WHERE \"index\" = 2) WHERE model = 'model-2'")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


def test_a_deleted_call_breaks_its_steps_link(store: TraceStore) -> None:
    _write(store)
    _exec(store, "DELETE FROM tool_calls WHERE name = 'lookup'")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


def test_columns_outside_the_chain_can_change(store: TraceStore) -> None:
    """checkpoint_after, call row ids and the run's own description are not chained."""
    _write(store)
    _exec(store, "UPDATE steps SET checkpoint_after = 'elsewhere'")
    _exec(store, "UPDATE model_calls SET id = id + 100")
    _exec(store, "UPDATE tool_calls SET id = id + 100")
    _exec(store, "UPDATE runs SET workflow = 'renamed', labels = '{\"x\": 1}'")
    assert verify_run(store, "r1") == _ok()


def test_calls_without_placement_columns_still_verify(store: TraceStore) -> None:
    """Step 1's second model call and first tool call have no offset, agent or handoff (NULL, as
    before revision 0006): the run verifies; setting one where it was NULL is found."""
    _write(store)
    assert _one(store, "SELECT count(*) FROM model_calls WHERE offset_ms IS NULL AND agent IS NULL") == 1
    assert verify_run(store, "r1") == _ok()
    _exec(store, "UPDATE model_calls SET offset_ms = 0 WHERE model = 'model-2'")
    assert verify_run(store, "r1") == _bad(1, BROKEN)


# -- the order of the steps and the run's anchor ---------------------------------------------


def test_a_deleted_middle_step_is_named_with_the_indices(store: TraceStore) -> None:
    _write(store)
    _exec(store, 'DELETE FROM steps WHERE "index" = 1')
    assert verify_run(store, "r1") == _bad(
        1, "step index 2 found where 1 was expected (a step was deleted or reordered)", steps=2)


def test_a_deleted_first_step_is_named_with_the_indices(store: TraceStore) -> None:
    _write(store)
    _exec(store, 'DELETE FROM steps WHERE "index" = 0')
    assert verify_run(store, "r1") == _bad(
        0, "step index 1 found where 0 was expected (a step was deleted or reordered)", steps=2)


def test_swapped_step_contents_break_at_the_first(store: TraceStore) -> None:
    _write(store)
    _exec(store, 'UPDATE steps SET "index" = 100 WHERE "index" = 0')
    _exec(store, 'UPDATE steps SET "index" = 0 WHERE "index" = 2')
    _exec(store, 'UPDATE steps SET "index" = 2 WHERE "index" = 100')
    assert verify_run(store, "r1") == _bad(0, BROKEN)


def _tail(count: int, head: str, found: int) -> str:
    return f"run records {count} steps ending in {head[:12]}, found {found} (steps were deleted from the end)"


def test_a_deleted_tail_of_a_finished_run_is_found(store: TraceStore) -> None:
    _write(store)
    head = _one(store, "SELECT head_digest FROM runs")
    _exec(store, 'DELETE FROM steps WHERE "index" = 2')
    assert verify_run(store, "r1") == _bad(2, _tail(3, head, 2), steps=2)


def test_an_altered_head_of_a_finished_run_is_found(store: TraceStore) -> None:
    _write(store)
    _exec(store, "UPDATE runs SET head_digest = :h", h="f" * 64)
    assert verify_run(store, "r1") == _bad(3, _tail(3, "f" * 64, 3))


@pytest.mark.parametrize("count", [2, 4])
def test_an_altered_step_count_of_a_finished_run_is_found(store: TraceStore, count: int) -> None:
    _write(store)
    head = _one(store, "SELECT head_digest FROM runs")
    _exec(store, "UPDATE runs SET step_count = :c", c=count)
    assert verify_run(store, "r1") == _bad(3, _tail(count, head, 3))


@pytest.mark.parametrize("status", ["succeeded", "failed", "error"])
def test_a_finished_run_without_steps_verifies(store: TraceStore, status: str) -> None:
    """Sealed (head = the genesis link) or never sealed (no head): both have nothing to check."""
    _write(store, "sealed", status, steps=[])
    assert verify_run(store, "sealed") == _ok(0, "sealed")
    store.create_run(RunRecord(id="unsealed", workflow="w", status=status))
    assert _one(store, "SELECT head_digest FROM runs WHERE id = 'unsealed'") == ""
    assert verify_run(store, "unsealed") == _ok(0, "unsealed")


def test_a_run_still_recording_verifies_up_to_its_last_step(store: TraceStore) -> None:
    """A new run is not anchored until it ends: count 0, no head, steps written."""
    store.create_run(RunRecord(id="live", workflow="w"))
    writer = store.run_writer("live")
    with store.begin() as conn:
        for step in _steps():
            writer.write(conn, step)
    assert (_one(store, "SELECT step_count FROM runs"), _one(store, "SELECT head_digest FROM runs")) == (0, "")
    assert verify_run(store, "live") == _ok(3, "live")


def _fork_like(store: TraceStore, count: int, head_index: int | None) -> None:
    """A running run anchored at its first `count` steps (as a fork is, at its copied steps)."""
    _write(store, status="running")
    head = "e" * 64 if head_index is None else _step_column(store, "digest", head_index)
    _exec(store, "UPDATE runs SET step_count = :c, head_digest = :h", c=count, h=head)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_running_fork_verifies_past_its_copied_steps(store: TraceStore, count: int) -> None:
    _fork_like(store, count, count - 1)
    assert verify_run(store, "r1") == _ok()


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_running_fork_with_another_head_is_found(store: TraceStore, count: int) -> None:
    _fork_like(store, count, None)
    assert verify_run(store, "r1") == _bad(3, _tail(count, "e" * 64, 3))


def test_a_running_fork_whose_head_is_another_step_is_found(store: TraceStore) -> None:
    _fork_like(store, 2, 2)
    head = _step_column(store, "digest", 2)
    assert verify_run(store, "r1") == _bad(3, _tail(2, head, 3))


def test_a_running_fork_missing_copied_steps_is_found(store: TraceStore) -> None:
    _fork_like(store, 3, 2)
    head = _step_column(store, "digest", 2)
    _exec(store, 'DELETE FROM steps WHERE "index" = 2')
    assert verify_run(store, "r1") == _bad(2, _tail(3, head, 2), steps=2)


# -- payloads: missing, altered, behind manifests, redacted ----------------------------------


def _missing(digest: str) -> str:
    return f"payload {digest[:12]} is missing"


def _altered(digest: str) -> str:
    return f"payload {digest[:12]} was altered (its bytes no longer match its digest)"


@pytest.mark.parametrize("column", ["output_digest", "delta_digest", "input_digest"])
def test_a_missing_payload_is_named(store: TraceStore, column: str) -> None:
    _write(store)
    digest = _step_column(store, column, 1)
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=digest)
    assert verify_run(store, "r1") == _bad(1, _missing(digest))


@pytest.mark.parametrize("data", [b'{"content":"o2"}', None])
def test_an_altered_or_emptied_payload_is_named(store: TraceStore, data: bytes | None) -> None:
    _write(store)
    digest = _step_column(store, "output_digest", 2)
    _set_blob(store, digest, data)
    assert verify_run(store, "r1") == _bad(2, _altered(digest))


CALL_PAYLOADS = {
    "request": "SELECT request_digest FROM model_calls WHERE model = 'model-1'",
    "response": "SELECT response_digest FROM model_calls WHERE model = 'model-1'",
    "activations": "SELECT activations_digest FROM model_calls WHERE model = 'model-1'",
    "arguments": "SELECT arguments_digest FROM tool_calls WHERE name = 'lookup'",
    "result": "SELECT result_digest FROM tool_calls WHERE name = 'lookup'",
}


@pytest.mark.parametrize("payload", list(CALL_PAYLOADS))
def test_an_altered_call_payload_is_named(store: TraceStore, payload: str) -> None:
    _write(store)
    digest = _one(store, CALL_PAYLOADS[payload])
    _set_blob(store, digest, b"forged")
    assert verify_run(store, "r1") == _bad(1, _altered(digest))


@pytest.mark.parametrize(("first", "second"), [
    ("input_digest", "output_digest"), ("output_digest", "delta_digest"), ("input_digest", "delta_digest"),
])
def test_the_first_bad_payload_of_a_step_is_named_in_step_order(store: TraceStore, first: str, second: str) -> None:
    """input, then output, then delta, then model calls, then tool calls."""
    _write(store)
    a, b = _step_column(store, first, 1), _step_column(store, second, 1)
    _set_blob(store, b, b"forged")
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=a)
    assert verify_run(store, "r1") == _bad(1, _missing(a))


@pytest.mark.parametrize(("first", "second"), [
    ("delta", "request"), ("request", "response"), ("response", "activations"), ("activations", "arguments"),
    ("arguments", "result"),
])
def test_call_payloads_are_checked_after_the_steps_and_in_call_order(store: TraceStore, first: str, second: str) -> None:
    _write(store)
    digest = {**CALL_PAYLOADS, "delta": "SELECT delta_digest FROM steps WHERE \"index\" = 1"}
    a, b = _one(store, digest[first]), _one(store, digest[second])
    _set_blob(store, b, b"forged")
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=a)
    assert verify_run(store, "r1") == _bad(1, _missing(a))


def test_model_request_of_the_first_call_comes_before_the_second_call(store: TraceStore) -> None:
    _write(store)
    first = _one(store, "SELECT response_digest FROM model_calls WHERE model = 'model-1'")
    second = _one(store, "SELECT request_digest FROM model_calls WHERE model = 'model-2'")
    _set_blob(store, second, b"forged")
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=first)
    assert verify_run(store, "r1") == _bad(1, _missing(first))


def test_an_altered_message_is_named_at_the_first_step_whose_history_holds_it(store: TraceStore) -> None:
    """Step 0's and step 1's inputs share their first message: step 0, the first to hold it, breaks."""
    _write(store)
    message = _manifest_messages(store, _step_column(store, "input_digest", 0))[0]
    assert _manifest_messages(store, _step_column(store, "input_digest", 1))[0] == message
    _set_blob(store, message, b'{"content":"forged","role":"user"}')
    assert verify_run(store, "r1") == _bad(0, _altered(message))


def test_a_manifest_takes_the_problem_of_its_first_bad_message(store: TraceStore) -> None:
    _write(store, steps=[StepRecord(node="a", input=_long_history(3), started_at=T0, ended_at=T1)])
    first, second, third = _manifest_messages(store, _step_column(store, "input_digest", 0))
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=third)
    _set_blob(store, second, b"forged")
    assert verify_run(store, "r1") == _bad(0, _altered(second), steps=1)
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=first)
    assert verify_run(store, "r1") == _bad(0, _missing(first), steps=1)


def test_a_problem_behind_a_manifest_is_named_at_the_only_step_holding_it(store: TraceStore) -> None:
    _write(store)
    second = _manifest_messages(store, _step_column(store, "input_digest", 1))[1]
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=second)
    assert verify_run(store, "r1") == _bad(1, _missing(second))


def test_a_message_of_a_model_request_is_checked(store: TraceStore) -> None:
    _write(store)
    request = _one(store, CALL_PAYLOADS["request"])
    (message,) = _manifest_messages(store, request)
    _set_blob(store, message, None)
    assert verify_run(store, "r1") == _bad(1, _altered(message))


def _long_history(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"message {i}"} for i in range(n)]


def test_a_message_two_manifests_deep_is_named(store: TraceStore) -> None:
    """A history of 20 messages is a head manifest (4) whose prefix manifest holds the first 16."""
    _write(store, steps=[StepRecord(node="a", input=_long_history(20), started_at=T0, ended_at=T1)])
    head = _step_column(store, "input_digest", 0)
    prefix = json.loads(_blob(store, head).data)["prefix"]
    first = _manifest_messages(store, prefix)[0]
    assert verify_run(store, "r1") == _ok(1)
    _set_blob(store, first, b"forged")
    assert verify_run(store, "r1") == _bad(0, _altered(first), steps=1)
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=prefix)
    assert verify_run(store, "r1") == _bad(0, _missing(prefix), steps=1)


def test_messages_shared_by_later_steps_are_checked_for_each(store: TraceStore) -> None:
    """Steps 1 and 2 resend step 0's 20-message history (sharing its prefix manifest); a message
    only step 2 adds is checked there, and a shared one at step 0."""
    history = _long_history(22)
    steps = [StepRecord(node=f"n{i}", input=history[: 20 + i], started_at=T0, ended_at=T1) for i in range(3)]
    _write(store, steps=steps)
    assert verify_run(store, "r1") == _ok()
    last = _manifest_messages(store, _step_column(store, "input_digest", 2))[-1]
    _set_blob(store, last, b"forged")
    assert verify_run(store, "r1") == _bad(2, _altered(last))
    prefix = json.loads(_blob(store, _step_column(store, "input_digest", 0)).data)["prefix"]
    shared = _manifest_messages(store, prefix)[5]
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=shared)
    assert verify_run(store, "r1") == _bad(0, _missing(shared))


def test_redacted_payloads_are_counted_once_and_still_verify(store: TraceStore) -> None:
    _write(store)
    message = _manifest_messages(store, _step_column(store, "input_digest", 0))[0]  # in steps 0 and 1
    output = _step_column(store, "output_digest", 2)
    assert redact_blobs(store, [message, output], "names a customer") == 2
    assert verify_run(store, "r1") == _ok(redacted=2)
    assert tuple(_blob(store, message)) == (None, True, "names a customer")


def test_a_redacted_manifest_hides_nothing_it_points_to(store: TraceStore) -> None:
    """A redacted manifest's children are not read (its list is gone), and are not problems."""
    _write(store)
    manifest = _step_column(store, "input_digest", 1)
    second = _manifest_messages(store, manifest)[1]
    assert redact_blobs(store, [manifest], "gone") == 1
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=second)
    assert verify_run(store, "r1") == _ok(redacted=1)


# -- redaction by text ------------------------------------------------------------------------


def test_redacting_no_text_is_refused(store: TraceStore) -> None:
    _write(store)
    with pytest.raises(StoreError) as raised:
        redact_run_text(store, "r1", "", "note")
    assert str(raised.value) == "nothing to redact: give the text to remove"


def test_redact_blobs_counts_the_rows_it_changed(store: TraceStore) -> None:
    _write(store)
    assert redact_blobs(store, [], "nothing") == 0
    assert redact_blobs(store, ["0" * 64], "no such blob") == 0


WHERE_TEXT = {
    "step input": "user asked about Ada Lovelace",
    "step output": "output names Ada Lovelace",
    "step delta": "delta names Ada Lovelace",
    "model request": "request names Ada Lovelace",
    "model response": "response names Ada Lovelace",
    "tool arguments": "arguments name Ada Lovelace",
    "tool result": "result names Ada Lovelace",
}


def _step_with(where: str) -> StepRecord:
    said = WHERE_TEXT[where]
    def pick(key: str, default: str) -> str:
        return said if where == key else default
    return StepRecord(
        node="n", input=[{"role": "user", "content": pick("step input", "hello")}],
        output={"content": pick("step output", "out")}, delta={"d": pick("step delta", "delta")},
        started_at=T0, ended_at=T1,
        model_calls=[ModelCallRecord(backend="b", model="m",
                                     request=[{"role": "user", "content": pick("model request", "req")}],
                                     response={"content": pick("model response", "resp")})],
        tool_calls=[ToolCallRecord(name="t", arguments={"a": pick("tool arguments", "args")},
                                   result=pick("tool result", "res"))],
    )


@pytest.mark.parametrize("where", list(WHERE_TEXT))
def test_redacting_text_reaches_each_payload_of_a_run(store: TraceStore, where: str) -> None:
    _write(store, steps=[_step_with(where)])
    with store.engine.connect() as conn:
        before = {d: data for d, data in conn.execute(select(Blob.digest, Blob.data))}
    assert redact_run_text(store, "r1", "Ada Lovelace", "a person's name") == 1
    with store.engine.connect() as conn:
        after = {d: (data, redacted, note) for d, data, redacted, note in
                 conn.execute(select(Blob.digest, Blob.data, Blob.redacted, Blob.redaction_note))}
    gone = [d for d, (data, _, _) in after.items() if data is None]
    assert len(gone) == 1 and b"Ada Lovelace" in before[gone[0]]
    assert after[gone[0]] == (None, True, "a person's name")
    assert all(after[d] == (before[d], False, None) for d in after if d != gone[0])
    assert verify_run(store, "r1") == _ok(1, redacted=1)
    assert redact_run_text(store, "r1", "Ada Lovelace", "again") == 0  # already gone: nothing left to read


def test_redacting_text_found_nowhere_changes_nothing(store: TraceStore) -> None:
    _write(store)
    assert redact_run_text(store, "r1", "Ada Lovelace", "note") == 0
    assert _one(store, "SELECT count(*) FROM blobs WHERE redacted OR data IS NULL") == 0


def test_redacting_text_leaves_other_runs_alone(store: TraceStore) -> None:
    _write(store, "mine", steps=[_step_with("tool result")])
    other = _step_with("model response")
    other.tool_calls[0].result = "their result names Ada Lovelace"
    _write(store, "theirs", steps=[other])
    assert redact_run_text(store, "mine", "Ada Lovelace", "note") == 1
    assert verify_run(store, "theirs") == _ok(1, "theirs")
    assert _one(store, "SELECT count(*) FROM blobs WHERE redacted") == 1


def test_redacting_text_goes_past_repeated_and_missing_payloads(store: TraceStore) -> None:
    """Two identical tool calls (their payloads listed twice, and read last) and a missing blob
    do not stop the search: the output holding the text is still redacted."""
    step = _step_with("step output")
    step.tool_calls = [ToolCallRecord(name="t", arguments={"a": "same"}, result="same"),
                       ToolCallRecord(name="t", arguments={"a": "same"}, result="same")]
    _write(store, steps=[step])
    _exec(store, "DELETE FROM blobs WHERE digest = :d", d=_step_column(store, "delta_digest", 0))
    assert redact_run_text(store, "r1", "Ada Lovelace", "note") == 1
    assert _blob(store, _step_column(store, "output_digest", 0)).data is None


def test_redacting_text_reaches_messages_behind_a_prefix_manifest(store: TraceStore) -> None:
    history = _long_history(20)
    history[0]["content"] = "Ada Lovelace wrote first"
    _write(store, steps=[StepRecord(node="a", input=history, started_at=T0, ended_at=T1)])
    assert redact_run_text(store, "r1", "Ada Lovelace", "note") == 1
    assert verify_run(store, "r1") == _ok(1, redacted=1)


# -- media types: the column is not hashed, so it is checked against how each payload was written


MESSAGES = "application/vnd.counterfact.messages+json"


def _retype(store: TraceStore, digest: str, media_type: str) -> None:
    _exec(store, "UPDATE blobs SET media_type = :m WHERE digest = :d", m=media_type, d=digest)


def _retyped(digest: str, media_type: str) -> str:
    return f"payload {digest[:12]} has the wrong media type {media_type} (it was changed)"


def test_a_history_retyped_as_a_value_no_longer_hides_an_altered_message(store: TraceStore) -> None:
    """Before the fix, retyping step 1's input manifest let its altered message verify."""
    _write(store)
    manifest = _step_column(store, "input_digest", 1)
    second = _manifest_messages(store, manifest)[1]
    _set_blob(store, second, b'{"content":"pay Mallory","role":"assistant"}')
    _retype(store, manifest, "application/json")
    assert verify_run(store, "r1") == _bad(1, _retyped(manifest, "application/json"))


def test_a_model_request_retyped_as_a_value_is_found(store: TraceStore) -> None:
    _write(store)
    request = _one(store, CALL_PAYLOADS["request"])
    _retype(store, request, "application/json")
    assert verify_run(store, "r1") == _bad(1, _retyped(request, "application/json"))


def test_a_prefix_manifest_retyped_as_a_value_is_found(store: TraceStore) -> None:
    _write(store, steps=[StepRecord(node="a", input=_long_history(20), started_at=T0, ended_at=T1)])
    prefix = json.loads(_blob(store, _step_column(store, "input_digest", 0)).data)["prefix"]
    _retype(store, prefix, "text/plain")
    assert verify_run(store, "r1") == _bad(0, _retyped(prefix, "text/plain"), steps=1)


@pytest.mark.parametrize("payload", ["output", "message", "activations", "arguments"])
def test_a_value_retyped_as_a_history_is_found(store: TraceStore, payload: str) -> None:
    """Read as a manifest it would not parse (verify_run raised); now it is named."""
    _write(store)
    digest = {
        "output": lambda: _step_column(store, "output_digest", 1),
        "message": lambda: _manifest_messages(store, _step_column(store, "input_digest", 1))[1],
        "activations": lambda: _one(store, CALL_PAYLOADS["activations"]),
        "arguments": lambda: _one(store, CALL_PAYLOADS["arguments"]),
    }[payload]()
    _retype(store, digest, MESSAGES)
    assert verify_run(store, "r1") == _bad(1, _retyped(digest, MESSAGES))


def test_other_media_types_of_values_are_not_problems(store: TraceStore) -> None:
    """Only being, or not being, a message list matters (activations are safetensors)."""
    _write(store)
    assert _blob_media(store, _one(store, CALL_PAYLOADS["activations"])) == "application/safetensors"
    _retype(store, _step_column(store, "output_digest", 1), "text/plain")
    assert verify_run(store, "r1") == _ok()


def _blob_media(store: TraceStore, digest: str) -> str:
    return _one(store, "SELECT media_type FROM blobs WHERE digest = :d", d=digest)


# -- reading each row once, writing nothing needlessly, walking in index order ---------------


def _statements(store: TraceStore) -> list[str]:
    """The SQL statements run on `store` from now on (a listener on its engine)."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: seen.append(sql))
    return seen


def test_redacting_text_reads_each_payload_once(store: TraceStore) -> None:
    """Two identical tool calls and a message in both a step input and a model request: every
    blob of the run is reached, and each is read once."""
    step = _step_with("step output")
    step.model_calls[0].request = step.input
    step.tool_calls = [ToolCallRecord(name="t", arguments={"a": "same"}, result="same"),
                       ToolCallRecord(name="t", arguments={"a": "same"}, result="same")]
    _write(store, steps=[step])
    blobs = _one(store, "SELECT count(*) FROM blobs")
    sql = _statements(store)
    assert redact_run_text(store, "r1", "Ada Lovelace", "note") == 1
    assert len([s for s in sql if s.lstrip().upper().startswith("SELECT") and "FROM blobs" in s]) == blobs == 7


def test_redacting_text_found_nowhere_writes_nothing(store: TraceStore) -> None:
    _write(store)
    sql = _statements(store)
    assert redact_run_text(store, "r1", "Ada Lovelace", "note") == 0
    assert [s for s in sql if not s.lstrip().upper().startswith("SELECT")] == []


@pytest.mark.postgres
def test_steps_are_walked_in_index_order_not_storage_order(pg_url: str) -> None:
    """PostgreSQL returns rows in storage order, which an update changes: rewriting step 0's
    checkpoint_after (outside the chain) moves its row last; the run must still verify."""
    from tests.conftest import _truncate

    s = TraceStore.open(pg_url)
    try:
        _truncate(s)
        _write(s)
        _exec(s, 'UPDATE steps SET checkpoint_after = :c WHERE "index" = 0', c="moved")
        _exec(s, "ANALYZE steps")  # three rows on one page: read in storage order, not by index
        stored = _one_list(s, "SELECT \"index\" FROM steps WHERE run_id = 'r1'")
        assert stored == [1, 2, 0]  # else this test could not tell the orders apart
        assert verify_run(s, "r1") == _ok()
    finally:
        s.close()


def _one_list(store: TraceStore, sql: str) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())
