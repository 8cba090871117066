"""A recorded step commits once, with its checkpoint writes and the next checkpoint; writes are
held for that checkpoint only when nothing else of their super-step is still running, and
writes with no checkpoint after them (an error) are stored when the run ends."""

from __future__ import annotations

import operator
import threading
import time
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from sqlalchemy import event, select

from counterfact.graphs import record
from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import Checkpoint, CheckpointWrite, Step
from tests.graphs.sample_graphs import loop_graph, loop_input


def _writes(store: TraceStore, run_id: str) -> set[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        return set(
            conn.execute(
                select(CheckpointWrite.checkpoint_id, CheckpointWrite.task_id, CheckpointWrite.channel).where(
                    CheckpointWrite.thread_id == run_id
                )
            ).tuples()
        )


def test_a_step_commits_once_with_its_writes_and_the_next_checkpoint(store: TraceStore) -> None:
    recorded = record(loop_graph(), store)
    recorded.invoke(loop_input(2))  # warm
    commits: list[int] = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(store.engine, "commit", listener)
    try:
        result = recorded.invoke(loop_input(10))
    finally:
        event.remove(store.engine, "commit", listener)
    steps = store.steps(result.run_id, payloads=False)
    assert len(steps) == 19
    assert len(commits) <= len(steps) + 6  # the run's own: create, input, finish
    writes = {(c, t) for c, t, _ in _writes(store, result.run_id)}
    with store.engine.connect() as conn:
        checkpoints = set(conn.execute(select(Checkpoint.checkpoint_id).where(Checkpoint.thread_id == result.run_id)).scalars())
    for step in steps:
        assert step.checkpoint_before in checkpoints
        assert (step.checkpoint_before, step.task_id) in writes
    assert verify_run(store, result.run_id).ok


class Fan(TypedDict):
    log: Annotated[list[str], operator.add]


def test_a_finished_branch_is_stored_while_its_sibling_still_runs(store: TraceStore) -> None:
    """LangGraph keeps a finished task's writes so that a crash does not run it again: they
    are not held while another task of the super-step runs."""
    seen: list[bool] = []
    fast_done = threading.Event()

    def fast(state: Fan) -> dict[str, Any]:
        fast_done.set()
        return {"log": ["fast"]}

    def slow(state: Fan, config: RunnableConfig) -> dict[str, Any]:
        fast_done.wait(10)
        run_id = config["configurable"]["thread_id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                nodes = set(conn.execute(select(Step.node).where(Step.run_id == run_id)).scalars())
            if "fast" in nodes and any(ch == "log" for _, _, ch in _writes(store, run_id)):
                seen.append(True)
                break
            time.sleep(0.02)
        return {"log": ["slow"]}

    graph = StateGraph(Fan)
    graph.add_node("fast", fast)
    graph.add_node("slow", slow)
    graph.add_edge(START, "fast")
    graph.add_edge(START, "slow")
    graph.add_edge("fast", END)
    graph.add_edge("slow", END)
    result = record(graph, store).invoke({"log": []})
    assert result.status == "succeeded", result.error
    assert seen == [True]
    assert sorted(s.node for s in store.steps(result.run_id, payloads=False)) == ["fast", "slow"]


def test_writes_of_a_failed_step_are_stored_when_the_run_ends(store: TraceStore) -> None:
    """A step that raised has no checkpoint after it: its error write and its step are
    stored when the recorder detaches, and the run can be resumed from them."""

    def ok(state: Fan) -> dict[str, Any]:
        return {"log": ["ok"]}

    def boom(state: Fan) -> dict[str, Any]:
        raise RuntimeError("boom")

    graph = StateGraph(Fan)
    graph.add_node("ok", ok)
    graph.add_node("boom", boom)
    graph.add_edge(START, "ok")
    graph.add_edge("ok", "boom")
    graph.add_edge("boom", END)
    result = record(graph, store).invoke({"log": []})
    assert result.status == "error"
    steps = store.steps(result.run_id, payloads=False)
    assert [(s.node, s.error is not None) for s in steps] == [("ok", False), ("boom", True)]
    writes = _writes(store, result.run_id)
    assert (steps[1].checkpoint_before, steps[1].task_id, "__error__") in writes
