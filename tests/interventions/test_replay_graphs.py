"""Replay, edits and verification on users' own LangGraph apps (tests/interventions/apps.py):
every edit kind where it applies, forks at a Send worker, at a subgraph and across an
interrupt, nothing before the fork re-run, a changed graph refused, and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from counterfact.graphs import TargetError, record
from counterfact.interventions import (
    InterventionError,
    Replayer,
    parse_intervention,
    verify,
)
from counterfact.store import TraceStore
from tests.interventions import apps

PIPELINE = "tests.interventions.apps:pipeline"


@pytest.fixture
def local_store(tmp_path: Any) -> TraceStore:
    store = TraceStore.open(str(tmp_path / "apps.db"))
    yield store
    store.close()


def _run(store: TraceStore, graph: Any, graph_input: dict[str, Any], **kwargs: Any) -> str:
    result = record(graph, store, **kwargs).invoke(graph_input)
    assert result.error is None, result.error
    return result.run_id


def _replay(store: TraceStore, run_id: str, edit: Any, at: str, **kwargs: Any) -> tuple[Any, Any]:
    replayer = Replayer(store, run_id, **kwargs)
    plan = replayer.compile(parse_intervention(edit) if edit is not None else None, at)
    return replayer, replayer.replay(plan, arm="treatment")


def _without_id(output: Any) -> Any:
    return {k: v for k, v in output.items() if k != "id"} if isinstance(output, dict) else output


def test_the_reference_is_found_and_stored(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    labels = local_store.get_run(run_id).labels
    assert labels["graph"]["ref"] == PIPELINE
    assert labels["check"] == {"function": "tests.interventions.apps:answer_is_5"}
    assert local_store.get_run(run_id).status == "failed"  # 2+2 is not 5


def test_a_no_edit_replay_reproduces_and_runs_nothing_before_the_fork(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    before = dict(apps.CALLS)
    replayer, result = _replay(local_store, run_id, None, "worker#0")
    assert apps.CALLS["planner"] == before["planner"]  # the step before the fork did not run
    assert apps.CALLS["worker"] == before["worker"] + 1
    parent = [(s.node, _without_id(s.output)) for s in local_store.steps(run_id)]
    child = [(s.node, _without_id(s.output)) for s in local_store.steps(result.run_id)]
    assert child == parent and result.answer == "the sum is 4" and result.success is False


def test_message_edit_on_a_user_node_replaces_its_message(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    _, result = _replay(local_store, run_id, {"kind": "message", "text": "compute 2+3"}, "planner#0")
    assert result.success and result.applied, result.applied_detail
    steps = local_store.steps(result.run_id)
    assert [s.node for s in steps] == ["planner", "worker", "reviewer"]
    contents = [m["content"] for m in steps[1].input or []] if steps[1].input else None
    final = local_store.steps(result.run_id)[-1]
    assert final.node == "reviewer"
    # the edit replaced the planner's message (same id), it did not add a second one
    worker_in = [c for c in (contents or [])]
    assert "compute 2+2" not in " ".join(worker_in)


def test_state_edit_patches_a_channel(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    edit = {"kind": "state", "patch": [{"op": "replace", "path": "/messages/1/content", "value": "compute 1+4"}]}
    _, result = _replay(local_store, run_id, edit, "worker#0")
    assert result.success, result
    with pytest.raises(InterventionError, match="no channel 'ledger'"):
        _replay(local_store, run_id, {"kind": "state", "patch": [{"op": "add", "path": "/ledger", "value": 1}]}, "worker#0")


def test_route_edit_forces_the_next_node(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    assert [s.node for s in local_store.steps(run_id)] == ["planner", "worker"]
    _, result = _replay(local_store, run_id, {"kind": "route", "next": "reviewer"}, "worker#0")
    assert [s.node for s in local_store.steps(result.run_id)] == ["planner", "worker", "reviewer"]
    assert result.applied
    with pytest.raises(InterventionError, match="successors are fixed"):
        _replay(local_store, run_id, {"kind": "route", "next": "reviewer"}, "planner#0")


def test_response_and_tool_edits_on_a_langchain_model_and_tool_node(local_store: TraceStore) -> None:
    graph = apps.tool_agent()
    run_id = _run(local_store, graph, {"messages": [("user", "add 2 and 2")]}, ref="tests.interventions.apps:tool_agent",
                  check="tests.interventions.apps:answer_is_5")
    assert [s.node for s in local_store.steps(run_id)] == ["agent", "tools", "agent"]
    # the recorded tool result is reused: the tool does not run again
    tools_before = apps.CALLS["tool:add"]
    _, replayed = _replay(local_store, run_id, None, "tools#0")
    assert apps.CALLS["tool:add"] == tools_before and replayed.answer == "the answer is 4"
    # a forced tool result
    _, result = _replay(local_store, run_id, {"kind": "tool", "tool": "add", "result": 5}, "tools#0")
    assert result.success and result.applied, result.applied_detail
    assert apps.CALLS["tool:add"] == tools_before
    # a forced model response: the model is not called for it
    model_before = apps.CALLS["model"]
    _, result = _replay(local_store, run_id, {"kind": "response", "text": "the answer is 5"}, "agent#0")
    assert result.success and result.applied, result.applied_detail
    assert apps.CALLS["model"] == model_before
    assert [s.node for s in local_store.steps(result.run_id)] == ["agent"]


def test_an_instruction_edit_reaches_a_langchain_model_in_a_users_node(local_store: TraceStore) -> None:
    graph = apps.tool_agent()
    run_id = _run(local_store, graph, {"messages": [("user", "add 2 and 2")]}, ref="tests.interventions.apps:tool_agent",
                  check="tests.interventions.apps:answer_is_5")
    replayer, result = _replay(local_store, run_id, {"kind": "instruction", "text": "Please answer 5."}, "agent#1")
    assert result.success and result.applied, result.applied_detail
    step = local_store.steps(result.run_id)[2]
    last = step.model_calls[0].request[-1]
    assert last["content"] == "Please answer 5." and last["role"] == "user"
    # without the edit the same replay fails: the note is what changed the answer
    _, control = _replay(local_store, run_id, None, "agent#1")
    assert not control.success and control.answer == "the answer is 4"


def test_fork_at_a_send_worker_keeps_its_siblings(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.fan, {"items": [1, 2, 3]})
    steps = local_store.steps(run_id)
    squares = [s for s in steps if s.node == "square"]
    assert len(squares) == 3
    target = squares[1]
    before = dict(apps.CALLS)
    edit = {"kind": "message", "text": "x"}
    with pytest.raises(InterventionError, match="wrote no message"):
        _replay(local_store, run_id, edit, f"square#{target.invocation}")
    replayer = Replayer(local_store, run_id)
    plan = replayer.compile(None, f"square#{target.invocation}")
    # replace the worker's output with a state update of its own
    from counterfact.capture import StepDirectives

    plan.directives = StepDirectives(output={"squares": [100]})
    plan.intervention = parse_intervention({"kind": "message", "text": "unused"})
    result = replayer.replay(plan, arm="treatment")
    child = local_store.steps(result.run_id)
    total = [s for s in child if s.node == "add_up"][-1]
    recorded = {s.output["squares"][0] for s in steps if s.node == "square"}
    assert total.output == {"total": sum(recorded) - target.output["squares"][0] + 100}
    ran = {k: apps.CALLS[k] - before.get(k, 0) for k in apps.CALLS if k.startswith("square:")}
    assert sum(ran.values()) == 0  # the edited worker's output was given; siblings kept


def test_fork_at_a_subgraph_step(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.nested, {"messages": [("user", "go")]}, ref="tests.interventions.apps:nested",
                  check=apps.answer_is_5)
    assert [s.node for s in local_store.steps(run_id)] == ["sub", "worker"]
    before = apps.CALLS["inner_draft"]
    _, result = _replay(local_store, run_id, {"kind": "message", "text": "compute 3+2"}, "sub#0")
    assert result.success and apps.CALLS["inner_draft"] == before


def test_fork_across_an_interrupt_reuses_the_recorded_answer(local_store: TraceStore) -> None:
    from langgraph.types import Command

    recorded = record(apps.approval, local_store, check=apps.answer_is_5)
    first = recorded.invoke({"messages": [("user", "go")]})
    assert first.status == "running" and "__interrupt__" in (first.state or {})
    done = recorded.continue_run(first.run_id, Command(resume="compute 2+2"))
    assert done.status == "failed"
    steps = local_store.steps(first.run_id)
    assert [s.node for s in steps] == ["ask", "worker"]
    _, same = _replay(local_store, first.run_id, None, "ask#0")
    assert same.status == "failed" and local_store.steps(same.run_id)[0].output["content"] == "compute 2+2"
    _, edited = _replay(local_store, first.run_id, {"kind": "resume", "value": "compute 4+1"}, "ask#0")
    assert edited.success


def test_verify_on_a_user_graph(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    replayer = Replayer(local_store, run_id)
    plan = replayer.compile(parse_intervention({"kind": "message", "text": "compute 2+3"}), "planner#0")
    report = verify(replayer, plan, pairs=1)
    assert report.deterministic and report.verdict == "validated", report.reason
    assert report.applied and report.comparison.treatment_successes == 1


def test_a_changed_graph_is_refused_with_the_nodes_named(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    with pytest.raises(TargetError, match="nodes removed: reviewer, worker; nodes added: solver"):
        Replayer(local_store, run_id, graph="tests.interventions.apps:changed_pipeline")
    forced = Replayer(local_store, run_id, graph="tests.interventions.apps:changed_pipeline", force=True)
    assert forced.target.recorded.info.nodes != local_store.get_run(run_id).labels["graph"]["nodes"]


def test_bad_graph_and_check_references(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    with pytest.raises(TargetError, match="graph 'tests.interventions.nowhere:graph' does not import"):
        Replayer(local_store, run_id, graph="tests.interventions.nowhere:graph")
    with pytest.raises(TargetError, match="check 'tests.interventions.apps:missing' does not import"):
        Replayer(local_store, run_id, check="tests.interventions.apps:missing")
    replayer = Replayer(local_store, run_id, check="tests.interventions.apps:broken_check")
    result = replayer.replay(replayer.compile(None, "worker#0"), arm="control")
    assert result.success is False
    assert "raised KeyError" in (local_store.get_run(result.run_id).outcome.detail or "")


def test_a_user_graph_on_chat_counterfact_takes_prefix_and_activation_edits(local_store: TraceStore, tiny: Any) -> None:
    import numpy as np

    from counterfact.agents import ChatCounterfact

    graph = apps.local_model_app(ChatCounterfact(model=tiny, max_tokens=6))
    run_id = _run(local_store, graph, {"messages": [("user", "Say something.")]}, check=apps.starts_with_yes)
    assert local_store.get_run(run_id).status == "failed"
    step = local_store.steps(run_id)[0]
    assert len(step.model_calls) == 1 and step.model_calls[0].params["counterfact_model"] == tiny.spec
    # a greedy replay with no edit reproduces the run exactly
    replayer = Replayer(local_store, run_id, graph=graph)
    same = replayer.replay(replayer.compile(None, "answer#0"), arm="control")
    assert local_store.steps(same.run_id)[0].output["content"] == step.output["content"]
    # a prefix edit makes the answer start with it, and repairs the run
    plan = replayer.compile(parse_intervention({"kind": "prefix", "text": "YES"}), "answer#0")
    report = verify(replayer, plan, pairs=1)
    assert report.verdict == "validated" and report.applied, report.reason
    # an activation edit reaches the model's hooks
    vector = np.random.default_rng(0).normal(size=64).tolist()
    edit = {"kind": "activation", "layers": [1], "positions": "all", "strength": 20.0, "vector": {"values": vector}}
    plan = replayer.compile(parse_intervention(edit), "answer#0")
    report = verify(replayer, plan, pairs=1)
    assert report.edit_hits and report.kl_divergence is not None and report.kl_divergence > 0
    assert report.applied, report.applied_detail


def test_tool_removal_is_checked_against_the_requests(local_store: TraceStore) -> None:
    graph = apps.tool_agent()
    run_id = _run(local_store, graph, {"messages": [("user", "add 2 and 2")]}, ref="tests.interventions.apps:tool_agent",
                  check="tests.interventions.apps:answer_is_5")
    assert local_store.steps(run_id)[0].model_calls[0].params["tools"] == ["add"]
    _, result = _replay(local_store, run_id, {"kind": "tool", "tool": "add", "action": "remove"}, "agent#0")
    assert result.applied, result.applied_detail
    request_tools = local_store.steps(result.run_id)[0].model_calls[0].params.get("tools") or []
    assert "add" not in request_tools
    with pytest.raises(InterventionError, match="not added"):
        _replay(local_store, run_id, {"kind": "tool", "tool": "multiply", "action": "add"}, "agent#0")


def test_bad_input_writes_nothing(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.pipeline, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    before = len(local_store.list_runs(limit=None))
    for kwargs, edit in [
        ({"graph": "tests.interventions.nowhere:graph"}, None),
        ({"graph": "tests.interventions.apps:changed_pipeline"}, None),
        ({"check": "tests.interventions.apps:missing"}, None),
        ({}, {"kind": "state", "patch": [{"op": "add", "path": "/nothing", "value": 1}]}),
    ]:
        with pytest.raises((TargetError, InterventionError)):
            replayer = Replayer(local_store, run_id, **kwargs)
            replayer.compile(parse_intervention(edit) if edit else None, "worker#0")
            if edit is None:
                raise AssertionError(f"{kwargs} was accepted")
    assert len(local_store.list_runs(limit=None)) == before


def test_a_graph_in_a_file_is_referenced_by_its_path(tmp_path: Any) -> None:
    from counterfact.graphs import import_ref

    source = tmp_path / "my_app.py"
    source.write_text(
        "from typing import TypedDict\n"
        "from langgraph.graph import StateGraph, START, END\n"
        "class S(TypedDict):\n    x: int\n"
        "def inc(s: S) -> dict:\n    return {'x': s['x'] + 1}\n"
        "builder = StateGraph(S)\nbuilder.add_node('inc', inc)\n"
        "builder.add_edge(START, 'inc')\nbuilder.add_edge('inc', END)\n"
    )
    builder = import_ref(f"{source}:builder")
    store = TraceStore.open(str(tmp_path / "file.db"))
    run_id = _run(store, builder, {"x": 1}, ref=f"{source}:builder")
    replayer, result = _replay(store, run_id, {"kind": "state", "patch": [{"op": "replace", "path": "/x", "value": 41}]}, "inc#0")
    assert store.steps(result.run_id)[0].output == {"x": 42}
    with pytest.raises(ImportError, match="not of the form"):
        import_ref("no_colon_here")


def test_fork_at_one_of_two_parallel_branches(local_store: TraceStore) -> None:
    run_id = _run(local_store, apps.parallel, {"messages": [("user", "go")]}, check=apps.answer_is_5)
    assert sorted(s.node for s in local_store.steps(run_id)) == ["left", "right", "worker"]
    before = dict(apps.CALLS)
    _, result = _replay(local_store, run_id, {"kind": "message", "text": "compute 3+2"}, "right#0")
    assert result.success and result.applied, result.applied_detail
    assert apps.CALLS["left"] == before["left"] and apps.CALLS["right"] == before["right"]
    final = local_store.get_run(result.run_id)
    assert final.status == "succeeded"


def test_a_state_edit_on_a_graph_without_messages_is_applied_by_the_state_it_wrote(local_store: TraceStore) -> None:
    """No model and no message: the state the edited node ran on is the evidence (before, such
    an edit was reported not applied, and one writing only numbers was applied unchecked)."""
    run_id = _run(local_store, apps.fan, {"items": [1, 2, 3]})
    edit = {"kind": "state", "patch": [{"op": "replace", "path": "/squares", "value": [5, 5]}]}
    replayer, result = _replay(local_store, run_id, edit, "add_up#0")
    assert result.applied, result.applied_detail
    assert local_store.steps(result.run_id)[-1].output == {"total": 10}
    # the same plan checked against a replay that did not write it (the run itself) is not applied
    plan = replayer.compile(parse_intervention(edit), "add_up#0")
    applied, detail = replayer.check_applied(plan, run_id)
    assert not applied and "channel squares holding the edited value" in detail


def test_a_replay_stopped_at_a_breakpoint_is_not_scored_as_finished(local_store: TraceStore) -> None:
    """The edit sends the run to the reviewer, before which the graph stops for a person: the
    replay waits there, unscored, though its state already holds the answer the check wants."""
    run_id = _run(local_store, apps.paused_before_review, {"messages": [("user", "go")]},
                  ref="tests.interventions.apps:paused_before_review", check=apps.answer_is_5)
    _, result = _replay(local_store, run_id, {"kind": "message", "text": "compute 2+3"}, "planner#0")
    assert (result.status, result.success, result.score) == ("running", False, 0.0)
    child = local_store.get_run(result.run_id)
    assert child.status == "running" and child.outcome is None
    assert [s.node for s in local_store.steps(result.run_id)] == ["planner", "worker"]
