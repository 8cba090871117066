"""The Ray executor on a real local cluster, over PostgreSQL: the same results as the local
executor, the endpoint limit across workers, and a worker killed in the middle of replays."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Select, select

from counterfact import CounterfactError
from counterfact.executors import LocalExecutor, RayExecutor, RayUnavailable
from counterfact.graphs import Suite, load_suite, run_suite
from counterfact.interventions import (
    InstructionEdit,
    Intervention,
    Replayer,
    StepRef,
    verify,
)
from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import Run

from ..conftest import _truncate
from ..graphs.scripted import trio_spec
from ..interventions.test_debug import heeds_the_note
from .delayed import DelayedModel
from .units import Fatal

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
SUITE = load_suite("tests/graphs/suite.yaml")
BRAIN = heeds_the_note  # the delayed server's brain in this module (see conftest)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[TraceStore]:
    store = TraceStore.open(pg_url)
    _truncate(store)
    yield store
    store.close()


@contextmanager
def _killing(pid: int, store: TraceStore, running: Select[Any], *, at_least: int) -> Iterator[list[int]]:
    """SIGKILL worker `pid` once `running` finds `at_least` runs under way, a little into their
    first model calls (0.3 s each), while the body runs; yields the pids killed."""
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                if len(conn.execute(running).all()) >= at_least:
                    time.sleep(0.4)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        killer.join()


def _answers(results: list) -> list[tuple[str, int, str, str | None]]:
    return [(r.task_id, r.repeat, r.status, r.answer) for r in results]


def test_a_suite_on_ray_matches_the_local_executor_and_the_endpoint_limit_holds(
    pg_store: TraceStore, brain: DelayedModel, ray_address: str
) -> None:
    suite = Suite(name="tiny", tasks=SUITE.tasks)
    local = run_suite(trio_spec(), suite, pg_store, model="openai:brain", repeats=3, concurrency=4)
    brain.use(heeds_the_note)
    with RayExecutor(pg_store, address=ray_address, workers=2, concurrency=3, endpoint_limit=2) as ray:
        assert len(set(ray.worker_pids()) | {os.getpid()}) == 3  # two worker processes of their own
        remote = run_suite(trio_spec(), suite, pg_store, model="openai:brain", repeats=3, executor=ray)
        peaks = ray.endpoint_peaks()
    assert _answers(remote) == _answers(local)
    assert {r.status for r in remote} == {"succeeded", "failed"}  # "sum" succeeds, "wrong" fails
    # six runs in flight at once across the two workers, but never more than two model calls
    assert brain.peak == 2 and list(peaks.values()) == [2]
    ids = [r.run_id for r in remote]
    assert len(set(ids)) == 6 and all(pg_store.get_run(i).status in ("succeeded", "failed") for i in ids)
    assert all(verify_run(pg_store, i).ok for i in ids)


def test_without_a_limit_the_workers_call_the_model_concurrently(
    pg_store: TraceStore, brain: DelayedModel, ray_address: str
) -> None:
    """The other side of the limit test: the same suite makes more than two calls at once."""
    with RayExecutor(pg_store, address=ray_address, workers=2, concurrency=3) as ray:
        run_suite(trio_spec(), Suite(name="tiny", tasks=SUITE.tasks), pg_store, model="openai:brain", repeats=3, executor=ray)
    assert brain.peak > 2


def test_a_worker_killed_mid_replay_is_replaced_and_its_replays_retried_once(
    pg_store: TraceStore, brain: DelayedModel, ray_address: str
) -> None:
    [failed] = run_suite(trio_spec(), Suite(name="tiny", tasks=[SUITE.task("wrong")]), pg_store, model="openai:brain")
    assert failed.status == "failed"
    replayer = Replayer(pg_store, failed.run_id)
    note = Intervention(edits=[InstructionEdit(at=StepRef(step=1), text="the checker wants 999")])
    plan = replayer.compile(note, None)
    replaying = select(Run.id).where(Run.parent_run_id == failed.run_id, Run.status == "running")

    with RayExecutor(pg_store, address=ray_address, workers=2, concurrency=4) as ray:
        pids = ray.worker_pids()
        with _killing(pids[0], pg_store, replaying, at_least=1) as killed:
            report = verify(replayer, plan, pairs=4, executor=ray)
        assert killed and pids[0] not in ray.worker_pids()  # replaced by a new process
    assert report.verdict == "validated"
    asked = [r.run_id for r in report.treatment + report.control]
    assert len(asked) == 8 and len(set(asked)) == 8
    with pg_store.engine.connect() as conn:
        children = conn.execute(select(Run.id, Run.status, Run.labels).where(Run.parent_run_id == failed.run_id)).all()
    # exactly the eight replays asked for: the lost attempts' rows were discarded before the retries
    assert sorted(c.id for c in children) == sorted(asked)
    assert all(c.status in ("succeeded", "failed") for c in children)
    retried = [c for c in children if c.labels.get("attempt", 1) > 1]
    assert retried, "no replay was in flight on the killed worker"
    assert all(verify_run(pg_store, c.id).ok for c in children)


def test_a_worker_killed_mid_suite_is_replaced_and_its_runs_stored_once(
    pg_store: TraceStore, brain: DelayedModel, ray_address: str
) -> None:
    """A suite run, not a replay: the runs in flight on the killed worker are run again on a
    live one, and the store ends with one finished run per (task, repeat), as a local run has."""
    suite = Suite(name="tiny", tasks=SUITE.tasks)
    local = run_suite(trio_spec(), suite, pg_store, model="openai:brain", repeats=3, concurrency=4)
    _truncate(pg_store)
    with RayExecutor(pg_store, address=ray_address, workers=2, concurrency=3) as ray:
        pids = ray.worker_pids()
        with _killing(pids[0], pg_store, select(Run.id).where(Run.status == "running"), at_least=2) as killed:
            remote = run_suite(trio_spec(), suite, pg_store, model="openai:brain", repeats=3, executor=ray)
        assert killed and pids[0] not in ray.worker_pids()  # replaced by a new process
    assert _answers(remote) == _answers(local)
    with pg_store.engine.connect() as conn:
        stored = conn.execute(select(Run.id, Run.status, Run.labels)).all()
    # exactly the six runs asked for, each finished: the lost attempts' rows were discarded
    assert sorted(r.id for r in stored) == sorted(r.run_id for r in remote)
    assert all(r.status in ("succeeded", "failed") for r in stored)
    assert [r for r in stored if r.labels.get("attempt", 1) > 1], "no run was in flight on the killed worker"
    assert all(verify_run(pg_store, r.id).ok for r in stored)


def test_sqlite_on_a_cluster_of_several_nodes_is_refused(
    tmp_path: os.PathLike, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    store = TraceStore.open(str(tmp_path / "trace.db"))
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    with pytest.raises(RayUnavailable, match="2 nodes and the store is a SQLite file.*PostgreSQL"):
        RayExecutor(store, address=ray_address, workers=1)
    assert not ray.is_initialized()


def test_an_in_memory_store_cannot_be_shared() -> None:
    with pytest.raises(RayUnavailable, match="in-memory SQLite"):
        RayExecutor(TraceStore("sqlite://"), workers=1)


def test_a_unit_lost_again_and_again_fails_with_its_name(pg_store: TraceStore, ray_address: str) -> None:
    """A unit that kills every worker it lands on is not retried forever."""
    with RayExecutor(pg_store, address=ray_address, workers=1, concurrency=1) as ray:
        with pytest.raises(CounterfactError, match="the fatal unit was lost with its worker 3 times"):
            ray.map([Fatal()])


def test_the_local_executor_keeps_order_and_reports_each_result(pg_store: TraceStore) -> None:
    from counterfact.executors import Unit, WorkerContext

    class Sleep(Unit):
        seconds: float

        @property
        def label(self) -> str:
            return f"sleep {self.seconds}"

        def perform(self, context: WorkerContext, *, attempt: int = 1) -> float:
            time.sleep(self.seconds)
            return self.seconds

    seen: list[int] = []
    with LocalExecutor(pg_store, concurrency=3) as local:
        started = time.perf_counter()
        results = local.map([Sleep(seconds=s) for s in (0.3, 0.1, 0.2)], lambda i, _: seen.append(i))
        elapsed = time.perf_counter() - started
    assert results == [0.3, 0.1, 0.2] and seen == [1, 2, 0] and elapsed < 0.5
