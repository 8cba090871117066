"""The default executor: threads of this process over one shared context (one store engine,
one set of models), so a local model batches the concurrent units' requests."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar

from counterfact.executors._base import (
    Executor,
    ExecutorKind,
    OnResult,
    Unit,
    WorkerContext,
)
from counterfact.store import TraceStore


class LocalExecutor(Executor):
    kind: ClassVar[ExecutorKind] = "local"

    def __init__(self, store: TraceStore, *, concurrency: int = 8) -> None:
        self.width = max(1, concurrency)
        self.context = WorkerContext(store)
        self._pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="counterfact-unit")

    def keep(self, key: Hashable, value: Any) -> None:
        self.context.keep(key, value)

    def map(self, units: Sequence[Unit], on_result: OnResult | None = None) -> list[Any]:
        futures: dict[Future[Any], int] = {
            self._pool.submit(unit.perform, self.context): i for i, unit in enumerate(units)
        }
        results: list[Any] = [None] * len(units)
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    index = futures[future]
                    results[index] = future.result()
                    if on_result is not None:
                        on_result(index, results[index])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
