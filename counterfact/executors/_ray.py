"""Units on a Ray cluster: long-lived worker actors over one shared store.

Each worker is an actor that keeps a `WorkerContext` (its own store engine, loaded models, built
graphs) and takes up to `concurrency` units at once in threads, like the local executor, so one
worker behaves as one local process. The driver only hands out units and gathers results.

Faults: when a worker dies with units in flight (its process killed, its node lost), the driver
replaces it and hands those units to live workers. A retried unit first discards what the lost
attempt wrote under its run id, so the store ends with one run per unit. Retrying in the driver
rather than with Ray's `max_task_retries` moves the unit at once to a worker whose state is
warm, instead of waiting for the dead actor to restart and reload.

The model-call cap (`--endpoint-limit`) is an async actor that every worker asks before each
call, so it holds across the cluster; a dead worker's places are given back by the driver.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.engine import make_url

from counterfact._errors import CounterfactError
from counterfact.agents import CallLimit, set_call_limit
from counterfact.executors._base import (
    Executor,
    ExecutorKind,
    OnResult,
    Unit,
    WorkerContext,
)
from counterfact.store import TraceStore

NAMESPACE = "counterfact"
MAX_ATTEMPTS = 3  # a unit lost with its worker this many times fails the map
# what workers need of the driver's environment: the store, model endpoints, export, offline hub
_ENV_PREFIXES = ("COUNTERFACT_", "OPENAI_", "OTEL_", "HF_", "TRANSFORMERS_")


class RayUnavailable(CounterfactError):
    """Ray is not installed, or the cluster cannot be reached or used with this store."""


class _Worker:
    """The actor: a warm context that performs units."""

    def __init__(self, store_url: str, limiter: Any, per_endpoint: int | None) -> None:
        import ray

        self.context = WorkerContext(TraceStore(store_url))
        if limiter is not None and per_endpoint is not None:
            holder = ray.get_runtime_context().get_actor_id()
            set_call_limit(_ClusterCallLimit(limiter, per_endpoint, holder))

    def ready(self) -> int:
        return os.getpid()

    def perform(self, unit: Unit, attempt: int) -> Any:
        return unit.perform(self.context, attempt=attempt)


class _EndpointLimiter:
    """Async actor: per-endpoint places for model calls, held by workers."""

    def __init__(self, per_endpoint: int) -> None:
        import asyncio

        self._asyncio = asyncio
        self.per_endpoint = per_endpoint
        self._places: dict[str, Any] = {}
        self._held: dict[str, dict[str, int]] = {}
        self._in_flight: dict[str, int] = {}
        self._peak: dict[str, int] = {}

    async def acquire(self, endpoint: str, holder: str) -> None:
        place = self._places.setdefault(endpoint, self._asyncio.Semaphore(self.per_endpoint))
        await place.acquire()
        held = self._held.setdefault(holder, {})
        held[endpoint] = held.get(endpoint, 0) + 1
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        self._peak[endpoint] = max(self._peak.get(endpoint, 0), self._in_flight[endpoint])

    async def release(self, endpoint: str, holder: str) -> None:
        held = self._held.get(holder, {})
        if held.get(endpoint, 0) > 0:
            held[endpoint] -= 1
            self._in_flight[endpoint] -= 1
            self._places[endpoint].release()

    async def release_holder(self, holder: str) -> None:
        for endpoint, count in self._held.pop(holder, {}).items():
            for _ in range(count):
                self._in_flight[endpoint] -= 1
                self._places[endpoint].release()

    async def peaks(self) -> dict[str, int]:
        return dict(self._peak)


class _ClusterCallLimit(CallLimit):
    def __init__(self, limiter: Any, per_endpoint: int, holder: str) -> None:
        self.limiter, self.per_endpoint, self.holder = limiter, per_endpoint, holder

    def acquire(self, endpoint: str) -> None:
        import ray

        ray.get(self.limiter.acquire.remote(endpoint, self.holder))

    def release(self, endpoint: str) -> None:
        import ray

        ray.get(self.limiter.release.remote(endpoint, self.holder))


@dataclass(eq=False)
class _Handle:
    actor: Any
    id: str
    in_flight: int = 0


class RayExecutor(Executor):
    """`workers` actors of `concurrency` units each. `address`: None starts a Ray of this
    machine on loopback; "auto" joins the cluster `ray start` made; "ray://host:port" is Ray
    Client. `endpoint_limit`: most model calls in flight per endpoint, cluster-wide."""

    kind: ClassVar[ExecutorKind] = "ray"

    def __init__(
        self,
        store: TraceStore,
        *,
        address: str | None = None,
        workers: int = 2,
        concurrency: int = 8,
        endpoint_limit: int | None = None,
    ) -> None:
        if address is None:
            # Ray resolves 127.0.0.1 to the machine's address unless told not to, and reads
            # this when it is imported: then a Ray started here listens on loopback only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--executor ray needs Ray: pip install 'counterfact[ray]'") from None
        if workers < 1 or concurrency < 1:
            raise CounterfactError(f"workers and concurrency must be at least 1, got {workers} and {concurrency}")
        self._ray = ray
        self.concurrency = concurrency
        self.width = workers * concurrency
        self.store_url = _shared_url(store)
        self._started = not ray.is_initialized()
        if self._started:
            _connect(ray, address)
        if store.backend.single_machine:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            if len(nodes) > 1:
                self.close()
                raise RayUnavailable(
                    f"the Ray cluster has {len(nodes)} nodes and the store is a SQLite file, which only one "
                    "machine can open: point COUNTERFACT_DB (or --db) at a PostgreSQL database"
                )
        self.limiter = (
            ray.remote(_EndpointLimiter).options(num_cpus=0).remote(endpoint_limit) if endpoint_limit else None
        )
        self._endpoint_limit = endpoint_limit
        self._actor_class = ray.remote(_Worker)
        self._cond = threading.Condition()
        self._workers = [self._start_worker() for _ in range(workers)]
        try:
            ray.get([w.actor.ready.remote() for w in self._workers])
        except Exception as exc:
            self.close()
            raise RayUnavailable(f"Ray workers could not start: {_first_line(exc)}") from None

    # -- workers ---------------------------------------------------------------------------

    def _start_worker(self) -> _Handle:
        actor = self._actor_class.options(
            max_concurrency=self.concurrency,
            num_cpus=0,  # they wait on models and the database; placement spreads them
            scheduling_strategy="SPREAD",
            max_restarts=0,
            runtime_env={"env_vars": _worker_env()},
        ).remote(self.store_url, self.limiter, self._endpoint_limit)
        return _Handle(actor=actor, id=actor._actor_id.hex())

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for fault tests and diagnostics)."""
        return self._ray.get([w.actor.ready.remote() for w in self._workers])

    def endpoint_peaks(self) -> dict[str, int]:
        """Most model calls seen in flight per endpoint across the cluster."""
        return self._ray.get(self.limiter.peaks.remote()) if self.limiter is not None else {}

    def _take(self, block: bool) -> _Handle | None:
        with self._cond:
            while True:
                free = [w for w in self._workers if w.in_flight < self.concurrency]
                if free:
                    worker = min(free, key=lambda w: w.in_flight)
                    worker.in_flight += 1
                    return worker
                if not block:
                    return None
                self._cond.wait()

    def _give_back(self, worker: _Handle) -> None:
        with self._cond:
            worker.in_flight -= 1
            self._cond.notify_all()

    def _lost(self, worker: _Handle) -> None:
        """Replace a dead worker (once, whichever map notices first)."""
        with self._cond:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            self._workers.append(self._start_worker())
            self._cond.notify_all()
        if self.limiter is not None:
            self.limiter.release_holder.remote(worker.id)
        self._ray.kill(worker.actor, no_restart=True)

    # -- work -------------------------------------------------------------------------------

    def map(self, units: Sequence[Unit], on_result: OnResult | None = None) -> list[Any]:
        ray = self._ray
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            RayActorError,
            WorkerCrashedError,
        )

        lost_errors = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)
        results: list[Any] = [None] * len(units)
        attempts = [0] * len(units)
        queue = deque(range(len(units)))
        in_flight: dict[Any, tuple[int, _Handle]] = {}
        try:
            while queue or in_flight:
                while queue:
                    worker = self._take(block=not in_flight)
                    if worker is None:
                        break
                    index = queue.popleft()
                    attempts[index] += 1
                    ref = worker.actor.perform.remote(units[index], attempts[index])
                    in_flight[ref] = (index, worker)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.05 if queue else None)
                for ref in done:
                    index, worker = in_flight.pop(ref)
                    self._give_back(worker)
                    try:
                        result = ray.get(ref)
                    except lost_errors as exc:
                        self._lost(worker)
                        if attempts[index] >= MAX_ATTEMPTS:
                            raise CounterfactError(
                                f"{units[index].label} was lost with its worker {attempts[index]} times: {_first_line(exc)}"
                            ) from None
                        queue.appendleft(index)
                        continue
                    results[index] = result
                    if on_result is not None:
                        on_result(index, result)
        except BaseException:
            for ref, (_, worker) in in_flight.items():
                ray.cancel(ref)
                self._give_back(worker)
            raise
        return results

    def close(self) -> None:
        for worker in getattr(self, "_workers", []):
            self._ray.kill(worker.actor, no_restart=True)
        self._workers = []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at `address`, or start a Ray of this machine bound to loopback."""
    has_token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ or (
        Path.home() / ".ray" / "auth_token"
    ).exists()
    if address and "RAY_AUTH_MODE" not in os.environ and has_token:
        # `ray start` (2.60) turns token authentication on and writes the token to ~/.ray (or
        # the user gives one); a driver sends it only when asked to
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        if address:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(  # "local": a new Ray of this process, never one `ray start` left running
                address="local", namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=os.cpu_count(),
            )
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayUnavailable(f"cannot start or reach {where}: {_first_line(exc)}") from None


def _shared_url(store: TraceStore) -> str:
    """The store's URL as every worker opens it (password kept: workers must log in)."""
    url = make_url(store.url)
    if not store.backend.shared_by_processes(url):
        raise RayUnavailable("an in-memory SQLite store cannot be shared with Ray workers: use a file or PostgreSQL")
    return url.render_as_string(hide_password=False)


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    # users' graphs and checks are imported by "module:attribute": from where the driver runs
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
