"""The hash chain: edits, deletions and reorderings are found at the right step; redaction is not."""

from __future__ import annotations

from sqlalchemy import text, update

from counterfact.graphs import record
from counterfact.store import TraceStore, redact_run_text, verify_run
from counterfact.store.schema import Blob, Step
from tests.graphs.sample_graphs import loop_graph, loop_input


def _run(store: TraceStore) -> str:
    return record(loop_graph(), store).invoke(loop_input(4)).run_id  # 7 steps


def _exec(store: TraceStore, sql: str, **params: object) -> None:
    with store.begin() as conn:
        conn.execute(text(sql), params)


def test_untouched_run_verifies(store: TraceStore) -> None:
    report = verify_run(store, _run(store))
    assert report.ok and report.steps == 7 and report.first_bad_step is None


def test_edited_step_is_found(store: TraceStore) -> None:
    run_id = _run(store)
    _exec(store, 'UPDATE steps SET agent = :a WHERE run_id = :r AND "index" = 4', a="mallory", r=run_id)
    report = verify_run(store, run_id)
    assert not report.ok and report.first_bad_step == 4


def test_edited_payload_is_found(store: TraceStore) -> None:
    run_id = _run(store)
    (step,) = [s for s in store.steps(run_id, payloads=False) if s.index == 2]
    with store.engine.connect() as conn:
        digest = conn.execute(
            text('SELECT output_digest FROM steps WHERE run_id = :r AND "index" = 2'), {"r": run_id}
        ).scalar_one()
    with store.begin() as conn:
        conn.execute(update(Blob.__table__).where(Blob.digest == digest).values(data=b'{"content":"forged"}'))
    report = verify_run(store, run_id)
    assert not report.ok and report.first_bad_step == 2 and "altered" in (report.problem or "")
    assert step.index == 2


def test_deleted_and_reordered_steps_are_found(store: TraceStore) -> None:
    run_id = _run(store)
    _exec(store, 'DELETE FROM steps WHERE run_id = :r AND "index" = 3', r=run_id)
    report = verify_run(store, run_id)
    assert not report.ok and report.first_bad_step == 3

    other = _run(store)
    with store.begin() as conn:  # swap steps 1 and 2 (via a free index)
        for old, new in ((1, 100), (2, 1), (100, 2)):
            conn.execute(update(Step.__table__).where(Step.run_id == other, Step.index == old).values(index=new))
    report = verify_run(store, other)
    assert not report.ok and report.first_bad_step == 1


def test_deleted_tail_is_found(store: TraceStore) -> None:
    run_id = _run(store)
    _exec(store, 'DELETE FROM steps WHERE run_id = :r AND "index" = 6', r=run_id)
    report = verify_run(store, run_id)
    assert not report.ok and report.first_bad_step == 6 and "deleted" in (report.problem or "")


def test_redaction_keeps_the_chain_verifiable(store: TraceStore) -> None:
    run_id = _run(store)
    assert redact_run_text(store, run_id, "turn 2", "contains a customer's name") > 0
    report = verify_run(store, run_id)
    assert report.ok and report.redacted_blobs > 0
    texts = [str(s.output) for s in store.steps(run_id)]
    assert not any("turn 2" in t for t in texts)
    assert any("redacted" in t for t in texts)


def test_call_placement_is_chained_where_set_and_older_calls_still_verify(store: TraceStore) -> None:
    """Calls recorded before revision 0006 have no offset, agent or handoff (NULL): their links
    hold; where those columns are set, changing one is found."""
    from counterfact.capture import ToolCallRecord
    from counterfact.store import RunRecord, StepRecord

    old = StepRecord(node="a", tool_calls=[ToolCallRecord(name="lookup", result="1")])
    new = StepRecord(node="b", tool_calls=[ToolCallRecord(name="transfer_to_b", result="ok", offset_ms=2.5,
                                                           agent="team/a", handoff="b")])
    store.write_run(RunRecord(id="placed", workflow="w"), [old, new])
    assert verify_run(store, "placed").ok
    _exec(store, "UPDATE tool_calls SET handoff = 'c' WHERE name = 'transfer_to_b'")
    report = verify_run(store, "placed")
    assert not report.ok and report.first_bad_step == 1
    _exec(store, "UPDATE tool_calls SET handoff = 'b', agent = 'x' WHERE name = 'transfer_to_b'")
    assert verify_run(store, "placed").first_bad_step == 1
    _exec(store, "UPDATE tool_calls SET agent = 'x' WHERE name = 'lookup'")  # set where it was not
    assert verify_run(store, "placed").first_bad_step == 0
