"""A task suite run on a user's own LangGraph app: each task's input given to the graph as it
is, each final state checked against the task's expected answer, every run recorded.

A suite made from recorded runs (`suite_from_runs`) keeps what a graph was invoked with
(`graph_input`) and where its answer was in the final state (`answer_path`); any other suite's
task is given to the graph as one user message. The file stays loadable by `load_suite`, which
ignores the two fields, so a counterfact workflow can run the same suite.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from counterfact._errors import validation_message
from counterfact._files import load_yaml, read_text_file
from counterfact.capture import to_jsonable
from counterfact.graphs._recorder import RecordedGraph, record
from counterfact.graphs._refs import CHECK_LABEL
from counterfact.graphs._runner import RunSummary
from counterfact.graphs._target import ExpectCheck, _load_graph, value_at
from counterfact.graphs._tasks import Checker, Suite, SuiteError, Task, load_suite
from counterfact.store import Outcome, TraceStore

DEFAULT_ANSWER_PATH = "messages.-1.content"  # a chat graph's last message


class GraphTask(Task):
    """A task with what a user's graph needs to run it as a recorded run ran."""

    graph_input: dict[str, Any] | None = None  # the graph's input, verbatim (None: the question as a message)
    answer_path: str | None = None  # dotted path to the answer in the final state (None: the last message)

    def graph_input_or_question(self) -> dict[str, Any]:
        if self.graph_input is not None:
            return self.graph_input
        return {"messages": [{"role": "user", "content": self.question}]}

    def expect_check(self) -> ExpectCheck | None:
        """The check stored with each run, so that `replay` and `debug` score the run as the
        suite did; None when the task's checker has settings an ExpectCheck cannot carry."""
        if self.answer is None or self.checker.kind == "callable" or self.checker != Checker(kind=self.checker.kind):
            return None
        return ExpectCheck(expect=self.answer, checker=self.checker.kind, answer=self.answer_path or DEFAULT_ANSWER_PATH)


class GraphSuite(Suite):
    tasks: list[GraphTask]  # type: ignore[assignment]  # a Suite whose tasks carry graph inputs


def load_graph_suite(path: str | Path) -> GraphSuite:
    """A suite file (as `load_suite` reads it, errors included) with its tasks' graph inputs."""
    path = Path(path)
    suite = load_suite(path)  # every check and error of a suite file
    if path.suffix == ".jsonl":
        raw_tasks = [json.loads(line) for line in read_text_file(path, "suite", SuiteError).splitlines() if line.strip()]
    else:
        raw_tasks = load_yaml(path, "suite", SuiteError)["tasks"]
    data = {"name": suite.name, "tasks": raw_tasks}
    try:
        return GraphSuite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{path}: {validation_message(exc, data)}") from None


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
    tasks = [GraphTask.model_validate(t.model_dump()) for t in suite.tasks[:limit]]
    units = [(task, repeat) for task in tasks for repeat in range(repeats)]

    def one(unit: tuple[GraphTask, int]) -> RunSummary:
        summary = _run_task(recorded, unit[0], unit[1], {"suite": suite.name, **(labels or {})})
        if on_result is not None:
            on_result(summary, len(units))
        return summary

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, units))


def _run_task(recorded: RecordedGraph, task: GraphTask, repeat: int, labels: dict[str, Any]) -> RunSummary:
    started = time.perf_counter()
    check = task.expect_check()
    run_labels = {**labels, "task_id": task.id, "repeat": repeat, **({CHECK_LABEL: check.model_dump()} if check else {})}
    result = recorded.invoke(task.graph_input_or_question(), labels=run_labels)
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
