"""Recorded or imported runs turned into a task suite: once a failure is fixed, its run becomes
a regression test.

A run becomes a task when its input and its expected answer are known: from the task a
`counterfact run` stored with it, from the expected answer a check (`--expect`) stored with it,
or from the ground truth an imported log carried (Who&When's `ground_truth`, say). A run
recorded from a user's graph keeps its graph input verbatim, so the task runs on the graph as
the run did.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from counterfact._errors import validation_message
from counterfact.graphs._refs import CHECK_LABEL, GRAPH_LABEL
from counterfact.graphs._target import question_of
from counterfact.graphs._tasks import Checker, Suite, SuiteError, Task
from counterfact.store import RunRecord, TraceStore

# labels an imported log's expected answer is stored under, in the order they are looked at
EXPECTED_LABELS = ("expected_answer", "ground_truth", "expected")


class SkippedRun(BaseModel):
    """A run that gave no task, and why."""

    run_id: str
    reason: str


class RunsSuite(BaseModel):
    """The suite made from runs, and the runs left out of it."""

    suite: Suite
    skipped: list[SkippedRun] = Field(default_factory=list)


class NotATask(SuiteError):
    """A run whose input or expected answer is not known."""


def task_from_run(run: RunRecord) -> Task:
    """The task `run` was a run of; `NotATask` says what is missing or malformed."""
    try:
        return _task_of(run)
    except ValidationError as exc:
        raise NotATask(f"run {run.id[:12]}: its stored task or check is not valid ({validation_message(exc)})") from None


def _task_of(run: RunRecord) -> Task:
    labels = run.labels
    if "workflow_spec" in labels and isinstance(labels.get("task"), dict):  # made by `counterfact run`
        return Task.model_validate(labels["task"])
    question = question_of(run.task_input) if run.task_input else ""
    if not question.strip():
        raise NotATask(f"run {run.id[:12]}: its input is not known")
    check = labels.get(CHECK_LABEL)
    answer: Any = None
    checker = Checker()
    answer_path: str | None = None
    if isinstance(check, dict) and "expect" in check:
        answer, checker, answer_path = check["expect"], Checker(kind=check.get("checker", "normalized")), check.get("answer")
    else:
        answer = next((labels[k] for k in EXPECTED_LABELS if labels.get(k) not in (None, "")), None)
    if answer is None:
        how = f"its check is {check['function']}, a function of the final state" if isinstance(check, dict) and "function" in check else "no check or ground truth is stored with it"
        raise NotATask(f"run {run.id[:12]}: its expected answer is not known ({how})")
    task_id = str(labels.get("task_id") or run.task_input.get("question_ID") or f"run-{run.id[:12]}")
    return Task(
        id=task_id, question=question, answer=str(answer), checker=checker, answer_path=answer_path,
        graph_input=run.task_input if GRAPH_LABEL in labels else None,
    )


def suite_from_runs(store: TraceStore, run_refs: Sequence[str], *, name: str, skip_unknown: bool = False) -> RunsSuite:
    """A suite with one task per distinct task of the runs, in the order given; a run whose
    task is not known is an error, or with `skip_unknown` is left out and listed."""
    tasks: list[Task] = []
    skipped: list[SkippedRun] = []
    for ref in run_refs:
        run = store.get_run(ref)
        try:
            task = task_from_run(run)
        except NotATask as exc:
            if not skip_unknown:
                raise
            skipped.append(SkippedRun(run_id=run.id, reason=str(exc).split(": ", 1)[1]))
            continue
        same = next((t for t in tasks if t.id == task.id), None)
        if same == task:
            skipped.append(SkippedRun(run_id=run.id, reason=f"the same task as another run ({task.id})"))
            continue
        if same is not None:
            task.id = f"{task.id}-{run.id[:8]}"  # another input under the same id
        tasks.append(task)
    if not tasks:
        raise SuiteError("none of the runs gives a task: " + "; ".join(f"{s.run_id[:12]}: {s.reason}" for s in skipped))
    return RunsSuite(suite=Suite(name=name, tasks=tasks), skipped=skipped)


def write_suite(suite: Suite, path: Path) -> None:
    """The suite as YAML, written whole or not at all."""
    text = yaml.safe_dump(suite.model_dump(mode="json", exclude_defaults=True), sort_keys=False, allow_unicode=True)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SuiteError(f"cannot write {path}: folder {folder} does not exist")
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise SuiteError(f"cannot write {path}: {exc.strerror}") from None
