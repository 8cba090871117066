"""Units for the executor tests, importable by Ray workers (a class defined inside a test is
not: cloudpickle cannot carry a pydantic ABC by value)."""

from __future__ import annotations

import os
import signal

from counterfact.executors import Unit, WorkerContext


class Fatal(Unit):
    """Kills whichever worker process performs it."""

    @property
    def label(self) -> str:
        return "the fatal unit"

    def perform(self, context: WorkerContext, *, attempt: int = 1) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
