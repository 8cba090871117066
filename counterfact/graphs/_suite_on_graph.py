"""A task suite run on a user's own LangGraph app: each task's input given to the graph as it
is, each final state checked against the task's expected answer, every run recorded.

A suite made from recorded runs (`suite_from_runs`) keeps what a graph was invoked with
(`graph_input`) and where its answer was in the final state (`answer_path`); any other suite's
task is given to the graph as one user message. A built-in workflow ignores the two fields, so it
can run the same suite file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from counterfact.capture import to_jsonable
from counterfact.graphs._recorder import RecordedGraph, record
from counterfact.graphs._refs import CHECK_LABEL
from counterfact.graphs._runner import RunSummary
from counterfact.graphs._target import ExpectCheck, _load_graph, value_at
from counterfact.graphs._tasks import Checker, Suite, Task
from counterfact.store import Outcome, TraceStore

DEFAULT_ANSWER_PATH = "messages.-1.content"  # a chat graph's last message


def _graph_input(task: Task) -> dict[str, Any]:
    if task.graph_input is not None:
        return task.graph_input
    return {"messages": [{"role": "user", "content": task.question}]}


def _expect_check(task: Task) -> ExpectCheck | None:
    """The check stored with each run, so that `replay` and `debug` score the run as the suite
    did; None when the task's checker has settings an ExpectCheck cannot carry."""
    if task.answer is None or task.checker.kind == "callable" or task.checker != Checker(kind=task.checker.kind):
        return None
    return ExpectCheck(expect=task.answer, checker=task.checker.kind, answer=task.answer_path or DEFAULT_ANSWER_PATH)


def run_graph_suite(
    graph: str,
    suite: Suite,
    store: TraceStore,
    *,
    labels: dict[str, Any] | None = None,
    repeats: int = 1,
    limit: int | None = None,
    concurrency: int = 4,
    on_result: Callable[[RunSummary, int], None] | None = None,
) -> list[RunSummary]:
    """Run every task of `suite` (`repeats` times) on the graph at `graph` ("module:attribute"
    or "file.py:attribute" of a StateGraph, compiled graph or factory), recorded into `store`
    with `labels`; results follow the suite's order."""
    recorded = record(_load_graph(graph), store, workflow=graph.rpartition(":")[2], ref=graph)
    tasks = suite.tasks[:limit]
    units = [(task, repeat) for task in tasks for repeat in range(repeats)]

    def one(unit: tuple[Task, int]) -> RunSummary:
        summary = _run_task(recorded, unit[0], unit[1], {"suite": suite.name, **(labels or {})})
        if on_result is not None:
            on_result(summary, len(units))
        return summary

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, units))


def _run_task(recorded: RecordedGraph, task: Task, repeat: int, labels: dict[str, Any]) -> RunSummary:
    started = time.perf_counter()
    check = _expect_check(task)
    run_labels = {**labels, "task_id": task.id, "repeat": repeat, **({CHECK_LABEL: check.model_dump()} if check else {})}
    result = recorded.invoke(_graph_input(task), labels=run_labels)
    got = value_at(to_jsonable(result.state), task.answer_path or DEFAULT_ANSWER_PATH) if result.state else None
    answer = None if got is None else str(got)
    outcome: Outcome | None = None
    if result.error is None and task.answer is not None:
        success = task.checker.check(answer, task.answer)
        outcome = Outcome(success=success, score=float(success), detail=f"answer {answer!r}, expected {task.answer!r}")
        recorded.finish(result.run_id, outcome)
    run = recorded.store.get_run(result.run_id)
    return RunSummary(
        run_id=run.id, task_id=task.id, repeat=repeat, status=run.status, success=bool(outcome and outcome.success),
        score=outcome.score if outcome else 0.0, answer=answer, expected=task.answer,
        steps=run.step_count, tokens=run.total_tokens,
        seconds=time.perf_counter() - started, error=result.error,
    )
