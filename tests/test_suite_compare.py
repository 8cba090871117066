"""From fixed runs to a regression suite: `suite from-runs`, `run --suite --graph`, `compare`.

Two versions of one small app stand for the app before and after a change: the change fixes
multiplication and breaks subtraction, so one task is fixed, one broken, one unchanged.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypedDict

import pytest
import yaml
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from counterfact.cli import main
from counterfact.graphs import (
    SUITE_RUN_LABEL,
    Checker,
    ExpectCheck,
    SuiteError,
    Task,
    compare_suite_runs,
    load_suite,
    record,
    suite_from_runs,
    suite_runs,
    tag_suite_run,
)
from counterfact.store import RunRecord, TraceStore


class CalcState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    expression: str
    answer: str


def parse(state: CalcState) -> dict[str, Any]:
    match = re.search(r"(\d+)\s*([-+*])\s*(\d+)", str(state["messages"][0].content))
    expression = match.group(0).replace(" ", "") if match else ""
    return {"expression": expression, "messages": [AIMessage(f"to compute: {expression}", name="parser")]}


def _solver(fixed: bool) -> Any:
    def solve(state: CalcState) -> dict[str, Any]:
        a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)", state["expression"]).groups()  # type: ignore[union-attr]
        x, y = int(a), int(b)
        if op == "*":
            value = x * y if fixed else x + y  # before the change: multiplication adds
        elif op == "-":
            value = x + y if fixed else x - y  # the change breaks subtraction
        else:
            value = x + y
        return {"answer": str(value), "messages": [AIMessage(f"it is {value}", name="solver")]}

    return solve


def _calculator(fixed: bool) -> StateGraph:
    graph = StateGraph(CalcState)
    graph.add_node("parser", parse)
    graph.add_node("solver", _solver(fixed))
    graph.add_edge(START, "parser")
    graph.add_edge("parser", "solver")
    graph.add_edge("solver", END)
    return graph


calculator = _calculator(fixed=False)
calculator_fixed = _calculator(fixed=True)

QUESTIONS = {"What is 2+3?": "5", "What is 4*5?": "20", "What is 9-4?": "5"}


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """The `counterfact` entry point run in this process (a subprocess takes seconds to start)."""

    def run(*args: str) -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["counterfact", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr()
        return Ran(int(exit_.value.code or 0), out.out, out.err)

    return run


def _record_runs(db: str) -> list[str]:
    """Runs of the app as it was, each with the answer it should have given."""
    store = TraceStore.open(db)
    ids = []
    for question, expected in QUESTIONS.items():
        recorded = record(calculator, store, ref="tests.test_suite_compare:calculator", check=ExpectCheck(expect=expected, answer="answer"))
        ids.append(recorded.invoke({"messages": [("user", question)]}).run_id)
    store.close()
    return ids


def test_runs_become_a_suite_that_reruns_on_the_graph_and_compares(tmp_path: Path, sqlite_path: str, cli: Callable[..., Ran]) -> None:
    ids = _record_runs(sqlite_path)
    suite_file = tmp_path / "calc.yaml"
    made = cli("suite", "from-runs", *[i[:10] for i in ids], "-o", str(suite_file), "--db", sqlite_path)
    assert made.returncode == 0, made.stderr
    assert "wrote 3 tasks" in made.stdout
    suite = load_suite(suite_file)  # the one loader reads it: any runner can use it
    assert [t.answer for t in suite.tasks] == list(QUESTIONS.values())
    assert [t.question for t in suite.tasks] == list(QUESTIONS)
    graph_tasks = suite.tasks
    assert graph_tasks[1].graph_input == {"messages": [["user", "What is 4*5?"]]} and graph_tasks[1].answer_path == "answer"

    batches = []
    for app in ("calculator", "calculator_fixed"):
        ran = cli("run", "--suite", str(suite_file), "--graph", f"tests.test_suite_compare:{app}", "--db", sqlite_path)
        assert ran.returncode == 0, ran.stderr
        batches.append(re.search(r"suite run ([0-9a-f]{12})", ran.stdout).group(1))  # type: ignore[union-attr]
    store = TraceStore.open(sqlite_path)
    before = store.list_runs(labels={SUITE_RUN_LABEL: batches[0]})
    assert sorted(r.status for r in before) == ["failed", "succeeded", "succeeded"]
    assert all(r.labels["check"]["expect"] in QUESTIONS.values() for r in before)  # `debug` scores them alike

    compared = cli("compare", batches[0][:6], batches[1], "--format", "json", "--db", sqlite_path)
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    changes = {row["task_id"]: row["change"] for row in result["tasks"]}
    assert sorted(changes.values()) == ["broken", "fixed", "still passing"]
    assert (result["fixed"], result["broken"], result["still_passing"]) == (1, 1, 1)
    assert result["p_value"] == pytest.approx(1.0)
    text = cli("compare", batches[0], batches[1], "--db", sqlite_path)
    assert "fixed 1, broken 1, unchanged 1" in text.stdout and "p = 1" in text.stdout
    listed = json.loads(cli("suite", "runs", "--format", "json", "--db", sqlite_path).stdout)
    assert {s["id"] for s in listed} == set(batches) and all(s["tasks"] == 3 for s in listed)


def _suite_run(store: TraceStore, suite_run: str, results: dict[str, bool]) -> None:
    for task_id, ok in results.items():
        store.create_run(RunRecord(id=f"{suite_run}-{task_id}", workflow="w", status="succeeded" if ok else "failed",
                                   labels={SUITE_RUN_LABEL: suite_run, "suite": "s", "task_id": task_id}))


def test_the_paired_test_is_the_exact_mcnemar_test(store: TraceStore) -> None:
    tasks = [f"t{i}" for i in range(8)]
    _suite_run(store, "aaaa", dict.fromkeys(tasks, False) | {"t7": True})
    # six fixed, one broken (t7), one still failing (t6): two-sided binomial of 6 in 7 at 1/2
    _suite_run(store, "bbbb", dict.fromkeys(tasks[:6], True) | {"t6": False, "t7": False, "t8": True})
    result = compare_suite_runs(store, "aaaa", "bbbb")
    assert (result.fixed, result.broken, result.still_failing, result.still_passing) == (6, 1, 1, 0)
    assert result.p_value == pytest.approx(2 * (1 + 7) / 2**7)  # 2 * P(X <= 1), X ~ Bin(7, 1/2)
    assert [r.change for r in result.tasks if r.task_id == "t8"] == ["only in B"]
    assert (result.a.passed, result.b.passed) == (1, 7)
    with pytest.raises(SuiteError, match="no suite run with id 'cccc'"):
        compare_suite_runs(store, "aaaa", "cccc")


def test_imported_runs_give_tasks_when_their_answer_is_known(store: TraceStore) -> None:
    store.create_run(RunRecord(id="ww-1", workflow="whowhen/hand-crafted", task_input={"question": "Capital of France?"},
                               status="failed", source="whowhen", labels={"ground_truth": "Paris", "mistake_agent": "x"}))
    store.create_run(RunRecord(id="chat-2", workflow="chat", task_input={"question": "Hello?"}, status="failed"))
    # tau-bench's own task (expected actions and outputs, no one answer) is not counterfact's
    store.create_run(RunRecord(id="tau-3", workflow="tau-bench", task_input={"question": "Cancel my order", "task_id": 3},
                               status="failed", labels={"task": {"instruction": "Cancel my order", "outputs": []}}))
    made = suite_from_runs(store, ["ww-1", "chat-2", "tau-3"], name="imported", skip_unknown=True)
    assert made.suite.tasks == [Task(id="run-ww-1", question="Capital of France?", answer="Paris")]
    unknown = "its expected answer is not known (no check or ground truth is stored with it)"
    assert [(s.run_id, s.reason) for s in made.skipped] == [("chat-2", unknown), ("tau-3", unknown)]
    with pytest.raises(SuiteError, match="run chat-2: its expected answer is not known"):
        suite_from_runs(store, ["ww-1", "chat-2"], name="imported")
    # a run of `counterfact run` carries its task, checker and facts included
    task = Task(id="q7", question="Population of Elstead?", answer="690", checker=Checker(kind="number"),
                facts={"population of Elstead": "690"})
    store.create_run(RunRecord(id="wf-3", workflow="demo", task_input=task.input(), status="failed",
                               labels={"task": task.model_dump(mode="json"), "task_id": "q7", "workflow_spec": {}}))
    (made_task,) = suite_from_runs(store, ["wf-3"], name="workflow").suite.tasks
    assert made_task == task
    store.create_run(RunRecord(id="odd-4", workflow="w", task_input={"question": "q"}, status="failed",
                               labels={"check": {"expect": "1", "checker": "fuzzy"}}))
    with pytest.raises(SuiteError, match="run odd-4: its stored task or check is not valid"):
        suite_from_runs(store, ["odd-4"], name="odd")


def test_user_errors_are_one_line_and_write_nothing(tmp_path: Path, sqlite_path: str, cli: Callable[..., Ran]) -> None:
    ids = _record_runs(sqlite_path)
    store = TraceStore.open(sqlite_path)
    unchecked = record(calculator, store).invoke({"messages": [("user", "What is 1+1?")]}).run_id
    store.close()
    bad_suite = tmp_path / "bad.yaml"
    bad_suite.write_text("name: x\ntasks:\n- id: a\n  question: q\n  graph_input: 3\n")
    good_suite = tmp_path / "good.yaml"
    good_suite.write_text("name: x\ntasks:\n- id: a\n  question: What is 1+1?\n  answer: '2'\n")
    out = tmp_path / "suite.yaml"
    cases = [
        (["suite", "from-runs", "nosuchrun", "-o", str(out)], "no run with id 'nosuchrun'"),
        (["suite", "from-runs", ids[0], unchecked, "-o", str(out)], f"run {unchecked[:12]}: its expected answer is not known"),
        (["suite", "from-runs", ids[0], "-o", str(tmp_path / "nowhere" / "s.yaml")], "folder"),
        (["run", "--suite", str(bad_suite), "--graph", "tests.test_suite_compare:calculator"], "bad.yaml: tasks[0] (a).graph_input"),
        (["run", "--suite", str(out), "--graph", "tests.test_suite_compare:calculator"], "suite.yaml does not exist"),
        (["run", "demo", "--suite", str(bad_suite), "--graph", "tests.test_suite_compare:calculator"], "give either a workflow"),
        (["run", "--suite", str(good_suite), "--graph", "tests.test_suite_compare:nothing"], "does not import"),
        (["compare", "nosuch", "other"], "no suite run with id 'nosuch'"),
    ]
    for args, expected in cases:
        result = cli(*args, "--db", sqlite_path)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    assert len(TraceStore.open(sqlite_path).list_runs(limit=None)) == 4


def test_a_suite_file_written_is_the_suite_read(tmp_path: Path, sqlite_path: str) -> None:
    ids = _record_runs(sqlite_path)
    made = suite_from_runs(TraceStore.open(sqlite_path), [*ids, ids[0]], name="calc")
    assert [s.reason for s in made.skipped] == [f"the same task as another run (run-{ids[0][:12]})"]
    path = tmp_path / "calc.yaml"
    from counterfact.graphs import write_suite

    write_suite(made.suite, path)
    assert load_suite(path) == made.suite
    assert yaml.safe_load(path.read_text())["name"] == "calc"


def test_runs_a_workflow_made_are_tagged_as_one_suite_run_and_replays_are_left_out(store: TraceStore) -> None:
    for task_id, ok in {"a": True, "b": False}.items():
        store.create_run(RunRecord(id=f"wf-{task_id}", workflow="demo", status="succeeded" if ok else "failed",
                                   labels={"suite": "s", "task_id": task_id}))
    tag_suite_run(store, ["wf-a", "wf-b"], "1234abcd")
    tagged = store.get_run("wf-b")
    store.create_run(RunRecord(id="replay-b", workflow="demo", status="succeeded", labels=tagged.labels, parent_run_id="wf-b"))
    (listed,) = suite_runs(store)
    assert (listed.id, listed.suite, listed.tasks, listed.passed, listed.runs) == ("1234abcd", "s", 2, 1, 2)
    assert tagged.labels == {"suite": "s", "task_id": "b", SUITE_RUN_LABEL: "1234abcd"}
