"""Workflow specs and suites: parse_workflow, load_workflow, load_suite (YAML, JSON and JSONL)
on mutated real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from counterfact.graphs import (
    DEMO_SUITE,
    DEMO_WORKFLOW,
    SuiteError,
    WorkflowError,
    load_suite,
    load_workflow,
    parse_workflow,
)
from tests.fuzz._mutate import dumps, mutated, mutated_bytes
from tests.fuzz.conftest import assert_clear, check_property

TESTS = Path(__file__).parents[1]
WORKFLOWS = [
    yaml.safe_load(Path(DEMO_WORKFLOW).read_text(encoding="utf-8")),
    {"name": "trio", "topology": "pipeline", "model": "test", "agents": [
        {"name": "researcher", "role": "Find facts.", "tools": ["lookup"]},
        {"name": "solver", "role": "Compute.", "tools": ["calculator"]},
        {"name": "reporter", "role": "Report."}]},
    {"name": "orch", "topology": "orchestrator", "lead": "boss", "max_rounds": 4, "agents": [
        {"name": "boss", "role": "Plan."}, {"name": "worker", "role": "Work.", "settings": {"temperature": 0.5}}]},
    {"name": "chat", "topology": "groupchat", "selector": "pick", "order": ["a", "b"], "agents": [
        {"name": "pick", "role": "Pick."}, {"name": "a", "role": "A."}, {"name": "b", "role": "B."}]},
]
SUITES = [
    yaml.safe_load(Path(DEMO_SUITE).read_text(encoding="utf-8")),
    yaml.safe_load((TESTS / "graphs" / "suite.yaml").read_text(encoding="utf-8")),
    {"name": "checkers", "tasks": [
        {"id": "re", "question": "q?", "answer": "4", "checker": {"kind": "regex", "pattern": "\\b4\\b"}},
        {"id": "call", "question": "q?", "answer": "4", "checker": {"kind": "callable", "function": "os.path:exists"}},
        {"id": "m", "question": "q?", "milestones": [{"name": "f", "function": "os.path:exists"}]}]},
]


def test_real_files_parse() -> None:
    for data in WORKFLOWS:
        parse_workflow(data)
    load_workflow(DEMO_WORKFLOW)
    load_suite(DEMO_SUITE)
    load_suite(TESTS / "graphs" / "suite.yaml")


@given(data=st.sampled_from(WORKFLOWS).flatmap(mutated))
def test_parse_workflow_mutated(data: object) -> None:
    check_property("workflow: parse_workflow(mutated data)", lambda: parse_workflow(data, source="wf.yaml"), WorkflowError, "wf.yaml")


@given(data=st.sampled_from(WORKFLOWS).flatmap(mutated), suffix=st.sampled_from([".yaml", ".json"]))
def test_load_workflow_mutated_file(tmp_path_factory: pytest.TempPathFactory, data: object, suffix: str) -> None:
    path = tmp_path_factory.mktemp("wf") / f"workflow{suffix}"
    path.write_text(dumps(data) if suffix == ".json" else yaml.safe_dump(json.loads(dumps(data))))
    check_property("workflow: load_workflow(mutated file)", lambda: load_workflow(path), WorkflowError, str(path))


@given(raw=mutated_bytes(Path(DEMO_WORKFLOW).read_bytes()))
def test_load_workflow_damaged_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("wf") / "workflow.yaml"
    path.write_bytes(raw)
    check_property("workflow: load_workflow(damaged bytes)", lambda: load_workflow(path), WorkflowError, str(path))


@given(data=st.sampled_from(SUITES).flatmap(mutated), suffix=st.sampled_from([".yaml", ".json", ".jsonl"]))
def test_load_suite_mutated_file(tmp_path_factory: pytest.TempPathFactory, data: object, suffix: str) -> None:
    path = tmp_path_factory.mktemp("suite") / f"suite{suffix}"
    if suffix == ".jsonl":
        tasks = data.get("tasks") if isinstance(data, dict) else data
        items = tasks if isinstance(tasks, list) else [tasks]
        path.write_text("".join(dumps(t) + "\n" for t in items))
    else:
        path.write_text(dumps(data) if suffix == ".json" else yaml.safe_dump(json.loads(dumps(data))))
    check_property("suite: load_suite(mutated file)", lambda: load_suite(path), SuiteError, str(path))


@given(raw=st.sampled_from(SUITES).flatmap(
    lambda s: mutated_bytes("".join(json.dumps(t) + "\n" for t in s["tasks"]).encode())),
    suffix=st.sampled_from([".jsonl"]))
def test_load_suite_damaged_jsonl(tmp_path_factory: pytest.TempPathFactory, raw: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("suite") / f"suite{suffix}"
    path.write_bytes(raw)
    check_property("suite: load_suite(damaged JSONL bytes)", lambda: load_suite(path), SuiteError, str(path))


@given(raw=mutated_bytes((TESTS / "graphs" / "suite.yaml").read_bytes()))
def test_load_suite_damaged_yaml(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_bytes(raw)
    check_property("suite: load_suite(damaged YAML bytes)", lambda: load_suite(path), SuiteError, str(path))


def test_suite_bad_checker_regex_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "tasks": [
        {"id": "t", "question": "q", "answer": "1", "checker": {"kind": "regex", "pattern": "("}}]}))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert_clear(info.value, str(path))


def test_agent_name_with_newline_gives_one_line() -> None:
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "x", "topology": "pipeline", "agents": [{"name": "a\nb", "role": "r"}]}, source="wf.yaml")
    assert_clear(info.value, "wf.yaml")
