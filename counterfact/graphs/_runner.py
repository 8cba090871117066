"""Running workflows on tasks: recorded runs, scored by the task's checker, with progress.

A run keeps in its labels what is needed to rebuild it (the workflow spec, the model spec, the
task with its checker), so that `resume` and replays need nothing but the run id.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, shared_model
from counterfact.executors import Executor, LocalExecutor, Unit, WorkerContext
from counterfact.graphs import RecordedGraph, lost_database, record
from counterfact.graphs._spec import WorkflowSpec, build_graph, parse_workflow
from counterfact.graphs._state import initial_state
from counterfact.graphs._tasks import Suite, Task
from counterfact.store import RunRecord, StoreError, TraceStore, discard_run


class RunSummary(BaseModel):
    """One run of one task, as the summary table shows it."""

    run_id: str
    task_id: str
    repeat: int = 0  # which repeat of its task (0 .. repeats-1)
    status: str
    success: bool
    score: float
    answer: str | None
    expected: str | None
    steps: int
    tokens: int
    seconds: float
    error: str | None = None


class ModelPool:
    """Resolves model specs once per process (`shared_model`): agents sharing a local model, and
    the debugger's hypothesis model when it is the same, share its engine."""

    def __init__(self, override: str | None = None, models: dict[str, ChatModel] | None = None) -> None:
        self.override = override
        self._models: dict[str, ChatModel] = dict(models or {})  # preset specs (tests, embedding apps)
        self._lock = threading.Lock()

    def __call__(self, spec: str) -> ChatModel:
        spec = self.override or spec
        with self._lock:
            if spec not in self._models:
                self._models[spec] = shared_model(spec)
            return self._models[spec]


class WorkflowRunner:
    """A workflow compiled once and recorded into a store; runs tasks on it."""

    def __init__(self, spec: WorkflowSpec, store: TraceStore, models: ModelPool) -> None:
        self.spec = spec
        self.store = store
        self.models = models
        self.model_spec = models.override or spec.model
        self.recorded: RecordedGraph = record(build_graph(spec, models), store, workflow=spec.name)

    def labels(self, task: Task, suite: str, repeat: int) -> dict[str, Any]:
        return {
            "suite": suite,
            "task_id": task.id,
            "repeat": repeat,
            "task": task.model_dump(mode="json"),
            "workflow_spec": self.spec.model_dump(mode="json"),
            "model": self.model_spec,
        }

    def run(
        self,
        task: Task,
        *,
        suite: str = "adhoc",
        repeat: int = 0,
        seed: int | None = None,
        run_id: str | None = None,
        attempt: int = 1,
    ) -> RunSummary:
        """One recorded run of `task`, scored and closed; `attempt` > 1 marks a retry."""
        from counterfact.capture import Directives, with_directives

        started = time.perf_counter()
        labels = self.labels(task, suite, repeat) | ({"attempt": attempt} if attempt > 1 else {})
        run_id = self.recorded.start_run(task.input(), run_id=run_id, labels=labels)
        config = with_directives({"recursion_limit": 100}, Directives(seed=seed))
        result = self.recorded.continue_run(run_id, initial_state(task.input()), config=config)
        return self.score_run(run_id, task, repeat, result.state, result.error, started)

    def score_run(
        self,
        run_id: str,
        task: Task,
        repeat: int,
        state: dict[str, Any] | None,
        error: str | None,
        started: float,
    ) -> RunSummary:
        """Score a finished run with its task's checker and store the outcome."""
        outcome = task.score(state) if error is None else None
        if outcome is not None:
            self.recorded.finish(run_id, outcome)
        run = self.store.get_run(run_id)
        return RunSummary(
            run_id=run_id,
            task_id=task.id,
            repeat=repeat,
            status=run.status,
            success=bool(outcome and outcome.success),
            score=outcome.score if outcome else 0.0,
            answer=(state or {}).get("final_answer"),
            expected=task.answer,
            steps=len(self.store.steps(run_id, payloads=False)),
            tokens=run.total_tokens,
            seconds=time.perf_counter() - started,
            error=error,
        )


INTERRUPTED = "cut off by a lost database connection"  # such runs wait for `resume --interrupted`
START_RETRIES = 2  # a run the lost database kept from starting is started again this often


def _started(store: TraceStore, run_id: str) -> bool:
    """Whether the run has a row (True too when the database cannot say: leave it be)."""
    try:
        return bool(store.existing_run_ids([run_id]))
    except SQLAlchemyError:
        return True


class RunUnit(Unit):
    """One suite run, as a unit of work: the worker builds the workflow once and keeps it."""

    run_id: str
    spec: WorkflowSpec
    model: str | None
    task: Task
    suite: str
    repeat: int
    seed: int | None

    @property
    def label(self) -> str:
        return f"run {self.run_id[:12]} (task {self.task.id}, repeat {self.repeat})"

    def perform(self, context: WorkerContext, *, attempt: int = 1) -> RunSummary:
        if attempt > 1:
            discard_run(context.store, self.run_id)  # what the lost attempt wrote
        runner = runner_in(context, self.spec, self.model)
        retries = 0
        while True:
            try:
                return runner.run(
                    self.task, suite=self.suite, repeat=self.repeat, seed=self.seed, run_id=self.run_id, attempt=attempt
                )
            except SQLAlchemyError as exc:
                if not lost_database(exc):
                    raise
                if retries < START_RETRIES and not _started(context.store, self.run_id):
                    retries += 1
                    time.sleep(retries)  # nothing written yet: start again on a new connection
                    continue
                # cut off mid-run (or the database is still away): the run stays resumable
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return RunSummary(
                    run_id=self.run_id, task_id=self.task.id, repeat=self.repeat, status="running", success=False,
                    score=0.0, answer=None, expected=self.task.answer, steps=0, tokens=0, seconds=0.0,
                    error=f"{INTERRUPTED}: {reason}",
                )


def pool_in(context: WorkerContext, model: str | None) -> ModelPool:
    """The worker's models for a model override (loaded once per worker)."""
    return context.warm(("model-pool", model), lambda: ModelPool(model))


def runner_in(context: WorkerContext, spec: WorkflowSpec, model: str | None) -> WorkflowRunner:
    """The worker's compiled workflow for a spec (built once per worker)."""
    key = ("workflow", spec.model_dump_json(), model)
    return context.warm(key, lambda: WorkflowRunner(spec, context.store, pool_in(context, model)))


def run_suite(
    spec: WorkflowSpec,
    suite: Suite,
    store: TraceStore,
    *,
    model: str | None = None,
    repeats: int = 1,
    limit: int | None = None,
    concurrency: int = 8,
    seed: int | None = None,
    on_result: Callable[[RunSummary, int], None] | None = None,
    pool: ModelPool | None = None,
    executor: Executor | None = None,
) -> list[RunSummary]:
    """Run every task (`repeats` times each) on `executor` (default: `concurrency` threads
    here, so a local model batches them). Results follow the suite's order.

    `on_result(summary, total)` is called as each run ends (for a progress display)."""
    if repeats < 1:
        raise CounterfactError(f"repeats must be at least 1, got {repeats}")
    pool = pool or ModelPool(model)
    for agent in spec.agents:  # fail before any run on a model that cannot be used
        check = getattr(pool(agent.model or spec.model), "check", None)
        if callable(check):
            check()
    units = [
        RunUnit(
            run_id=uuid.uuid4().hex, spec=spec, model=model, task=task, suite=suite.name,
            repeat=repeat, seed=None if seed is None else seed + repeat,
        )
        for task in suite.tasks[:limit]
        for repeat in range(repeats)
    ]
    own = executor is None
    executor = executor or LocalExecutor(store, concurrency=concurrency)
    executor.keep(("model-pool", model), pool)
    try:
        return executor.map(units, None if on_result is None else lambda _, summary: on_result(summary, len(units)))
    finally:
        if own:
            executor.close()


def rebuild(
    store: TraceStore, run: RunRecord, *, model: str | None = None, pool: ModelPool | None = None
) -> tuple[WorkflowRunner, Task]:
    """The runner and task a recorded run was made with (from its labels)."""
    labels = run.labels
    if "workflow_spec" not in labels or "task" not in labels:
        raise StoreError(
            f"run {run.id} was not made by `counterfact run` (no workflow spec in its labels)"
        )
    spec = parse_workflow(labels["workflow_spec"], source=f"run {run.id}")
    runner = WorkflowRunner(spec, store, pool or ModelPool(model or labels.get("model")))
    return runner, Task.model_validate(labels["task"])


def resume_run(
    store: TraceStore, run_ref: str, *, model: str | None = None, pool: ModelPool | None = None
) -> RunSummary:
    """Continue an interrupted run from its last checkpoint, then score it."""
    run = store.get_run(run_ref)
    if run.parent_run_id is not None:  # its edit and seed live with the replayer, not the workflow
        raise StoreError(f"run {run.id} is a replay of run {run.parent_run_id}: resume it with `interventions.resume_replay`")
    runner, task = rebuild(store, run, model=model, pool=pool)
    started = time.perf_counter()
    result = runner.recorded.resume(run.id)
    repeat = int(run.labels.get("repeat", run.labels.get("trial", 0)))  # runs recorded before the rename say "trial"
    return runner.score_run(run.id, task, repeat, result.state, result.error, started)


def summary_rows(results: Sequence[RunSummary]) -> list[list[str]]:
    return [
        [
            r.run_id[:12],
            r.task_id,
            "[green]yes[/green]" if r.success else ("[magenta]error[/magenta]" if r.error else "[red]no[/red]"),
            f"{r.answer!s:.30}" if r.answer is not None else "-",
            r.expected or "-",
            str(r.steps),
            str(r.tokens),
            f"{r.seconds:.1f}",
        ]
        for r in results
    ]
