"""The store's records of interventions and verdicts: round trips, order and unknown ids; and
the 0004 migration of the debugger's records written at revision 0003 (their tables are the
store's schema; `tests/interventions/test_debug_records.py` covers the records themselves)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select, update

from counterfact.interventions import DebugLog, DebugSpend
from counterfact.store import (
    InterventionRecord,
    RunRecord,
    StoreError,
    TraceStore,
    VerdictRecord,
)
from counterfact.store._migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from counterfact.store.schema import (
    Intervention,
    JsonType,
    Verdict,
)


def _run(store: TraceStore, status: str = "failed") -> str:
    run_id = uuid.uuid4().hex
    store.create_run(RunRecord(id=run_id, workflow="wf", status=status))  # type: ignore[arg-type]
    return run_id


def _set_created(store: TraceStore, table: Any, record_id: str, when: datetime) -> None:
    with store.begin() as conn:
        conn.execute(update(table.__table__).where(table.id == record_id).values(created_at=when))


# -- interventions and verdicts ---------------------------------------------------------------


def test_intervention_and_verdict_round_trip(store: TraceStore) -> None:
    run_id = _run(store)
    spec = {"edits": [{"kind": "message", "text": "RESULT: 999", "at": {"step": 2}}], "note": "n"}
    intervention = store.add_intervention(run_id, 2, spec)
    assert isinstance(intervention, InterventionRecord)
    assert len(intervention.id) == 32 and intervention.run_id == run_id
    assert store.get_intervention(intervention.id) == intervention
    assert store.get_intervention(intervention.id).spec == spec

    stats = {"comparison": {"n": 2, "difference": 1.0}, "treatment_runs": ["a", "b"]}
    verdict = store.add_verdict(intervention.id, run_id, "validated", "it repairs the run", stats)
    assert isinstance(verdict, VerdictRecord)
    assert verdict.verdict == "validated" and verdict.stats == stats
    assert store.get_verdict(verdict.id) == verdict
    assert store.verdicts(run_id=run_id) == [verdict]
    assert store.verdicts(intervention_id=intervention.id) == [verdict]

    named = uuid.uuid4().hex  # named before the replays, which carry it as a label
    again = store.add_verdict(intervention.id, run_id, "refuted", "", {}, verdict_id=named)
    assert again.id == named and store.get_verdict(named) == again
    assert store.verdicts(intervention_id=intervention.id) == [verdict, again]


def test_a_verdict_must_be_one_of_the_three(store: TraceStore) -> None:
    run_id = _run(store)
    intervention = store.add_intervention(run_id, 0, {})
    with pytest.raises(ValueError, match="verdict"):
        store.add_verdict(intervention.id, run_id, "maybe", "", {})  # type: ignore[arg-type]
    assert store.verdicts() == []


def test_verdicts_are_filtered_and_ordered_by_creation(store: TraceStore) -> None:
    run_a, run_b = _run(store), _run(store)
    first = store.add_intervention(run_a, 1, {"n": 1})
    second = store.add_intervention(run_a, 2, {"n": 2})
    other = store.add_intervention(run_b, 1, {"n": 3})
    v1 = store.add_verdict(first.id, run_a, "refuted", "one", {})
    v2 = store.add_verdict(second.id, run_a, "validated", "two", {})
    v3 = store.add_verdict(first.id, run_a, "inconclusive", "three", {})
    v4 = store.add_verdict(other.id, run_b, "validated", "four", {})
    # the first verdict written is made the newest (and the rows are rewritten out of order,
    # so neither insertion nor physical order gives the answer): the order is created_at's
    base = datetime(2030, 1, 1)
    for verdict, minutes in [(v4, 2), (v1, 3), (v3, 1), (v2, 0)]:
        _set_created(store, Verdict, verdict.id, base + timedelta(minutes=minutes))
    v1, v2, v3, v4 = (store.get_verdict(v.id) for v in (v1, v2, v3, v4))

    assert [v.reason for v in store.verdicts(run_id=run_a)] == ["two", "three", "one"]
    assert [v.reason for v in store.verdicts(intervention_id=first.id)] == ["three", "one"]
    assert store.verdicts(run_id=run_a, intervention_id=other.id) == []
    assert store.verdicts(run_id=run_b, intervention_id=other.id) == [v4]
    assert store.verdicts() == [v2, v3, v4, v1]


# -- unknown ids ------------------------------------------------------------------------------


def test_unknown_ids_raise_one_line_store_errors(store: TraceStore) -> None:
    run_id = _run(store)
    missing = "f" * 32
    calls = {
        "run": [lambda: store.add_intervention(missing, 0, {})],
        "intervention": [
            lambda: store.get_intervention(missing),
            lambda: store.add_verdict(missing, run_id, "refuted", "", {}),
        ],
        "verdict": [lambda: store.get_verdict(missing)],
    }
    for what, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(StoreError) as caught:
                attempt()
            message = str(caught.value)
            assert f"no {what} with id '{missing}'" in message and "\n" not in message
    # nothing was written by the failed calls
    assert store.verdicts() == []
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Intervention)).scalar_one() == 0


# -- migration 0004 ---------------------------------------------------------------------------


# the two tables as revision 0003 made them
OLD_SESSIONS = sa.table(
    "debug_sessions",
    *(sa.column(c, sa.String) for c in ("id", "run_id", "status")),
    *(sa.column(c, JsonType) for c in ("strategies", "settings", "spent")),
    sa.column("created_at", sa.DateTime),
)
OLD_HYPOTHESES = sa.table(
    "hypotheses",
    *(sa.column(c, sa.String) for c in ("id", "session_id", "strategy", "agent", "reason", "status", "note")),
    *(sa.column(c, sa.Integer) for c in ("seq", "trial", "step")),
    sa.column("intervention", JsonType),
    sa.column("verdict_id", sa.String),
)


# runs as revisions 0001 to 0004 made them
OLD_RUNS = sa.table(
    "runs",
    *(sa.column(c, sa.String) for c in ("id", "workflow", "workflow_hash", "status", "source", "head_digest")),
    *(sa.column(c, JsonType) for c in ("task_input", "labels")),
    *(sa.column(c, sa.Integer) for c in ("total_tokens", "step_count")),
    sa.column("total_latency_ms", sa.Float),
    sa.column("created_at", sa.DateTime),
)


def _old_run(store: TraceStore, status: str = "failed", **fields: Any) -> str:
    run_id = fields.pop("id", uuid.uuid4().hex)
    with store.engine.begin() as conn:
        conn.execute(sa.insert(OLD_RUNS), [{
            "id": run_id, "workflow": "wf", "workflow_hash": "", "status": status, "source": "recorded",
            "head_digest": "", "task_input": {}, "labels": {}, "total_tokens": 0, "step_count": 0,
            "total_latency_ms": 0.0, "created_at": datetime(2026, 11, 26), **fields,
        }])
    return run_id


def test_migration_0004_keeps_sessions_and_hypotheses_written_at_0003(blank_url: str) -> None:
    old = TraceStore(blank_url, migrate=False)
    command.upgrade(alembic_config(old.engine), "0003")
    assert current_revision(old.engine) == "0003"
    failed, reference = _old_run(old), _old_run(old, "succeeded")
    created = datetime(2026, 11, 26, 12, 0, 0, 123456)
    spent = {"replays": 6, "tokens": 900, "seconds": 4.5, "done": ["llm", "patch"]}
    edit = {"edits": [{"kind": "message", "text": "x", "at": {"step": 2}}], "note": "patch"}

    def hypothesis(hid: str, seq: int, strategy: str, trial: int, note: str) -> dict[str, Any]:
        return {
            "id": hid, "session_id": "s1", "seq": seq, "strategy": strategy, "trial": trial,
            "step": 2, "agent": "solver", "reason": f"reason {hid}", "intervention": edit,
            "status": "proposed", "verdict_id": None, "note": note,
        }

    with old.engine.begin() as conn:
        conn.execute(
            sa.insert(OLD_SESSIONS),
            [
                {"id": "s1", "run_id": failed, "strategies": ["llm", "patch"], "settings": {"trials": 2},
                 "status": "running", "spent": spent, "created_at": created},
                {"id": "s2", "run_id": failed, "strategies": ["resample"], "settings": {},
                 "status": "done", "spent": {"replays": 1, "tokens": 5}, "created_at": created},
            ],
        )
        conn.execute(
            sa.insert(OLD_HYPOTHESES),
            [
                hypothesis("h1", 0, "patch", 2, f"reference {reference}"),
                hypothesis("h2", 0, "llm", 1, "a repeated seq"),  # an old race: renumbered
                hypothesis("h3", 1, "patch", 0, "reference 0123456789abcdef0123456789abcdef"),
            ],
        )
    old.close()

    store = TraceStore(blank_url)  # opening applies 0004 and later revisions
    log = DebugLog(store)
    try:
        assert head_revision() >= "0004"
        session = log.get_session("s1")
        assert session.completed == ["llm", "patch"]
        assert session.spent == DebugSpend(replays=6, tokens=900, seconds=4.5)
        assert (session.run_id, session.strategies, session.settings) == (failed, ["llm", "patch"], {"trials": 2})
        assert session.status == "running" and session.created_at == created
        assert log.unfinished_session(failed, ["patch", "llm"]) == session
        resampled = log.get_session("s2")
        assert resampled.completed == [] and resampled.spent == DebugSpend(replays=1, tokens=5)

        got = log.hypotheses("s1")
        assert [(h.id, h.seq, h.segment) for h in got] == [("h1", 0, 2), ("h2", 1, 1), ("h3", 2, 0)]
        assert [h.reference_run_id for h in got] == [reference, None, None]  # h3's run is unknown
        assert [h.note for h in got] == [f"reference {reference}", "a repeated seq",
                                         "reference 0123456789abcdef0123456789abcdef"]
        assert all(h.evidence == {} and h.intervention == edit and h.agent == "solver" for h in got)
        assert log.add_hypothesis("s1", strategy="llm", segment=0, step=1, agent="solver", reason="r",
                                  intervention=None).seq == 3
        log.update_session("s2", completed=["resample"])

        # and back: the session's stages return to spent["done"], nothing is lost
        command.downgrade(alembic_config(store.engine), "0003")
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(OLD_HYPOTHESES.c.id, OLD_HYPOTHESES.c.trial).order_by(OLD_HYPOTHESES.c.seq)
            ).all()
            assert [tuple(r) for r in rows][:3] == [("h1", 2), ("h2", 1), ("h3", 0)] and len(rows) == 4
            spent_back = dict(conn.execute(select(OLD_SESSIONS.c.id, OLD_SESSIONS.c.spent)).all())
        assert spent_back["s1"]["done"] == ["llm", "patch"]
        assert spent_back["s2"]["done"] == ["resample"]
        upgrade(store.engine)
        assert [h.segment for h in log.hypotheses("s1")] == [2, 1, 0, 0]
    finally:
        store.close()


def test_migration_0005_fills_search_text_of_existing_runs(blank_url: str) -> None:
    old = TraceStore(blank_url, migrate=False)
    command.upgrade(alembic_config(old.engine), "0004")
    found = _old_run(old, id="RUN-Upper", workflow="Town", task_input={"question": "Population of Ivesley?"})
    other = _old_run(old, id="other", task_input={"question": "Founding year"})
    old.close()
    store = TraceStore(blank_url)  # opening applies 0005 and what came after
    try:
        assert current_revision(store.engine) >= "0005"
        assert [r.id for r in store.list_runs(text="IVESLEY")] == [found]
        assert [r.id for r in store.list_runs(text="run-upper town")] == [found]
        assert [r.id for r in store.list_runs(text="founding")] == [other]
        assert store.list_runs(text="100%") == []  # LIKE wildcards in the text are literal
        command.downgrade(alembic_config(store.engine), "0004")
        upgrade(store.engine)
        assert [r.id for r in store.list_runs(text="ivesley")] == [found]
    finally:
        store.close()
