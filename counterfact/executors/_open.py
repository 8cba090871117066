"""Choosing an executor from settings (what the CLI's --executor options fill in)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from counterfact.agents import LocalCallLimit, set_call_limit
from counterfact.executors._base import Executor, ExecutorKind
from counterfact.executors._local import LocalExecutor
from counterfact.executors._ray import RayExecutor
from counterfact.store import TraceStore


class ExecutorSettings(BaseModel):
    kind: ExecutorKind = "local"
    address: str | None = None  # ray: "auto", "ray://host:port", or None for a local Ray
    workers: int = Field(default=2, ge=1)  # ray: worker actors
    concurrency: int = Field(default=8, ge=1)  # units in flight per process (local) or worker
    endpoint_limit: int | None = Field(default=None, ge=1)  # model calls in flight per endpoint


def open_executor(store: TraceStore, settings: ExecutorSettings | None = None) -> Executor:
    """The executor `settings` ask for. With the local executor the endpoint limit is this
    process's; on Ray it is the cluster's."""
    settings = settings or ExecutorSettings()
    if settings.kind == "ray":
        return RayExecutor(
            store, address=settings.address, workers=settings.workers,
            concurrency=settings.concurrency, endpoint_limit=settings.endpoint_limit,
        )
    if settings.endpoint_limit is not None:
        set_call_limit(LocalCallLimit(settings.endpoint_limit))
    return LocalExecutor(store, concurrency=settings.concurrency)
