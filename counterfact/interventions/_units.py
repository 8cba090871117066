"""Replays as units of work, so that an executor can run them here or on a cluster."""

from __future__ import annotations

import uuid
from typing import Any

from counterfact.executors import Executor, Unit, WorkerContext
from counterfact.interventions._replay import (
    Replayer,
    ReplayerSpec,
    ReplayPlan,
    ReplayResult,
)
from counterfact.store import discard_run


class ReplayUnit(Unit):
    """One replay; the worker builds the run's replayer once and keeps it."""

    target: ReplayerSpec
    plan: ReplayPlan
    child_id: str
    arm: str
    seed: int | None = None
    temperature: float | None = None
    live_tools: bool | list[str] = False  # every tool, or those named, run again instead of answering as recorded
    intervention_id: str | None = None
    labels: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return f"replay {self.child_id[:12]} of run {self.target.run_id[:12]} ({self.arm}, seed {self.seed})"

    def perform(self, context: WorkerContext, *, attempt: int = 1) -> ReplayResult:
        if attempt > 1:
            discard_run(context.store, self.child_id)  # what the lost attempt wrote
        # models are shared across replayers of a process anyway (`shared_model`)
        replayer = context.warm(_key(self.target), lambda: self.target.build(context.store))
        labels = {**self.labels, "attempt": attempt} if attempt > 1 else self.labels
        return replayer.replay(
            self.plan, arm=self.arm, seed=self.seed, temperature=self.temperature, live_tools=self.live_tools,
            intervention_id=self.intervention_id, labels=labels, child_id=self.child_id,
        )


def replay_unit(replayer: Replayer, plan: ReplayPlan, *, arm: str, **options: Any) -> ReplayUnit:
    """A unit replaying `plan` of the replayer's run (a fresh child id)."""
    return ReplayUnit(target=replayer.spec, plan=plan, child_id=uuid.uuid4().hex, arm=arm, **options)


def lend(executor: Executor, replayer: Replayer) -> None:
    """Let workers of this process use the driver's replayer (its graph may be an object)."""
    executor.keep(_key(replayer.spec), replayer)


def _key(spec: ReplayerSpec) -> tuple[str, str]:
    return ("replayer", spec.model_dump_json())
