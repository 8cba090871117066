"""JSON Lines export and import: exact round trips on both backends, and refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from sqlalchemy import create_engine, select, text

from counterfact.capture import (
    ModelCallRecord,
    ToolCallRecord,
    report_model_call,
    report_tool_call,
)
from counterfact.formats import export_jsonl, import_jsonl, import_whowhen
from counterfact.graphs import record
from counterfact.store import RunRecord, StepRecord, StoreError, TraceStore
from counterfact.store.schema import Checkpoint, CheckpointWrite

WHOWHEN_LOG = {
    "question": "Which year?",
    "ground_truth": "1999",
    "question_ID": "q-7",
    "level": "1",
    "is_correct": False,
    "system_prompt": {"History_Expert": "You know history."},
    "mistake_agent": "History_Expert",
    "mistake_step": "1",
    "mistake_reason": "Guessed.",
    "history": [
        {"role": "assistant", "name": "History_Expert", "content": "Let me check."},
        {"role": "assistant", "name": "History_Expert", "content": "print(1998)"},
        {"role": "user", "name": "Computer_terminal", "content": "exitcode: 0\n1998"},
    ],
}


class State(TypedDict):
    messages: Annotated[list[Any], add_messages]
    n: int


def planner(state: State) -> dict[str, Any]:
    """Reports a model call with captured activations, as a local agent would."""
    report_model_call(
        ModelCallRecord(
            backend="local",
            model="tiny",
            params={"seed": 3},
            request=[{"role": "user", "content": str(m.content)} for m in state["messages"]],
            response={"role": "assistant", "content": f"plan {state['n']}"},
            prompt_tokens=4,
            completion_tokens=2,
            activations=b"\x00\x01activations" + bytes([state["n"]]),
        )
    )
    return {"messages": [AIMessage(content=f"plan {state['n']}", name="planner")]}


def calculator(state: State) -> dict[str, Any]:
    report_tool_call(ToolCallRecord(name="add", arguments={"a": state["n"], "b": 1}, result=2))
    total = state["n"] + 1
    return {"messages": [AIMessage(content=f"sum {total}", name="calc")], "n": total}


def _graph() -> StateGraph:
    graph = StateGraph(State)
    graph.add_node("planner", planner)
    graph.add_node("calculator", calculator)
    graph.add_edge(START, "planner")
    graph.add_edge("planner", "calculator")
    graph.add_conditional_edges("calculator", lambda s: END if s["n"] >= 2 else "planner")
    return graph


@pytest.fixture
def fresh(store: TraceStore, tmp_path: Path) -> Iterator[TraceStore]:
    """A second, empty store on the same backend as `store`."""
    if store.dialect == "sqlite":
        other = TraceStore.open(str(tmp_path / "fresh.db"))
        yield other
        other.close()
        return
    name = f"cf_fresh_{uuid.uuid4().hex[:10]}"
    admin = create_engine(store.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    other = TraceStore.open(store.url.rsplit("/", 1)[0] + f"/{name}")
    yield other
    other.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _checkpoint_rows(store: TraceStore, run_id: str) -> list[list[dict[str, Any]]]:
    with store.engine.connect() as conn:
        return [
            [
                dict(row)
                for row in conn.execute(
                    select(table).where(table.c.thread_id == run_id).order_by(*table.primary_key)
                ).mappings()
            ]
            for table in (Checkpoint.__table__, CheckpointWrite.__table__)
        ]


def _assert_same_run(a: TraceStore, b: TraceStore, run_id: str) -> None:
    assert b.get_run(run_id) == a.get_run(run_id)
    original, imported = a.steps(run_id), b.steps(run_id)
    assert len(imported) == len(original) > 0
    for x, y in zip(original, imported, strict=True):
        for field in StepRecord.model_fields:
            assert getattr(y, field) == getattr(x, field), field
    assert _checkpoint_rows(b, run_id) == _checkpoint_rows(a, run_id)


def test_recorded_graph_round_trips_and_stays_replayable(
    store: TraceStore, fresh: TraceStore, tmp_path: Path
) -> None:
    result = record(_graph(), store, workflow="toy").invoke(
        {"messages": [("user", "add up")], "n": 0}
    )
    run_id = result.run_id
    assert result.status == "succeeded"
    assert [s.node for s in store.steps(run_id)] == ["planner", "calculator"] * 2

    assert export_jsonl(store, [run_id[:8]], tmp_path / "runs.jsonl") == [run_id]
    assert import_jsonl(fresh, tmp_path / "runs.jsonl") == [run_id]
    _assert_same_run(store, fresh, run_id)
    steps = fresh.steps(run_id)
    assert steps[0].model_calls[0].prompt_tokens == 4 and steps[1].tool_calls[0].name == "add"
    assert _checkpoint_rows(fresh, run_id)[1], "checkpoint writes were exported"

    # Replayable: fork the imported run from the checkpoint before its third step.
    replay = record(_graph(), fresh, workflow="toy")
    config: RunnableConfig = {"configurable": {"thread_id": run_id, "checkpoint_id": steps[2].checkpoint_before}}
    before = replay.graph.get_state(config)
    assert [m.content for m in before.values["messages"]] == ["add up", "plan 0", "sum 1"]
    final = replay.graph.invoke(None, config)
    assert [m.content for m in final["messages"]][-2:] == ["plan 1", "sum 2"]


def test_whowhen_run_round_trips(store: TraceStore, fresh: TraceStore, tmp_path: Path) -> None:
    log = tmp_path / "Algorithm-Generated" / "7.json"
    log.parent.mkdir()
    log.write_text(json.dumps(WHOWHEN_LOG))
    run_id = import_whowhen(store, [log]).run_ids[0]

    export_jsonl(store, [run_id], tmp_path / "ww.jsonl")
    assert import_jsonl(fresh, tmp_path / "ww.jsonl") == [run_id]
    _assert_same_run(store, fresh, run_id)


def _two_runs(sqlite_path: str, tmp_path: Path) -> tuple[TraceStore, Path, list[str]]:
    """A store with a run and a fork of it, exported child first."""
    store = TraceStore.open(sqlite_path)
    parent = RunRecord(id="parent-run", workflow="w", status="failed")
    child = RunRecord(id="child-run", workflow="w", parent_run_id="parent-run", fork_step=0)
    store.write_run(parent, [StepRecord(node="a", output={"content": "x"})])
    store.write_run(child, [StepRecord(node="a", output={"content": "y"})])
    path = tmp_path / "both.jsonl"
    return store, path, export_jsonl(store, ["child-run", "parent-run"], path)


def test_parents_are_written_first_and_required(sqlite_path: str, tmp_path: Path) -> None:
    store, path, order = _two_runs(sqlite_path, tmp_path)
    assert order == ["parent-run", "child-run"]
    fresh = TraceStore.open(str(tmp_path / "fresh.db"))
    assert import_jsonl(fresh, path) == ["parent-run", "child-run"]

    export_jsonl(store, ["child-run"], tmp_path / "child.jsonl")
    orphan = TraceStore.open(str(tmp_path / "orphan.db"))
    with pytest.raises(StoreError, match="child.jsonl:1: run child-run forks run parent-run"):
        import_jsonl(orphan, tmp_path / "child.jsonl")
    assert orphan.list_runs() == []


def test_existing_run_is_an_error_unless_skipped(sqlite_path: str, tmp_path: Path) -> None:
    store, path, _ = _two_runs(sqlite_path, tmp_path)
    with pytest.raises(StoreError, match="both.jsonl:1: run parent-run already exists"):
        import_jsonl(store, path)
    assert import_jsonl(store, path, skip_existing=True) == []
    assert len(store.list_runs()) == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: [lines[0], "{truncated"], "bad.jsonl:2: not valid JSON"),
        (
            lambda lines: [lines[0], '{"format": "other"}'],
            "bad.jsonl:2: not a counterfact run export",
        ),
        (lambda lines: [lines[0], lines[0]], "bad.jsonl:2: run parent-run appears again"),
        (
            lambda lines: [lines[0], lines[1].replace('"content":"y"', '"content":"z"')],
            "bad.jsonl:2: run child-run step 0: content does not match its chain digest",
        ),
    ],
)
def test_a_bad_line_names_file_and_line_and_writes_nothing(
    sqlite_path: str, tmp_path: Path, edit: Callable[[list[str]], list[str]], message: str
) -> None:
    _, path, _ = _two_runs(sqlite_path, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    fresh = TraceStore.open(str(tmp_path / "fresh.db"))

    with pytest.raises(StoreError, match=message):
        import_jsonl(fresh, bad)
    assert fresh.list_runs() == []
