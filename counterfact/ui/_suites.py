"""Suite runs, and two of them compared task by task, as the viewer shows them: the library's
own models (`suite_runs`, `compare_suite_runs`: what `counterfact suite runs` and `counterfact
compare` print), with each task's runs added so that the page can link them."""

from __future__ import annotations

from pydantic import BaseModel

from counterfact._errors import CounterfactError
from counterfact.graphs import (
    SUITE_RUN_LABEL,
    SuiteComparison,
    SuiteError,
    compare_suite_runs,
)
from counterfact.store import TraceStore


class SuiteRunNotFound(CounterfactError):
    """An id or prefix that names no single suite run: the viewer answers 404, not 400."""


class RunLink(BaseModel):
    id: str
    status: str


class TaskRuns(BaseModel):
    """One task's runs in each suite run (none where the task was not run)."""

    a: list[RunLink]
    b: list[RunLink]


class SuiteComparePage(SuiteComparison):
    """`counterfact compare --format json`, key for key, plus each task's runs by task id."""

    runs: dict[str, TaskRuns]


def suite_compare_page(store: TraceStore, a_ref: str, b_ref: str) -> SuiteComparePage:
    """Suite run B against suite run A as `counterfact compare` computes it."""
    try:
        comparison = compare_suite_runs(store, a_ref, b_ref)
    except SuiteError as exc:  # the only one it raises: an id that resolves to no single suite run
        raise SuiteRunNotFound(str(exc)) from None
    a_runs, b_runs = _runs_by_task(store, comparison.a.id), _runs_by_task(store, comparison.b.id)
    runs = {t.task_id: TaskRuns(a=a_runs.get(t.task_id, []), b=b_runs.get(t.task_id, [])) for t in comparison.tasks}
    return SuiteComparePage(**comparison.model_dump(), runs=runs)


def _runs_by_task(store: TraceStore, suite_run: str) -> dict[str, list[RunLink]]:
    """A suite run's runs by task, grouped as the library groups them (`_suite_compare`:
    replays left out, a run without a task id is a task of its own), oldest first."""
    runs = store.list_runs(labels={SUITE_RUN_LABEL: suite_run}, limit=None)
    tasks: dict[str, list[RunLink]] = {}
    for run in sorted((r for r in runs if r.parent_run_id is None), key=lambda r: (r.created_at, r.id)):
        tasks.setdefault(str(run.labels.get("task_id", run.id[:12])), []).append(RunLink(id=run.id, status=run.status))
    return tasks
