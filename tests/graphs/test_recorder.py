"""Recording a plain LangGraph StateGraph: steps, calls, checkpoints, blobs, redaction, resume."""

from __future__ import annotations

from datetime import timedelta

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy import func, select

from counterfact.graphs import record
from counterfact.store import Outcome, StoreError, TraceStore, utcnow
from counterfact.store.schema import Blob, Checkpoint, CheckpointWrite
from tests.graphs.sample_graphs import LoopState, loop_graph, loop_input, route, worker


def test_records_every_node_execution(store: TraceStore) -> None:
    result = record(loop_graph(), store, workflow="loop").invoke(loop_input(3))
    assert result.status == "succeeded"
    steps = store.steps(result.run_id)
    # worker, critic, worker, critic, worker
    assert [s.node for s in steps] == ["worker", "critic", "worker", "critic", "worker"]
    assert [s.index for s in steps] == list(range(5))
    assert [s.invocation for s in steps] == [0, 0, 1, 1, 2]
    first = steps[0]
    assert first.input == [{"role": "user", "content": "count with me", "id": first.input[0]["id"]}]
    assert first.output["content"] == "turn 0" and first.output["role"] == "assistant"
    assert first.delta["n"] == 1
    assert first.model_calls[0].params["seed"] == 7
    assert first.model_calls[0].response == {"role": "assistant", "content": "turn 0"}
    assert first.tool_calls[0].result == 2
    # the input of a later step is everything said before it
    assert [m["content"] for m in steps[2].input] == ["count with me", "turn 0", "ok 1"]
    run = store.get_run(result.run_id)
    assert run.total_tokens == 3 * 7 and run.workflow == "loop" and run.ended_at is not None


def test_each_step_sits_between_two_stored_checkpoints(store: TraceStore) -> None:
    result = record(loop_graph(), store).invoke(loop_input(2))
    steps = store.steps(result.run_id)
    with store.engine.connect() as conn:
        ids = set(
            conn.execute(
                select(Checkpoint.checkpoint_id).where(Checkpoint.thread_id == result.run_id)
            ).scalars()
        )
    for step in steps:
        assert step.checkpoint_before in ids and step.checkpoint_after in ids
    for before, after in zip(steps, steps[1:], strict=False):
        assert before.checkpoint_after == after.checkpoint_before


def test_history_payloads_are_stored_once(store: TraceStore) -> None:
    """A history resent at every step grows the blob table linearly, not quadratically."""

    def blob_bytes() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(Blob.size), 0))).scalar_one())

    rg = record(loop_graph(), store)
    before = blob_bytes()
    rg.invoke(loop_input(10))
    short = blob_bytes() - before
    rg.invoke(loop_input(40))
    long = blob_bytes() - before - short
    # 4x the steps; a quadratic store would grow about 16x
    assert long < 8 * short, (short, long)


def test_secrets_never_reach_the_store(store: TraceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-very-secret-value-123")
    store.redact = type(store.redact)(["acct-[0-9]{6}"])
    key = "sk-" + "a" * 32
    graph = StateGraph(LoopState)
    graph.add_node(
        "leaky",
        lambda s: {
            "messages": [
                ("ai", f"key {key}, Bearer abcdefghijklmnop, tok-very-secret-value-123, acct-123456")
            ],
            "n": 1,
        },
    )
    graph.add_edge(START, "leaky")
    graph.add_edge("leaky", END)
    result = record(graph, store).invoke(
        {"messages": [("user", "hi")], "n": 0, "limit": 1}, labels={"api_key": "xyz-secret"}
    )
    with store.engine.connect() as conn:
        blobs = b"".join(d for d in conn.execute(select(Blob.data)).scalars() if d)
    for secret in (key, "abcdefghijklmnop", "tok-very-secret-value-123", "acct-123456"):
        assert secret.encode() not in blobs
    assert b"[REDACTED]" in blobs
    assert store.get_run(result.run_id).labels["api_key"] == "[REDACTED]"


def test_node_error_is_recorded_and_run_marked_error(store: TraceStore) -> None:
    graph = StateGraph(LoopState)

    def broken(state: LoopState) -> dict:
        raise RuntimeError("tool exploded")

    graph.add_node("broken", broken)
    graph.add_edge(START, "broken")
    result = record(graph, store).invoke(loop_input(1))
    assert result.status == "error" and "tool exploded" in (result.error or "")
    (step,) = store.steps(result.run_id)
    assert step.error == "RuntimeError: tool exploded"
    assert store.get_run(result.run_id).status == "error"


def test_outcome_sets_failed_or_succeeded(store: TraceStore) -> None:
    rg = record(loop_graph(), store)
    result = rg.invoke(loop_input(1))
    rg.finish(result.run_id, Outcome(success=False, score=0.25, milestones=["started"]))
    run = store.get_run(result.run_id)
    assert run.status == "failed" and run.outcome and run.outcome.milestones == ["started"]


def test_list_filters(store: TraceStore) -> None:
    rg = record(loop_graph(), store, workflow="loop")
    a = rg.invoke(loop_input(1), labels={"split": "dev"})
    b = rg.invoke(loop_input(2), labels={"split": "test"})
    rg.finish(b.run_id, Outcome(success=False))
    other = StateGraph(LoopState)
    other.add_node("solo", lambda s: {"n": 1})
    other.add_edge(START, "solo")
    c = record(other, store, workflow="solo").invoke(loop_input(1))

    def ids(**kw: object) -> set[str]:
        return {r.id for r in store.list_runs(**kw)}  # type: ignore[arg-type]

    assert ids() == {a.run_id, b.run_id, c.run_id}
    assert ids(status="failed") == {b.run_id}
    assert ids(workflow="loop") == {a.run_id, b.run_id}
    assert ids(agent="critic") == {b.run_id}
    assert ids(agent="solo") == {c.run_id}
    assert ids(labels={"split": "dev"}) == {a.run_id}
    assert ids(since=utcnow() + timedelta(hours=1)) == set()
    assert [r.id for r in store.list_runs(limit=1)] == [c.run_id]


def test_run_ids_resolve_by_prefix_and_unknown_ids_fail(store: TraceStore) -> None:
    result = record(loop_graph(), store).invoke(loop_input(1))
    assert store.resolve_run_id(result.run_id[:10]) == result.run_id
    with pytest.raises(StoreError, match="no run with id 'deadbeef'"):
        store.get_run("deadbeef")


def test_user_graph_is_not_modified(store: TraceStore) -> None:
    graph = loop_graph()
    runnable = graph.nodes["worker"].runnable
    record(graph, store)
    assert graph.nodes["worker"].runnable is runnable
    assert graph.compile().invoke(loop_input(1))["n"] == 1


def test_resume_continues_from_last_checkpoint(store: TraceStore) -> None:
    """A run stopped by an exception mid-way continues where it stopped, steps appended."""
    calls = {"critic": 0}

    def flaky_critic(state: LoopState) -> dict:
        calls["critic"] += 1
        if calls["critic"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises inside a node
        return {"messages": [("ai", "fine")]}

    graph = StateGraph(LoopState)
    graph.add_node("worker", worker)
    graph.add_node("critic", flaky_critic)
    graph.add_edge(START, "worker")
    graph.add_conditional_edges("worker", route, ["critic", END])
    graph.add_edge("critic", "worker")
    rg = record(graph, store)
    run_id = rg.start_run({"limit": 3})
    with pytest.raises(KeyboardInterrupt):
        rg.continue_run(run_id, loop_input(3))
    assert store.get_run(run_id).status == "running"
    done_before = len(store.steps(run_id))
    result = rg.resume(run_id)
    assert result.status == "succeeded" and result.state and result.state["n"] == 3
    steps = store.steps(run_id)
    assert [s.index for s in steps] == list(range(len(steps)))
    assert [s.node for s in steps] == ["worker", "critic", "worker", "critic", "worker"]
    assert len(steps) > done_before
    with store.engine.connect() as conn:
        assert conn.execute(
            select(func.count()).select_from(CheckpointWrite).where(
                CheckpointWrite.thread_id == run_id
            )
        ).scalar_one() > 0


def test_a_tool_that_raised_is_recorded_as_an_error_and_the_run_goes_on(store: TraceStore) -> None:
    from counterfact.capture import ToolCallRecord, report_tool_call

    def clumsy(state: LoopState) -> dict:
        report_tool_call(ToolCallRecord(name="calculator", arguments={"expression": "x"}, error="bad"))
        return {"n": 1}

    graph = StateGraph(LoopState)
    graph.add_node("clumsy", clumsy)
    graph.add_node("after", lambda s: {"n": 2})
    graph.add_edge(START, "clumsy")
    graph.add_edge("clumsy", "after")
    result = record(graph, store).invoke(loop_input(1))
    assert result.status == "succeeded"
    first, second = store.steps(result.run_id)
    assert first.tool_calls[0].error == "bad" and first.tool_calls[0].result is None
    assert second.node == "after"
