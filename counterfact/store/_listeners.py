"""Who hears of what a store wrote, once it is committed: the live telemetry export, found
through entry points so that the store imports none of the formats."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, event

from counterfact.store._base import Store
from counterfact.store._models import RunRecord, StepRecord, VerdictRecord

log = logging.getLogger("counterfact.store")

LISTENER_GROUP = "counterfact.store_listeners"  # the entry points that name listener factories
_AFTER_COMMIT = "cf_after_commit"  # connection info: what to do once the transaction commits


class StoreListener(Protocol):
    """Told of what a store wrote once it is committed (never of a rolled-back step): the
    live telemetry export. Formats hang on the store through the
    `counterfact.store_listeners` entry points, so the store imports none of them."""

    def step(self, redact: Callable[[Any], Any], run_id: str, step: StepRecord) -> None: ...

    def run_finished(self, store: Store, run: RunRecord) -> None: ...

    def verification(self, redact: Callable[[Any], Any], verdict: VerdictRecord, replays: Sequence[RunRecord],
                     fork_step: int | None) -> None: ...

    def flush(self, timeout_millis: int = 30_000) -> bool: ...


@cache
def listeners() -> tuple[Callable[[], StoreListener | None], ...]:
    """The listener factories installed packages declare (the OTel live export among them),
    loaded when the first store opens, so that a user who only records gets them too. Each is
    asked in order as a store opens; the first listener given is the store's `live` one."""
    loaded = []
    for point in entry_points(group=LISTENER_GROUP):
        try:
            loaded.append(point.load())
        except (ImportError, AttributeError) as exc:  # a broken plug-in must not stop recording
            log.warning("counterfact: store listener %s (%s) cannot be loaded, left out: %s", point.name, point.value, exc)
    return tuple(loaded)


def live_listener(engine: Engine) -> StoreListener | None:
    """The first listener the factories give, with `engine`'s commits set to tell it what
    `after_commit` queued (and its rollbacks to forget it); None when none is installed."""
    live = next((live for open_ in listeners() if (live := open_()) is not None), None)
    if live is not None:
        event.listen(engine, "commit", _run_after_commit)
        event.listen(engine, "rollback", lambda conn: conn.info.pop(_AFTER_COMMIT, None))
    return live


def after_commit(conn: Connection, action: Callable[[], None]) -> None:
    """Run `action` once `conn`'s transaction commits; never if it rolls back."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(action)


def _run_after_commit(conn: Connection) -> None:
    for action in conn.info.pop(_AFTER_COMMIT, []):
        action()
