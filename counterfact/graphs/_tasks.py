"""Tasks, their checkers and milestones, and suites of tasks read from YAML or JSONL.

A task is a question (plus whatever it provides, such as a table of facts for the lookup tool),
an expected answer with a checker that says whether a run's final answer matches it, and
optional milestones: predicates on the final state that measure partial progress.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from counterfact._errors import CounterfactError, validation_message
from counterfact._files import parse_yaml, read_text_file
from counterfact.graphs._state import WorkflowState
from counterfact.store import Outcome

CheckerKind = Literal["exact", "normalized", "regex", "number", "callable"]


class CheckerName(StrEnum):
    """The checkers that compare an answer with an expected text (the CLI's choices)."""

    exact = "exact"
    normalized = "normalized"
    regex = "regex"
    number = "number"


class SuiteError(CounterfactError):
    """A suite file that cannot be used; names the file, the task and the field."""


class Checker(BaseModel):
    """How a final answer is compared with the expected one."""

    kind: CheckerKind = "normalized"
    tolerance: float = Field(default=1e-6, ge=0)  # for `number`: absolute or relative
    pattern: str | None = None  # for `regex`; defaults to the expected answer
    function: str | None = None  # for `callable`: "module:function" taking (answer, expected)

    @model_validator(mode="after")
    def _complete(self) -> Checker:
        if self.kind == "callable" and not self.function:
            raise ValueError("a callable checker needs `function: module:name`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:  # pydantic reports ValueErrors only
                raise ValueError(f"pattern is not a regular expression ({exc})") from None
        return self

    def check(self, answer: str | None, expected: str) -> bool:
        if answer is None:
            return False
        if self.kind == "exact":
            return answer == expected
        if self.kind == "normalized":
            return normalize(answer) == normalize(expected)
        if self.kind == "regex":
            return re.search(self.pattern or expected, answer) is not None
        if self.kind == "number":
            got, want = first_number(answer), first_number(expected)
            if got is None or want is None:
                return False
            return math.isclose(got, want, rel_tol=self.tolerance, abs_tol=self.tolerance)
        return bool(_import(self.function or "")(answer, expected))


class Milestone(BaseModel):
    """Partial progress: a text some message contains (optionally said by one agent)."""

    name: str
    contains: str | None = None
    agent: str | None = None
    function: str | None = None  # "module:function" taking the final state

    @model_validator(mode="after")
    def _one_test(self) -> Milestone:
        if (self.contains is None) == (self.function is None):
            raise ValueError("a milestone needs exactly one of `contains` or `function`")
        return self

    def reached(self, state: WorkflowState) -> bool:
        if self.function is not None:
            return bool(_import(self.function)(state))
        needle = normalize(self.contains or "")
        return any(
            needle in normalize(str(m.content))
            for m in state.get("messages", [])[1:]
            if self.agent is None or getattr(m, "name", None) == self.agent
        )


class Task(BaseModel):
    id: str
    question: str
    answer: str | None = None  # None: no checker, the run is not scored
    checker: Checker = Field(default_factory=Checker)
    facts: dict[str, str] = Field(default_factory=dict)  # the table the lookup tool serves
    milestones: list[Milestone] = Field(default_factory=list)
    # for a user's own graph (`run --suite --graph`); a built-in workflow reads neither
    graph_input: dict[str, Any] | None = None  # the graph's input, verbatim (None: the question as a message)
    answer_path: str | None = None  # dotted path to the answer in the final state (None: the last message)

    def input(self) -> dict[str, Any]:
        """What the workflow is given (the answer is not)."""
        return {"task_id": self.id, "question": self.question, "facts": self.facts}

    def score(self, state: WorkflowState | None) -> Outcome | None:
        """Check a run's final state: success, a score in [0, 1], and the milestones reached."""
        if self.answer is None:
            return None
        answer = (state or {}).get("final_answer")
        success = self.checker.check(answer, self.answer)
        reached = [m.name for m in self.milestones if state is not None and m.reached(state)]
        score = 1.0 if success else (len(reached) / (len(self.milestones) + 1) if self.milestones else 0.0)
        detail = f"answer {answer!r}, expected {self.answer!r}"
        return Outcome(success=success, score=score, milestones=reached, detail=detail)


class Suite(BaseModel):
    name: str
    tasks: list[Task]

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        for task in self.tasks:
            if task.id in seen:
                raise ValueError(f"task id {task.id!r} appears twice")
            seen.add(task.id)
        return self

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise SuiteError(f"suite {self.name} has no task {task_id!r}")


def normalize(text: str) -> str:
    """Lower case, no punctuation at the ends, single spaces, no thousands separators."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.strip().lower())
    return " ".join(text.strip(" .!?\"'`*").split())


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group(0).replace(",", "")) if match else None


def _import(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SuiteError(f"cannot import {ref!r}: {exc}") from None


def load_suite(path: str | Path) -> Suite:
    """Read a suite from YAML (`name:` and `tasks:`) or JSONL (one task a line)."""
    path = Path(path)
    text = read_text_file(path, "suite", SuiteError)
    if path.suffix == ".jsonl":
        raw_tasks = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw_tasks.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SuiteError(f"{path}:{number}: not JSON ({exc.msg})") from None
        data: Any = {"name": path.stem, "tasks": raw_tasks}
    else:
        data = parse_yaml(text, str(path), SuiteError, as_json=path.suffix == ".json")
        if not isinstance(data, dict):
            raise SuiteError(f"{path}: expected a mapping with `name` and `tasks`")
        data.setdefault("name", path.stem)
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(f"{path}: {validation_message(exc, data)}") from None


