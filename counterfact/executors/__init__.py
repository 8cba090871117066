"""Where units of work run: threads of this process (the default) or a Ray cluster."""

from counterfact.executors._base import (
    EXECUTOR_KINDS,
    Executor,
    ExecutorKind,
    OnResult,
    Unit,
    WorkerContext,
)
from counterfact.executors._local import LocalExecutor
from counterfact.executors._open import ExecutorSettings, open_executor
from counterfact.executors._ray import RayExecutor, RayUnavailable

__all__ = [
    "EXECUTOR_KINDS",
    "Executor",
    "ExecutorKind",
    "ExecutorSettings",
    "LocalExecutor",
    "OnResult",
    "RayExecutor",
    "RayUnavailable",
    "Unit",
    "WorkerContext",
    "open_executor",
]
