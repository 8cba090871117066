"""The debugger's records: its sessions and the hypotheses they propose, kept in the store's
database so that an interrupted session resumes and the CLI and the viewer show it again.

They belong to the debugger, not to the store, which knows nothing of debugging: `DebugLog`
reads and writes them through any `Store`. Their tables (`debug_sessions`, `hypotheses`)
stay in `counterfact.store.schema` and its migrations, because one database has one schema,
migrated as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field
from sqlalchemy import func, insert, select, update

from counterfact.store import Store, StoreError, new_id, require_row, row_of, utcnow
from counterfact.store.schema import DebugSession, Hypothesis, Run, Verdict

DebugStatus = Literal["running", "done"]
# verified: decided by its verdict; undecided: fixes tried, none decided it (the note says why)
HypothesisStatus = Literal["proposed", "verified", "undecided", "skipped"]


class DebugSpend(BaseModel):
    """What a debug session has used of its budget so far."""

    replays: int = 0
    tokens: int = 0
    seconds: float = 0.0


class DebugSessionRecord(BaseModel):
    """One debug session of a failed run: its strategies, settings, spend and progress."""

    id: str = Field(default_factory=new_id)
    run_id: str
    strategies: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)  # budget, pairs, samples, temperature
    status: DebugStatus = "running"
    spent: DebugSpend = Field(default_factory=DebugSpend)
    completed: list[str] = Field(default_factory=list)  # the stages finished, in order
    created_at: datetime = Field(default_factory=utcnow)


class HypothesisRecord(BaseModel):
    """A suspected cause of a failure (agent, step, reason) and the edit that tests it."""

    id: str = Field(default_factory=new_id)
    session_id: str
    seq: int  # 0-based, in the order the session proposed them
    strategy: str  # grounded | llm | resample | patch: the first that proposed it
    segment: int = 0  # the segment of the run (between planning steps) the step lies in
    step: int | None = None
    agent: str | None = None
    reason: str = ""
    intervention: dict[str, Any] | None = None
    status: HypothesisStatus = "proposed"
    verdict_id: str | None = None
    note: str = ""  # why skipped, or what it cost
    reference_run_id: str | None = None  # the successful run a patch hypothesis draws on
    evidence: dict[str, Any] = Field(default_factory=dict)  # details for the report


def _one_of(value: str, kind: Any, what: str) -> str:
    """`value` if it is one of the Literal `kind`'s values, else a StoreError naming them."""
    allowed = get_args(kind)
    if value not in allowed:
        raise StoreError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


class DebugLog:
    """Debug sessions and their hypotheses, in a store's database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_session(self, run_id: str, strategies: Sequence[str], settings: dict[str, Any]) -> DebugSessionRecord:
        """Start a running debug session of `run_id`, with nothing spent or completed."""
        record = DebugSessionRecord(run_id=run_id, strategies=list(strategies), settings=settings)
        with self.store.begin() as conn:
            require_row(conn, Run, run_id, "run", self.store.display_url)
            conn.execute(insert(DebugSession.__table__), record.model_dump())
        return record

    def unfinished_session(self, run_id: str, strategies: Sequence[str]) -> DebugSessionRecord | None:
        """The newest running session of `run_id` with the same set of strategies (in any
        order), to resume; None when there is none."""
        return next(iter(self.sessions(run_id, strategies, status="running")), None)

    def sessions(
        self, run_id: str, strategies: Sequence[str] | None = None, *, status: DebugStatus | None = None
    ) -> list[DebugSessionRecord]:
        """The sessions of `run_id`, newest first; only those with this set of strategies (in
        any order) and this status, when given."""
        query = select(DebugSession.__table__).where(DebugSession.run_id == run_id)
        if status is not None:
            query = query.where(DebugSession.status == status)
        with self.store.connect() as conn:
            rows = conn.execute(query.order_by(DebugSession.created_at.desc(), DebugSession.id.desc())).mappings()
            return [
                DebugSessionRecord.model_validate(dict(row))
                for row in rows
                if strategies is None or set(row["strategies"]) == set(strategies)
            ]

    def resolve_session_id(self, ref: str) -> str:
        """The full id of the debug session that `ref` (an id or a unique prefix) names."""
        with self.store.connect() as conn:
            ids = conn.execute(
                select(DebugSession.id).where(DebugSession.id.startswith(ref, autoescape=True)).limit(2)
            ).scalars().all()
        if ref in ids or len(ids) == 1:
            return ref if ref in ids else ids[0]
        if ids:
            raise StoreError(f"debug session id prefix {ref!r} is ambiguous; give more characters")
        raise StoreError(f"no debug session with id {ref!r} in {self.store.display_url}")

    def get_session(self, session_id: str) -> DebugSessionRecord:
        with self.store.connect() as conn:
            return DebugSessionRecord.model_validate(
                row_of(conn, DebugSession, session_id, "debug session", self.store.display_url)
            )

    def update_session(
        self,
        session_id: str,
        *,
        spent: DebugSpend | None = None,
        completed: Sequence[str] | None = None,
        status: DebugStatus | None = None,
    ) -> DebugSessionRecord:
        """Replace the fields given (`completed` as a whole list); returns the session as stored."""
        values: dict[str, Any] = {}
        if spent is not None:
            values["spent"] = DebugSpend.model_validate(spent).model_dump()
        if completed is not None:
            values["completed"] = [str(stage) for stage in completed]
        if status is not None:
            values["status"] = _one_of(status, DebugStatus, "debug session status")
        with self.store.begin() as conn:
            if values:
                conn.execute(update(DebugSession.__table__).where(DebugSession.id == session_id).values(**values))
            return DebugSessionRecord.model_validate(
                row_of(conn, DebugSession, session_id, "debug session", self.store.display_url)
            )

    def add_hypothesis(
        self,
        session_id: str,
        *,
        strategy: str,
        segment: int,
        step: int | None,
        agent: str | None,
        reason: str,
        intervention: dict[str, Any] | None,
        status: HypothesisStatus = "proposed",
        note: str = "",
        reference_run_id: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> HypothesisRecord:
        """Add a hypothesis to a session, numbered (`seq`) after the session's others.

        Concurrent writers get distinct, dense numbers: on PostgreSQL the session's row is
        locked first (SELECT ... FOR UPDATE), so writers to one session queue; the number is
        counted by the INSERT itself, which on SQLite runs under the database's write lock
        (Python's sqlite3 begins the transaction at the first write, not at the first read,
        so a count read before the insert could be stale). A unique (session_id, seq)
        constraint backs this up.
        """
        record = HypothesisRecord(
            session_id=session_id, seq=0, strategy=strategy, segment=segment, step=step,
            agent=agent, reason=reason, intervention=intervention, status=status, note=note,
            reference_run_id=reference_run_id, evidence=evidence or {},
        )
        count = select(func.count()).select_from(Hypothesis).where(Hypothesis.session_id == session_id).scalar_subquery()
        with self.store.begin() as conn:
            locked = conn.execute(select(DebugSession.id).where(DebugSession.id == session_id).with_for_update()).first()
            if locked is None:
                raise StoreError(f"no debug session with id {session_id!r} in {self.store.display_url}")
            if reference_run_id is not None:
                require_row(conn, Run, reference_run_id, "run", self.store.display_url)
            seq = conn.execute(
                insert(Hypothesis.__table__)
                .values(**record.model_dump(exclude={"seq"}), seq=count)
                .returning(Hypothesis.seq)
            ).scalar_one()
        return record.model_copy(update={"seq": seq})

    def hypotheses(self, session_id: str) -> list[HypothesisRecord]:
        """A session's hypotheses in the order they were proposed."""
        with self.store.connect() as conn:
            require_row(conn, DebugSession, session_id, "debug session", self.store.display_url)
            rows = conn.execute(
                select(Hypothesis.__table__).where(Hypothesis.session_id == session_id).order_by(Hypothesis.seq)
            ).mappings()
            return [HypothesisRecord.model_validate(dict(r)) for r in rows]

    def update_hypothesis(
        self,
        hypothesis_id: str,
        *,
        status: HypothesisStatus | None = None,
        verdict_id: str | None = None,
        note: str | None = None,
        intervention: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> HypothesisRecord:
        """Set the fields given; returns the hypothesis as stored."""
        values: dict[str, Any] = {}
        if intervention is not None:
            values["intervention"] = intervention
        if evidence is not None:
            values["evidence"] = evidence
        if status is not None:
            values["status"] = _one_of(status, HypothesisStatus, "hypothesis status")
        if verdict_id is not None:
            values["verdict_id"] = verdict_id
        if note is not None:
            values["note"] = note
        where = self.store.display_url
        with self.store.begin() as conn:
            require_row(conn, Hypothesis, hypothesis_id, "hypothesis", where)
            if verdict_id is not None:
                require_row(conn, Verdict, verdict_id, "verdict", where)
            if values:
                conn.execute(update(Hypothesis.__table__).where(Hypothesis.id == hypothesis_id).values(**values))
            return HypothesisRecord.model_validate(row_of(conn, Hypothesis, hypothesis_id, "hypothesis", where))
