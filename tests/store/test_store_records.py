"""The store's records of interventions, verdicts, debug sessions and hypotheses: round trips,
order, resuming a session, numbering under concurrent writers, unknown ids, cascades, and the
0004 migration of data written at revision 0003."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import create_engine, delete, func, select, text, update

from counterfact.store import (
    DebugSessionRecord,
    DebugSpend,
    HypothesisRecord,
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
from counterfact.store._schema import (
    DebugSession,
    Hypothesis,
    Intervention,
    JsonType,
    Run,
    Verdict,
)

from ..conftest import PG_ADMIN_URL


def _run(store: TraceStore, status: str = "failed") -> str:
    run_id = uuid.uuid4().hex
    store.create_run(RunRecord(id=run_id, workflow="wf", status=status))  # type: ignore[arg-type]
    return run_id


def _set_created(store: TraceStore, table: Any, record_id: str, when: datetime) -> None:
    with store.begin() as conn:
        conn.execute(update(table.__table__).where(table.id == record_id).values(created_at=when))


def _hypothesis(store: TraceStore, session_id: str, **overrides: Any) -> HypothesisRecord:
    fields: dict[str, Any] = dict(
        strategy="llm", segment=0, step=1, agent="solver", reason="wrong sum", intervention=None
    )
    return store.add_hypothesis(session_id, **{**fields, **overrides})


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


# -- debug sessions ---------------------------------------------------------------------------


def test_debug_session_round_trip_and_updates(store: TraceStore) -> None:
    run_id = _run(store)
    settings = {"budget": {"replays": 60, "tokens": None}, "trials": 1, "temperature": 0.8}
    session = store.create_debug_session(run_id, ["llm", "patch"], settings)
    assert isinstance(session, DebugSessionRecord)
    assert session.status == "running" and session.completed == []
    assert session.spent == DebugSpend(replays=0, tokens=0, seconds=0.0)
    assert store.get_debug_session(session.id) == session

    spent = DebugSpend(replays=4, tokens=1200, seconds=2.5)
    updated = store.update_debug_session(session.id, spent=spent, completed=["llm"])
    assert updated.spent == spent and updated.completed == ["llm"] and updated.status == "running"
    assert store.get_debug_session(session.id) == updated

    done = store.update_debug_session(session.id, completed=["llm", "patch", "patch-layers"], status="done")
    assert done.completed == ["llm", "patch", "patch-layers"] and done.status == "done"
    assert done.spent == spent  # fields not given are left alone
    assert done.strategies == ["llm", "patch"] and done.settings == settings
    assert store.get_debug_session(session.id) == done
    assert store.update_debug_session(session.id) == done

    with pytest.raises(StoreError, match="unknown debug session status 'paused'"):
        store.update_debug_session(session.id, status="paused")  # type: ignore[arg-type]
    assert store.get_debug_session(session.id).status == "done"


def test_unfinished_session_is_the_newest_running_one_with_the_same_strategies(
    store: TraceStore,
) -> None:
    run_id, other_run = _run(store), _run(store)
    older = store.create_debug_session(run_id, ["llm", "patch"], {})
    newer = store.create_debug_session(run_id, ["patch", "llm"], {})
    only_llm = store.create_debug_session(run_id, ["llm"], {})
    finished = store.create_debug_session(run_id, ["llm", "patch"], {})
    store.update_debug_session(finished.id, status="done")
    elsewhere = store.create_debug_session(other_run, ["llm", "patch"], {})
    base = datetime(2030, 1, 1)
    # written first, created last: the newest is found by created_at, not by insertion order
    _set_created(store, DebugSession, older.id, base + timedelta(minutes=1))
    _set_created(store, DebugSession, newer.id, base + timedelta(minutes=2))
    _set_created(store, DebugSession, finished.id, base + timedelta(minutes=3))
    _set_created(store, DebugSession, elsewhere.id, base + timedelta(minutes=4))

    found = store.unfinished_debug_session(run_id, ["llm", "patch"])
    assert found is not None and found.id == newer.id
    assert store.unfinished_debug_session(run_id, ["patch", "llm"]).id == newer.id  # type: ignore[union-attr]
    assert store.unfinished_debug_session(run_id, ["llm"]).id == only_llm.id  # type: ignore[union-attr]
    assert store.unfinished_debug_session(run_id, ["resample"]) is None
    assert store.unfinished_debug_session(run_id, ["llm", "patch", "resample"]) is None

    store.update_debug_session(newer.id, status="done")
    assert store.unfinished_debug_session(run_id, ["llm", "patch"]).id == older.id  # type: ignore[union-attr]
    store.update_debug_session(older.id, status="done")
    assert store.unfinished_debug_session(run_id, ["llm", "patch"]) is None
    assert store.unfinished_debug_session(other_run, ["patch", "llm"]).id == elsewhere.id  # type: ignore[union-attr]


# -- hypotheses -------------------------------------------------------------------------------


def test_hypothesis_round_trip_and_updates(store: TraceStore) -> None:
    run_id, reference = _run(store), _run(store, "succeeded")
    session = store.create_debug_session(run_id, ["llm", "patch"], {})
    edit = {"edits": [{"kind": "message", "text": "RESULT: 999", "at": {"step": 3}}], "note": "patch"}
    first = store.add_hypothesis(
        session.id, strategy="patch", segment=1, step=3, agent="solver",
        reason="transplanting step 3", intervention=edit, note="costly",
        reference_run_id=reference, evidence={"claim": "the sum is 1000", "supported": False},
    )
    skipped = store.add_hypothesis(
        session.id, strategy="llm", segment=0, step=None, agent=None,
        reason="no usable hypothesis", intervention=None, status="skipped", note="malformed",
    )
    assert isinstance(first, HypothesisRecord)
    assert (first.seq, skipped.seq) == (0, 1)
    assert first.segment == 1 and first.reference_run_id == reference and first.intervention == edit
    assert first.evidence == {"claim": "the sum is 1000", "supported": False}
    assert skipped.evidence == {} and skipped.reference_run_id is None and skipped.status == "skipped"
    assert store.hypotheses(session.id) == [first, skipped]

    intervention = store.add_intervention(run_id, 3, edit)
    verdict = store.add_verdict(intervention.id, run_id, "validated", "repairs", {})
    verified = store.update_hypothesis(first.id, status="verified", verdict_id=verdict.id)
    assert verified.status == "verified" and verified.verdict_id == verdict.id
    assert verified.note == "costly"  # fields not given are left alone
    noted = store.update_hypothesis(skipped.id, note="budget exhausted before it was verified")
    assert noted.note == "budget exhausted before it was verified" and noted.status == "skipped"
    assert store.hypotheses(session.id) == [verified, noted]
    assert store.update_hypothesis(first.id) == verified

    with pytest.raises(StoreError, match="unknown hypothesis status 'done'"):
        store.update_hypothesis(first.id, status="done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        _hypothesis(store, session.id, status="maybe")
    assert len(store.hypotheses(session.id)) == 2


def test_hypotheses_come_in_seq_order_per_session(store: TraceStore) -> None:
    run_id = _run(store)
    session = store.create_debug_session(run_id, ["llm"], {})
    other = store.create_debug_session(run_id, ["resample"], {})
    made = [_hypothesis(store, session.id, reason=f"r{i}") for i in range(3)]
    assert _hypothesis(store, other.id, reason="elsewhere").seq == 0
    assert [h.seq for h in made] == [0, 1, 2]
    # renumber against insertion order: the listing follows seq
    with store.begin() as conn:
        for h, seq in zip(made, [12, 11, 10], strict=True):
            conn.execute(update(Hypothesis.__table__).where(Hypothesis.id == h.id).values(seq=seq))
    assert [h.reason for h in store.hypotheses(session.id)] == ["r2", "r1", "r0"]
    assert [h.reason for h in store.hypotheses(other.id)] == ["elsewhere"]


def test_concurrent_writers_get_distinct_dense_seqs(store: TraceStore) -> None:
    """Writers on connections of their own (as separate processes would be) number a
    session's hypotheses 0..n-1 without gaps or repeats."""
    run_id = _run(store)
    session = store.create_debug_session(run_id, ["llm"], {})
    threads, per_thread = 4, 8
    stores = [TraceStore(store.url) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    seqs: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            barrier.wait()
            for k in range(per_thread):
                seqs[i].append(_hypothesis(stores[i], session.id, reason=f"{i}.{k}").seq)
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
    stored = store.hypotheses(session.id)
    assert [h.seq for h in stored] == list(range(threads * per_thread))
    by_reason = {h.reason: h.seq for h in stored}
    assert all(by_reason[f"{i}.{k}"] == seqs[i][k] for i in range(threads) for k in range(per_thread))


# -- unknown ids and cascades -----------------------------------------------------------------


def test_unknown_ids_raise_one_line_store_errors(store: TraceStore) -> None:
    run_id = _run(store)
    session = store.create_debug_session(run_id, ["llm"], {})
    hypothesis = _hypothesis(store, session.id)
    missing = "f" * 32
    calls = {
        "run": [
            lambda: store.add_intervention(missing, 0, {}),
            lambda: store.create_debug_session(missing, ["llm"], {}),
            lambda: _hypothesis(store, session.id, reference_run_id=missing),
        ],
        "intervention": [
            lambda: store.get_intervention(missing),
            lambda: store.add_verdict(missing, run_id, "refuted", "", {}),
        ],
        "verdict": [
            lambda: store.get_verdict(missing),
            lambda: store.update_hypothesis(hypothesis.id, status="verified", verdict_id=missing),
        ],
        "debug session": [
            lambda: store.get_debug_session(missing),
            lambda: store.update_debug_session(missing, status="done"),
            lambda: store.update_debug_session(missing),
            lambda: _hypothesis(store, missing),
            lambda: store.hypotheses(missing),
        ],
        "hypothesis": [
            lambda: store.update_hypothesis(missing, note="x"),
            lambda: store.update_hypothesis(missing),
        ],
    }
    for what, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(StoreError) as caught:
                attempt()
            message = str(caught.value)
            assert f"no {what} with id '{missing}'" in message and "\n" not in message
    # nothing was written by the failed calls
    assert store.hypotheses(session.id) == [hypothesis]
    assert store.verdicts() == []
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Intervention)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(DebugSession)).scalar_one() == 1


def test_deleting_a_run_cascades_and_clears_references(store: TraceStore) -> None:
    run_id, reference, kept = _run(store), _run(store, "succeeded"), _run(store)
    intervention = store.add_intervention(run_id, 1, {})
    verdict = store.add_verdict(intervention.id, run_id, "validated", "", {})
    session = store.create_debug_session(run_id, ["patch"], {})
    _hypothesis(store, session.id, strategy="patch", reference_run_id=reference)
    kept_session = store.create_debug_session(kept, ["patch"], {})
    kept_hypothesis = _hypothesis(store, kept_session.id, strategy="patch", reference_run_id=reference)
    kept_intervention = store.add_intervention(kept, 1, {})
    kept_verdict = store.add_verdict(kept_intervention.id, kept, "refuted", "", {})
    store.update_hypothesis(kept_hypothesis.id, status="verified", verdict_id=kept_verdict.id)

    with store.begin() as conn:
        conn.execute(delete(Run.__table__).where(Run.id == reference))
    (after,) = store.hypotheses(kept_session.id)
    assert after.reference_run_id is None and after.verdict_id == kept_verdict.id

    with store.begin() as conn:
        conn.execute(delete(Run.__table__).where(Run.id == run_id))
    with pytest.raises(StoreError):
        store.get_debug_session(session.id)
    with pytest.raises(StoreError):
        store.get_verdict(verdict.id)
    with pytest.raises(StoreError):
        store.get_intervention(intervention.id)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Hypothesis)).scalar_one() == 1
    assert store.verdicts() == [kept_verdict]

    with store.begin() as conn:  # a verdict deleted leaves its hypothesis, unverified
        conn.execute(delete(Verdict.__table__).where(Verdict.id == kept_verdict.id))
    assert store.hypotheses(kept_session.id)[0].verdict_id is None


# -- migration 0004 ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of its own (the `store` fixture's is already at head)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"cf_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; start it (see .ci/run)")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
    try:
        assert head_revision() >= "0004"
        session = store.get_debug_session("s1")
        assert session.completed == ["llm", "patch"]
        assert session.spent == DebugSpend(replays=6, tokens=900, seconds=4.5)
        assert (session.run_id, session.strategies, session.settings) == (failed, ["llm", "patch"], {"trials": 2})
        assert session.status == "running" and session.created_at == created
        assert store.unfinished_debug_session(failed, ["patch", "llm"]) == session
        resampled = store.get_debug_session("s2")
        assert resampled.completed == [] and resampled.spent == DebugSpend(replays=1, tokens=5)

        got = store.hypotheses("s1")
        assert [(h.id, h.seq, h.segment) for h in got] == [("h1", 0, 2), ("h2", 1, 1), ("h3", 2, 0)]
        assert [h.reference_run_id for h in got] == [reference, None, None]  # h3's run is unknown
        assert [h.note for h in got] == [f"reference {reference}", "a repeated seq",
                                         "reference 0123456789abcdef0123456789abcdef"]
        assert all(h.evidence == {} and h.intervention == edit and h.agent == "solver" for h in got)
        assert _hypothesis(store, "s1").seq == 3
        store.update_debug_session("s2", completed=["resample"])

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
        assert [h.segment for h in store.hypotheses("s1")] == [2, 1, 0, 0]
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
