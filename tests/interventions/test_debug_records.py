"""The debugger's records (`DebugLog`): debug sessions and hypotheses in the store's database.
Round trips, order, resuming a session, numbering under concurrent writers, unknown ids, and
what deleting a run does to them."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from counterfact.interventions import (
    DebugLog,
    DebugSessionRecord,
    DebugSpend,
    HypothesisRecord,
)
from counterfact.store import RunRecord, StoreError, TraceStore
from counterfact.store.schema import DebugSession, Hypothesis, Run, Verdict


@pytest.fixture
def log(store: TraceStore) -> DebugLog:
    return DebugLog(store)


def _run(store: TraceStore, status: str = "failed") -> str:
    run_id = uuid.uuid4().hex
    store.create_run(RunRecord(id=run_id, workflow="wf", status=status))  # type: ignore[arg-type]
    return run_id


def _set_created(store: TraceStore, table: Any, record_id: str, when: datetime) -> None:
    with store.begin() as conn:
        conn.execute(update(table.__table__).where(table.id == record_id).values(created_at=when))


def _hypothesis(log: DebugLog, session_id: str, **overrides: Any) -> HypothesisRecord:
    fields: dict[str, Any] = dict(
        strategy="llm", segment=0, step=1, agent="solver", reason="wrong sum", intervention=None
    )
    return log.add_hypothesis(session_id, **{**fields, **overrides})


# -- debug sessions ---------------------------------------------------------------------------


def test_debug_session_round_trip_and_updates(store: TraceStore, log: DebugLog) -> None:
    run_id = _run(store)
    settings = {"budget": {"replays": 60, "tokens": None}, "trials": 1, "temperature": 0.8}
    session = log.create_session(run_id, ["llm", "patch"], settings)
    assert isinstance(session, DebugSessionRecord)
    assert session.status == "running" and session.completed == []
    assert session.spent == DebugSpend(replays=0, tokens=0, seconds=0.0)
    assert log.get_session(session.id) == session

    spent = DebugSpend(replays=4, tokens=1200, seconds=2.5)
    updated = log.update_session(session.id, spent=spent, completed=["llm"])
    assert updated.spent == spent and updated.completed == ["llm"] and updated.status == "running"
    assert log.get_session(session.id) == updated

    done = log.update_session(session.id, completed=["llm", "patch", "patch-layers"], status="done")
    assert done.completed == ["llm", "patch", "patch-layers"] and done.status == "done"
    assert done.spent == spent  # fields not given are left alone
    assert done.strategies == ["llm", "patch"] and done.settings == settings
    assert log.get_session(session.id) == done
    assert log.update_session(session.id) == done

    with pytest.raises(StoreError, match="unknown debug session status 'paused'"):
        log.update_session(session.id, status="paused")  # type: ignore[arg-type]
    assert log.get_session(session.id).status == "done"


def test_unfinished_session_is_the_newest_running_one_with_the_same_strategies(
    store: TraceStore, log: DebugLog
) -> None:
    run_id, other_run = _run(store), _run(store)
    older = log.create_session(run_id, ["llm", "patch"], {})
    newer = log.create_session(run_id, ["patch", "llm"], {})
    only_llm = log.create_session(run_id, ["llm"], {})
    finished = log.create_session(run_id, ["llm", "patch"], {})
    log.update_session(finished.id, status="done")
    elsewhere = log.create_session(other_run, ["llm", "patch"], {})
    base = datetime(2030, 1, 1)
    # written first, created last: the newest is found by created_at, not by insertion order
    _set_created(store, DebugSession, older.id, base + timedelta(minutes=1))
    _set_created(store, DebugSession, newer.id, base + timedelta(minutes=2))
    _set_created(store, DebugSession, finished.id, base + timedelta(minutes=3))
    _set_created(store, DebugSession, elsewhere.id, base + timedelta(minutes=4))

    found = log.unfinished_session(run_id, ["llm", "patch"])
    assert found is not None and found.id == newer.id
    assert log.unfinished_session(run_id, ["patch", "llm"]).id == newer.id  # type: ignore[union-attr]
    assert log.unfinished_session(run_id, ["llm"]).id == only_llm.id  # type: ignore[union-attr]
    assert log.unfinished_session(run_id, ["resample"]) is None
    assert log.unfinished_session(run_id, ["llm", "patch", "resample"]) is None

    log.update_session(newer.id, status="done")
    assert log.unfinished_session(run_id, ["llm", "patch"]).id == older.id  # type: ignore[union-attr]
    log.update_session(older.id, status="done")
    assert log.unfinished_session(run_id, ["llm", "patch"]) is None
    assert log.unfinished_session(other_run, ["patch", "llm"]).id == elsewhere.id  # type: ignore[union-attr]


# -- hypotheses -------------------------------------------------------------------------------


def test_hypothesis_round_trip_and_updates(store: TraceStore, log: DebugLog) -> None:
    run_id, reference = _run(store), _run(store, "succeeded")
    session = log.create_session(run_id, ["llm", "patch"], {})
    edit = {"edits": [{"kind": "message", "text": "RESULT: 999", "at": {"step": 3}}], "note": "patch"}
    first = log.add_hypothesis(
        session.id, strategy="patch", segment=1, step=3, agent="solver",
        reason="transplanting step 3", intervention=edit, note="costly",
        reference_run_id=reference, evidence={"claim": "the sum is 1000", "supported": False},
    )
    skipped = log.add_hypothesis(
        session.id, strategy="llm", segment=0, step=None, agent=None,
        reason="no usable hypothesis", intervention=None, status="skipped", note="malformed",
    )
    assert isinstance(first, HypothesisRecord)
    assert (first.seq, skipped.seq) == (0, 1)
    assert first.segment == 1 and first.reference_run_id == reference and first.intervention == edit
    assert first.evidence == {"claim": "the sum is 1000", "supported": False}
    assert skipped.evidence == {} and skipped.reference_run_id is None and skipped.status == "skipped"
    assert log.hypotheses(session.id) == [first, skipped]

    intervention = store.add_intervention(run_id, 3, edit)
    verdict = store.add_verdict(intervention.id, run_id, "validated", "repairs", {})
    verified = log.update_hypothesis(first.id, status="verified", verdict_id=verdict.id)
    assert verified.status == "verified" and verified.verdict_id == verdict.id
    assert verified.note == "costly"  # fields not given are left alone
    noted = log.update_hypothesis(skipped.id, note="budget exhausted before it was verified")
    assert noted.note == "budget exhausted before it was verified" and noted.status == "skipped"
    assert log.hypotheses(session.id) == [verified, noted]
    assert log.update_hypothesis(first.id) == verified

    with pytest.raises(StoreError, match="unknown hypothesis status 'done'"):
        log.update_hypothesis(first.id, status="done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        _hypothesis(log, session.id, status="maybe")
    assert len(log.hypotheses(session.id)) == 2


def test_hypotheses_come_in_seq_order_per_session(store: TraceStore, log: DebugLog) -> None:
    run_id = _run(store)
    session = log.create_session(run_id, ["llm"], {})
    other = log.create_session(run_id, ["resample"], {})
    made = [_hypothesis(log, session.id, reason=f"r{i}") for i in range(3)]
    assert _hypothesis(log, other.id, reason="elsewhere").seq == 0
    assert [h.seq for h in made] == [0, 1, 2]
    # renumber against insertion order: the listing follows seq
    with store.begin() as conn:
        for h, seq in zip(made, [12, 11, 10], strict=True):
            conn.execute(update(Hypothesis.__table__).where(Hypothesis.id == h.id).values(seq=seq))
    assert [h.reason for h in log.hypotheses(session.id)] == ["r2", "r1", "r0"]
    assert [h.reason for h in log.hypotheses(other.id)] == ["elsewhere"]


def test_concurrent_writers_get_distinct_dense_seqs(store: TraceStore, log: DebugLog) -> None:
    """Writers on connections of their own (as separate processes would be) number a
    session's hypotheses 0..n-1 without gaps or repeats."""
    run_id = _run(store)
    session = log.create_session(run_id, ["llm"], {})
    threads, per_thread = 4, 8
    stores = [TraceStore(store.url) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    seqs: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            barrier.wait()
            for k in range(per_thread):
                seqs[i].append(_hypothesis(DebugLog(stores[i]), session.id, reason=f"{i}.{k}").seq)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for s in stores:
        s.close()
    assert errors == []
    assert sorted(seq for mine in seqs for seq in mine) == list(range(threads * per_thread))
    assert all(mine == sorted(mine) for mine in seqs)
    stored = log.hypotheses(session.id)
    assert [h.seq for h in stored] == list(range(threads * per_thread))
    by_reason = {h.reason: h.seq for h in stored}
    assert all(by_reason[f"{i}.{k}"] == seqs[i][k] for i in range(threads) for k in range(per_thread))


# -- unknown ids and cascades -----------------------------------------------------------------


def test_unknown_ids_raise_one_line_store_errors(store: TraceStore, log: DebugLog) -> None:
    run_id = _run(store)
    session = log.create_session(run_id, ["llm"], {})
    hypothesis = _hypothesis(log, session.id)
    missing = "f" * 32
    calls = {
        "run": [
            lambda: log.create_session(missing, ["llm"], {}),
            lambda: _hypothesis(log, session.id, reference_run_id=missing),
        ],
        "verdict": [lambda: log.update_hypothesis(hypothesis.id, status="verified", verdict_id=missing)],
        "debug session": [
            lambda: log.get_session(missing),
            lambda: log.update_session(missing, status="done"),
            lambda: log.update_session(missing),
            lambda: _hypothesis(log, missing),
            lambda: log.hypotheses(missing),
        ],
        "hypothesis": [
            lambda: log.update_hypothesis(missing, note="x"),
            lambda: log.update_hypothesis(missing),
        ],
    }
    for what, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(StoreError) as caught:
                attempt()
            message = str(caught.value)
            assert f"no {what} with id '{missing}'" in message and "\n" not in message
    # nothing was written by the failed calls
    assert log.hypotheses(session.id) == [hypothesis]
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(DebugSession)).scalar_one() == 1


def test_deleting_a_run_cascades_and_clears_references(store: TraceStore, log: DebugLog) -> None:
    run_id, reference, kept = _run(store), _run(store, "succeeded"), _run(store)
    intervention = store.add_intervention(run_id, 1, {})
    verdict = store.add_verdict(intervention.id, run_id, "validated", "", {})
    session = log.create_session(run_id, ["patch"], {})
    _hypothesis(log, session.id, strategy="patch", reference_run_id=reference)
    kept_session = log.create_session(kept, ["patch"], {})
    kept_hypothesis = _hypothesis(log, kept_session.id, strategy="patch", reference_run_id=reference)
    kept_intervention = store.add_intervention(kept, 1, {})
    kept_verdict = store.add_verdict(kept_intervention.id, kept, "refuted", "", {})
    log.update_hypothesis(kept_hypothesis.id, status="verified", verdict_id=kept_verdict.id)

    with store.begin() as conn:
        conn.execute(delete(Run.__table__).where(Run.id == reference))
    (after,) = log.hypotheses(kept_session.id)
    assert after.reference_run_id is None and after.verdict_id == kept_verdict.id

    with store.begin() as conn:
        conn.execute(delete(Run.__table__).where(Run.id == run_id))
    with pytest.raises(StoreError):
        log.get_session(session.id)
    with pytest.raises(StoreError):
        store.get_verdict(verdict.id)
    with pytest.raises(StoreError):
        store.get_intervention(intervention.id)
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Hypothesis)).scalar_one() == 1
    assert store.verdicts() == [kept_verdict]

    with store.begin() as conn:  # a verdict deleted leaves its hypothesis, unverified
        conn.execute(delete(Verdict.__table__).where(Verdict.id == kept_verdict.id))
    assert log.hypotheses(kept_session.id)[0].verdict_id is None
