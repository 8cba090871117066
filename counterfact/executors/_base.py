"""Units of work, the warm state workers keep between them, and the executor interface.

A unit (one suite run, one replay, one attribution) is a pydantic model: the driver makes it,
an executor hands it to a worker, and the worker performs it against its `WorkerContext`, which
keeps what is costly to make (the store's engine, loaded models, built graphs) from one unit to
the next. A unit that makes a run carries the run's id, chosen by the driver: when a unit is
retried after its worker died, it first discards what the lost attempt wrote under that id, so
the store ends with exactly one run per unit.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel

from counterfact.store import TraceStore

T = TypeVar("T")
ExecutorKind = Literal["local", "ray"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "ray")
OnResult = Callable[[int, Any], None]  # (index of the unit, its result), as each unit ends


class WorkerContext:
    """What one worker keeps warm between units. Thread-safe: a worker takes several units at
    once, so that a local model batches their requests."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._values: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def warm(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value kept under `key`, made once by `make` (others asking meanwhile wait)."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                value = make()
                with self._lock:
                    self._values[key] = value
            return self._values[key]

    def keep(self, key: Hashable, value: Any) -> None:
        """Seed the context with a value the driver already has (a replayer, a model pool)."""
        with self._lock:
            self._values[key] = value


class Unit(BaseModel, ABC):
    """One piece of work a worker performs; `label` names it in errors."""

    model_config = {"arbitrary_types_allowed": True}

    @property
    @abstractmethod
    def label(self) -> str: ...

    @abstractmethod
    def perform(self, context: WorkerContext, *, attempt: int = 1) -> Any:
        """Do the work; `attempt` > 1 when an earlier attempt was lost with its worker."""


class Executor(ABC):
    """Performs units, `width` at a time; `map` may be called from several driver threads at
    once (they share the width)."""

    kind: ClassVar[ExecutorKind]
    width: int

    @abstractmethod
    def map(self, units: Sequence[Unit], on_result: OnResult | None = None) -> list[Any]:
        """Perform every unit; results in the units' order. `on_result` is called in the
        calling thread as each unit ends. The first unit that raises stops the map."""

    def keep(self, key: Hashable, value: Any) -> None:
        """Seed the workers' context with a driver-side value (only where workers share the
        driver's process; elsewhere they build their own from the unit)."""

    def close(self) -> None:
        """Release workers and threads."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
