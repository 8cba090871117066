"""Suite runs, and two of them side by side: which tasks a change fixed, which it broke.

A suite run is every run one `counterfact run --suite` made: they share a `suite_run` label, a
short id given when the suite starts. Replays copy their parent's labels, so runs with a parent
belong to no suite run. A task passes in a suite run when every run of it succeeded.

The paired test is the exact McNemar test: of the tasks whose result changed, are the fixed
ones more (or fewer) than chance would make them? It is a two-sided binomial test of the fixed
count among the changed tasks at one half (`scipy.stats.binomtest`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from counterfact.graphs._tasks import SuiteError
from counterfact.store import RunRecord, TraceStore

SUITE_RUN_LABEL = "suite_run"  # run label: the id of the suite run the run belongs to

Change = Literal["fixed", "broken", "still passing", "still failing", "only in A", "only in B"]


def new_suite_run_id() -> str:
    return uuid.uuid4().hex[:12]


def tag_suite_run(store: TraceStore, run_ids: Sequence[str], suite_run: str) -> None:
    """Mark runs made by a runner that does not label them itself (a workflow's `run_suite`)."""
    for run_id in run_ids:
        run = store.get_run(run_id)
        store.set_labels(run.id, {**run.labels, SUITE_RUN_LABEL: suite_run})


class SuiteRun(BaseModel):
    """One suite run, as a list of them shows it."""

    id: str
    suite: str
    workflow: str
    started: datetime
    runs: int
    tasks: int
    passed: int  # tasks every run of which succeeded


class TaskRun(BaseModel):
    """One run of a task in a suite run, for a report to link to."""

    id: str
    status: str


class TaskChange(BaseModel):
    task_id: str
    change: Change
    a: str  # successes/runs in A ("-" when the task was not run)
    b: str
    a_runs: list[TaskRun] = []  # the task's runs in A, oldest first
    b_runs: list[TaskRun] = []


class SuiteComparison(BaseModel):
    a: SuiteRun
    b: SuiteRun
    tasks: list[TaskChange]
    fixed: int
    broken: int
    still_passing: int
    still_failing: int
    p_value: float  # exact McNemar, two-sided: 1.0 when no task changed
    test: str = "exact McNemar (two-sided binomial test of fixed vs broken tasks, scipy.stats.binomtest)"


def _members(store: TraceStore, suite_run: str) -> list[RunRecord]:
    runs = store.list_runs(labels={SUITE_RUN_LABEL: suite_run}, limit=None)
    return sorted((r for r in runs if r.parent_run_id is None), key=lambda r: (r.created_at, r.id))


def _by_task(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """A suite run's runs by task (a run without a task id is a task of its own)."""
    tasks: dict[str, list[RunRecord]] = {}
    for run in runs:
        tasks.setdefault(str(run.labels.get("task_id", run.id[:12])), []).append(run)
    return tasks


def _passed(runs: Sequence[RunRecord] | None) -> list[bool] | None:
    return None if runs is None else [run.status == "succeeded" for run in runs]


def _summary(suite_run: str, runs: Sequence[RunRecord]) -> SuiteRun:
    tasks = _by_task(runs)
    return SuiteRun(
        id=suite_run, suite=str(runs[0].labels.get("suite", "")), workflow=runs[0].workflow,
        started=runs[0].created_at, runs=len(runs), tasks=len(tasks),
        passed=sum(all(_passed(task) or []) for task in tasks.values()),
    )


def suite_runs(store: TraceStore) -> list[SuiteRun]:
    """Every suite run in the store, newest first."""
    groups: dict[str, list[RunRecord]] = {}
    for run in store.list_runs(limit=None):
        label = run.labels.get(SUITE_RUN_LABEL)
        if isinstance(label, str) and run.parent_run_id is None:
            groups.setdefault(label, []).append(run)
    summaries = [_summary(key, sorted(runs, key=lambda r: (r.created_at, r.id))) for key, runs in groups.items()]
    return sorted(summaries, key=lambda s: s.started, reverse=True)


def resolve_suite_run(store: TraceStore, ref: str) -> str:
    """The suite run an id or unique prefix names."""
    if _members(store, ref):
        return ref
    found = [s.id for s in suite_runs(store) if s.id.startswith(ref)]
    if len(found) != 1:
        problem = "no suite run" if not found else f"{len(found)} suite runs"
        raise SuiteError(f"{problem} with id {ref!r} (see `counterfact suite runs`)")
    return found[0]


def compare_suite_runs(store: TraceStore, a_ref: str, b_ref: str) -> SuiteComparison:
    """Suite run B against suite run A, task by task, with the paired test on the changes."""
    from scipy.stats import (
        binomtest,  # on first use: half a second of every command's start-up
    )

    a_id, b_id = resolve_suite_run(store, a_ref), resolve_suite_run(store, b_ref)
    a_runs, b_runs = _members(store, a_id), _members(store, b_id)
    a_tasks, b_tasks = _by_task(a_runs), _by_task(b_runs)
    rows: list[TaskChange] = []
    for task_id in [*a_tasks, *(t for t in b_tasks if t not in a_tasks)]:
        a_ok, b_ok = _passed(a_tasks.get(task_id)), _passed(b_tasks.get(task_id))
        rows.append(TaskChange(
            task_id=task_id, change=_change(a_ok, b_ok), a=_count(a_ok), b=_count(b_ok),
            a_runs=[TaskRun(id=r.id, status=r.status) for r in a_tasks.get(task_id, [])],
            b_runs=[TaskRun(id=r.id, status=r.status) for r in b_tasks.get(task_id, [])],
        ))
    counts = {change: sum(r.change == change for r in rows) for change in ("fixed", "broken", "still passing", "still failing")}
    changed = counts["fixed"] + counts["broken"]
    p_value = float(binomtest(counts["fixed"], changed, 0.5).pvalue) if changed else 1.0
    return SuiteComparison(
        a=_summary(a_id, a_runs), b=_summary(b_id, b_runs), tasks=rows, fixed=counts["fixed"], broken=counts["broken"],
        still_passing=counts["still passing"], still_failing=counts["still failing"], p_value=p_value,
    )


def _change(a: list[bool] | None, b: list[bool] | None) -> Change:
    if a is None:
        return "only in B"
    if b is None:
        return "only in A"
    passed_a, passed_b = all(a), all(b)
    if passed_a == passed_b:
        return "still passing" if passed_a else "still failing"
    return "fixed" if passed_b else "broken"


def _count(results: list[bool] | None) -> str:
    return "-" if results is None else f"{sum(results)}/{len(results)}"
