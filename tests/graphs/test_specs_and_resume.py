"""YAML workflows and suites (and their errors), checkers, and resuming a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from counterfact.graphs import (
    DEMO_SUITE,
    DEMO_WORKFLOW,
    Checker,
    SuiteError,
    WorkflowError,
    load_suite,
    load_workflow,
    resume_run,
)
from counterfact.store import TraceStore

from .scripted import trio_pool

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_demo_files_are_valid() -> None:
    spec = load_workflow(DEMO_WORKFLOW)
    suite = load_suite(DEMO_SUITE)
    assert spec.topology == "pipeline" and [a.name for a in spec.agents] == ["researcher", "solver", "reporter"]
    assert len(suite.tasks) >= 30
    assert all(t.answer is not None for t in suite.tasks)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\ntopology: pipeline\nagents: []\n", "agents: List should have at least 1 item"),
        ("name: x\ntopology: ring\nagents: [{name: a, role: r}]\n", "topology: Input should be 'pipeline'"),
        ("name: x\ntopology: pipeline\nagents: [{name: a, role: r, tools: [saw]}]\n", "agents[0] (a): Value error, unknown tool 'saw'"),
        ("name: x\ntopology: orchestrator\nagents: [{name: a, role: r}]\n", "needs `lead: <agent name>`"),
        ("name: x\ntopology: pipeline\nagents: [{name: a, role: r, settings: {max_tokens: many}}]\n",
         "agents[0] (a).settings.max_tokens: Input should be a valid integer"),
        ("name: [unclosed\n", "does not parse as YAML"),
    ],
)
def test_bad_workflow_files_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks:\n  - {id: a, question: q, answer: '1', checker: {kind: fuzzy}}\n", "tasks[0] (a).checker.kind: Input should be"),
        ("tasks:\n  - {id: a, question: q}\n  - {id: a, question: q}\n", "task id 'a' appears twice"),
        ("tasks:\n  - {id: b, answer: '1'}\n", "tasks[0] (b).question: Field required"),
        ("tasks:\n  - {id: c, question: q, milestones: [{name: m}]}\n", "exactly one of `contains` or `function`"),
    ],
)
def test_bad_suites_name_the_task_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_jsonl_suites_and_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "suite.jsonl"
    path.write_text('{"id": "a", "question": "q", "answer": "1"}\n\n{"id": "b", oops}\n')
    with pytest.raises(SuiteError, match=r"suite.jsonl:3: not JSON"):
        load_suite(path)
    path.write_text('{"id": "a", "question": "q", "answer": "1"}\n')
    assert load_suite(path).tasks[0].id == "a"


def test_checkers() -> None:
    assert Checker(kind="number").check("The answer is 1,500.", "1500")
    assert not Checker(kind="number").check("1499", "1500")
    assert Checker(kind="number", tolerance=0.01).check("1499", "1500")
    assert Checker(kind="normalized").check("  Paris. ", "paris")
    assert not Checker(kind="exact").check("Paris ", "Paris")
    assert Checker(kind="regex", pattern=r"^\d{4}$").check("1879", "ignored")
    assert Checker(kind="callable", function="operator:contains").check("abc", "b")
    assert not Checker(kind="number").check(None, "1")


def test_killed_run_resumes_from_its_last_checkpoint(sqlite_path: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.graphs.resume_worker", sqlite_path, "killme"],
        cwd=ROOT,
        env={**os.environ, "CF_TEST_MODEL_DELAY": "1.0"},
        stdout=subprocess.PIPE,
        text=True,
    )
    store = TraceStore.open(sqlite_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once the first agent's step is stored
        try:
            if store.steps("killme", payloads=False):
                break
        except Exception:  # the run row may not exist yet
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = store.steps("killme", payloads=False)
    assert 1 <= len(before) < 3 and store.get_run("killme").status == "running"

    pool = trio_pool()
    summary = resume_run(store, "killme", pool=pool)
    assert summary.success and summary.answer == "1500"
    steps = store.steps("killme")
    assert [s.node for s in steps] == ["researcher", "solver", "reporter"]
    assert steps[0].digest == before[0].digest  # what was recorded before the kill is kept
    # the model answered exactly the calls of the steps not recorded before the kill: nothing
    # that was stored ran again
    made = pool("test").requests  # type: ignore[attr-defined]
    assert len(made) == sum(len(s.model_calls) for s in steps[len(before):]) > 0
    assert not any("Find facts" in r.messages[0].content for r in made)
    assert store.get_run("killme").status == "succeeded"
