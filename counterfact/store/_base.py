"""What the layers above ask of a store: read runs and steps, write runs, keep the
interventions and verdicts made of them, and open a connection or a transaction for records
of their own. `TraceStore` is its SQLAlchemy implementation; code that needs no more than this
is typed against `Store`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from counterfact.store._models import (
    InterventionRecord,
    Outcome,
    RunRecord,
    RunStatus,
    StepRecord,
    VerdictKind,
    VerdictRecord,
)


class Store(Protocol):
    """Runs with their steps, and the interventions and verdicts made of them."""

    @property
    def display_url(self) -> str:
        """Where the store is, for people to read (no password)."""
        ...

    def connect(self) -> AbstractContextManager[Connection]:
        """A connection to read on."""
        ...

    def begin(self, *, blind: bool = False) -> AbstractContextManager[Connection]:
        """One write transaction; `blind`: it reads nothing back."""
        ...

    def close(self) -> None: ...

    # -- runs and steps

    def create_run(self, record: RunRecord, conn: Connection | None = None) -> RunRecord: ...

    def finish_run(
        self, run_id: str, status: RunStatus, *, outcome: Outcome | None = None, error: str | None = None
    ) -> None: ...

    def set_labels(self, run_id: str, labels: dict[str, Any]) -> None: ...

    def write_run(self, run: RunRecord, steps: Sequence[StepRecord], conn: Connection | None = None) -> list[StepRecord]:
        """Write a whole run with its steps, chained."""
        ...

    def resolve_run_id(self, ref: str) -> str:
        """The full id of the run an id or unique prefix names."""
        ...

    def get_run(self, ref: str) -> RunRecord: ...

    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        labels: dict[str, str] | None = None,
        since: datetime | None = None,
        parent: str | None = None,
        text: str | None = None,
        source: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[RunRecord]: ...

    def steps(
        self, run_ref: str, *, payloads: bool = True, histories: bool = True, indices: Sequence[int] | None = None
    ) -> list[StepRecord]: ...

    def get_value(self, digest: str | None) -> Any:
        """A stored payload by its digest."""
        ...

    # -- interventions and verdicts

    def add_intervention(self, run_id: str, fork_step: int, spec: dict[str, Any]) -> InterventionRecord: ...

    def get_intervention(self, intervention_id: str) -> InterventionRecord: ...

    def add_verdict(
        self, intervention_id: str, run_id: str, verdict: VerdictKind, reason: str, stats: dict[str, Any],
        *, verdict_id: str | None = None,
    ) -> VerdictRecord: ...

    def verdicts(self, *, run_id: str | None = None, intervention_id: str | None = None) -> list[VerdictRecord]: ...

    def get_verdict(self, verdict_id: str) -> VerdictRecord: ...
