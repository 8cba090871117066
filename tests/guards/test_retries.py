"""A replay retried after its worker was lost stores exactly the replay asked for.

A unit of work that makes a run carries the run's id; when the worker performing it dies, the
executor performs it again with `attempt=2`, and the unit first discards what the lost attempt
wrote under that id. Here a worker is "lost" in the middle of a replay by an exception that no
one catches (as a killed process stops, the run row stays `running`, with the steps and
checkpoints written so far), and the retry runs on a fresh worker context, as on a new worker
process. Afterwards the store must hold the replays asked for and nothing else: one child run
under the unit's id, finished once, with each step once and its own checkpoints only (as many
as a replay that was never lost), and a chain that verifies.
"""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy import func, select

from counterfact.agents import ChatMessage, ScriptedChatModel
from counterfact.executors import WorkerContext
from counterfact.graphs import ModelPool, RunUnit, load_suite, record
from counterfact.interventions import Replayer, parse_intervention
from counterfact.interventions._units import replay_unit
from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import (
    Checkpoint,
    CheckpointWrite,
    ModelCall,
    Run,
    Step,
    ToolCall,
)

from ..graphs.scripted import arithmetic_brain, trio_spec
from ..interventions.test_replay import SUITE

REF = "tests.guards.test_retries:graph"
LOSE_IN: set[str] = set()  # nodes that take their worker down while this holds them
RAN: list[str] = []


class WorkerLost(BaseException):
    """Stands for the worker process dying: nothing in the recorder or LangGraph handles it."""


class State(TypedDict, total=False):
    notes: Annotated[list[str], operator.add]
    answer: str


def _node(name: str) -> Any:
    def run(state: State) -> dict[str, Any]:
        RAN.append(name)
        if name in LOSE_IN:
            raise WorkerLost(name)
        update: dict[str, Any] = {"notes": [name]}
        if name == "total":
            update["answer"] = str(len(state.get("notes", [])))
        return update

    return run


graph = StateGraph(State)
for _name in ("gather", "check", "total"):
    graph.add_node(_name, _node(_name))
graph.add_edge(START, "gather")
graph.add_edge("gather", "check")
graph.add_edge("check", "total")
graph.add_edge("total", END)


def answer_is_3(state: dict[str, Any]) -> bool:
    return state.get("answer") == "3"


@pytest.fixture(autouse=True)
def _reset() -> Any:
    LOSE_IN.clear()
    RAN.clear()
    yield
    LOSE_IN.clear()


def _rows(store: TraceStore, run_id: str) -> dict[str, int]:
    """What the store holds of a run: its rows, steps, calls, checkpoints and pending writes."""
    with store.engine.connect() as conn:
        steps = select(Step.id).where(Step.run_id == run_id)
        return {
            "runs": conn.execute(select(func.count()).select_from(Run).where(Run.id == run_id)).scalar_one(),
            "steps": conn.execute(select(func.count()).select_from(Step).where(Step.run_id == run_id)).scalar_one(),
            "model_calls": conn.execute(select(func.count()).select_from(ModelCall).where(ModelCall.step_id.in_(steps))).scalar_one(),
            "tool_calls": conn.execute(select(func.count()).select_from(ToolCall).where(ToolCall.step_id.in_(steps))).scalar_one(),
            "checkpoints": conn.execute(
                select(func.count()).select_from(Checkpoint).where(Checkpoint.thread_id == run_id)).scalar_one(),
            "writes": conn.execute(
                select(func.count()).select_from(CheckpointWrite).where(CheckpointWrite.thread_id == run_id)).scalar_one(),
        }


@pytest.mark.parametrize("at", ["gather#0", "check#0"])
def test_a_replay_retried_after_its_worker_was_lost_is_stored_once(store: TraceStore, at: str) -> None:
    parent = record(graph, store, ref=REF, check=f"{__name__}:answer_is_3").invoke({"notes": []}).run_id
    assert store.get_run(parent).status == "failed"  # two notes before the total, not three
    replayer = Replayer(store, parent)
    plan = replayer.compile(parse_intervention({"kind": "state", "patch": [
        {"op": "add", "path": "/notes/-", "value": "edited"}]}), at)

    # a replay that was never lost, for what one replay leaves in the store
    clean = replay_unit(replayer, plan, arm="treatment", seed=0).perform(WorkerContext(store))
    expected = _rows(store, clean.run_id)

    unit = replay_unit(replayer, plan, arm="treatment", seed=0)
    LOSE_IN.add("total")  # the first attempt dies at the last step, past the fork
    with pytest.raises(WorkerLost):
        unit.perform(WorkerContext(store), attempt=1)
    lost = store.get_run(unit.child_id)
    assert lost.status == "running" and len(store.steps(unit.child_id, payloads=False)) == 2  # half-written
    assert _rows(store, unit.child_id)["checkpoints"] > 1  # it wrote checkpoints past the fork's copy

    LOSE_IN.clear()
    RAN.clear()
    retried = unit.perform(WorkerContext(store), attempt=2)  # a new worker, the same unit

    # exactly the replays asked for: the clean one and the retried unit's, under its own id
    children = store.list_runs(parent=parent, limit=None)
    assert sorted(c.id for c in children) == sorted([clean.run_id, unit.child_id])
    assert retried.run_id == unit.child_id and retried.status == "succeeded" and retried.success
    run = store.get_run(unit.child_id)
    assert run.status == "succeeded" and run.labels["attempt"] == 2 and run.error is None
    # the retry ran the steps from the fork on once, and stored each step once
    fork = plan.step
    assert RAN == ["gather", "check", "total"][fork:]
    steps = store.steps(unit.child_id)
    assert [(s.index, s.node) for s in steps] == [(0, "gather"), (1, "check"), (2, "total")]
    assert [s.delta for s in steps] == [s.delta for s in store.steps(clean.run_id)]
    # nothing of the lost attempt is left: the same rows as the replay that was never lost
    assert _rows(store, unit.child_id) == expected
    assert verify_run(store, unit.child_id).ok


def test_a_unit_retried_when_its_first_attempt_wrote_nothing_runs_normally(store: TraceStore) -> None:
    """Lost before the fork was written (say, while building the graph): nothing to discard."""
    parent = record(graph, store, ref=REF, check=f"{__name__}:answer_is_3").invoke({"notes": []}).run_id
    replayer = Replayer(store, parent)
    unit = replay_unit(replayer, replayer.compile(None, "check#0"), arm="control", seed=0)
    result = unit.perform(WorkerContext(store), attempt=2)
    assert result.status == "failed" and [c.id for c in store.list_runs(parent=parent, limit=None)] == [unit.child_id]
    assert verify_run(store, unit.child_id).ok


# -- a suite run retried after its worker was lost ---------------------------------------------


def _losing_brain(messages: list[ChatMessage]) -> str:
    if "lose the solver" in LOSE_IN and "Compute" in messages[0].content:
        raise WorkerLost("solver")
    return arithmetic_brain(messages)


def test_a_suite_run_retried_after_its_worker_was_lost_is_stored_once(store: TraceStore) -> None:
    task = load_suite(SUITE).task("sum")
    pool = ModelPool("test", {"test": ScriptedChatModel(_losing_brain, name="brain")})

    def worker() -> WorkerContext:  # a new worker process: its own context, the driver's models
        context = WorkerContext(store)
        context.keep(("model-pool", None), pool)
        return context

    def unit() -> RunUnit:
        return RunUnit(run_id=uuid.uuid4().hex, spec=trio_spec(), model=None, task=task, suite="tiny", repeat=0, seed=None)

    clean = unit()
    assert clean.perform(worker()).status == "succeeded"
    expected = _rows(store, clean.run_id)

    retried = unit()
    LOSE_IN.add("lose the solver")
    with pytest.raises(WorkerLost):
        retried.perform(worker(), attempt=1)
    assert store.get_run(retried.run_id).status == "running"
    assert len(store.steps(retried.run_id, payloads=False)) == 1  # the researcher's step, then lost
    LOSE_IN.clear()
    summary = retried.perform(worker(), attempt=2)

    assert summary.status == "succeeded" and summary.answer == "1500"
    assert sorted(r.id for r in store.list_runs(limit=None)) == sorted([clean.run_id, retried.run_id])
    run = store.get_run(retried.run_id)
    assert run.status == "succeeded" and run.error is None and run.labels["attempt"] == 2
    assert [(s.index, s.node) for s in store.steps(retried.run_id)] == [(0, "researcher"), (1, "solver"), (2, "reporter")]
    assert _rows(store, retried.run_id) == expected
    assert verify_run(store, retried.run_id).ok
