"""A recorded supervisor run as people look at it: `runs show`, the viewer's step panel and
graph, and OTLP spans all show the handoffs and each step's calls in the order they ran."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from counterfact.cli import app as cli
from counterfact.formats import write_otlp_json
from counterfact.graphs import record
from counterfact.store import TraceStore
from counterfact.ui import graph_view, step_view
from examples.multiagent import supervisor
from examples.multiagent.common import QUESTIONS, correct


def _run(tmp_path: Any) -> tuple[TraceStore, str, str]:
    db = str(tmp_path / "runs.db")
    store = TraceStore.open(db)
    run_id = record(supervisor.scripted(), store, workflow="supervisor", ref="examples.multiagent.supervisor:scripted",
                    check=correct).invoke(
        {"messages": [("user", QUESTIONS[0])]}).run_id
    return store, run_id, db


def test_runs_show_lists_handoffs_and_calls_in_order(tmp_path: Any) -> None:
    _, run_id, db = _run(tmp_path)
    out = CliRunner().invoke(cli, ["runs", "show", run_id, "--db", db], env={"COLUMNS": "200"}).output
    assert "handoff supervisor -> researcher via transfer_to_researcher" in out
    assert "handoff supervisor -> math_expert via transfer_to_math_expert" in out
    researcher = out[out.index("1 researcher agent"):out.index("2 supervisor agent")]  # not a run id ending in 2
    lines = [line for line in researcher.splitlines() if "model " in line or "tool " in line]
    kinds = ["model" if "model " in line else "tool" for line in lines]
    assert kinds == ["model", "tool", "model", "tool", "model"]  # as they ran, not grouped


def test_the_viewer_shows_handoff_edges_and_a_step_timeline(tmp_path: Any) -> None:
    store, run_id, _ = _run(tmp_path)
    steps = store.steps(run_id)
    view = graph_view(store.get_run(run_id), steps)
    assert view is not None
    handed = {(e.source, e.target): e.handoffs for e in view.edges if e.handoffs}
    assert handed == {("supervisor", "researcher"): 1, ("supervisor", "math_expert"): 1}
    panel = step_view(store, run_id, 1)
    assert [type(c).__name__ for c in panel.calls] == [
        "ModelCallRecord", "ToolCallRecord", "ModelCallRecord", "ToolCallRecord", "ModelCallRecord"]
    first = step_view(store, run_id, 0)
    assert [(e.source, e.to) for e in first.handoffs] == [("supervisor", "researcher")]
    assert "handoff" in first.edit_templates


def test_otlp_spans_carry_the_handoffs(tmp_path: Any) -> None:
    store, run_id, _ = _run(tmp_path)
    path = tmp_path / "spans.jsonl"
    write_otlp_json(store, [run_id], path)
    spans = [span for line in path.read_text().splitlines()
             for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]

    def attrs(span: dict[str, Any]) -> dict[str, Any]:
        return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}

    handing = [attrs(s) for s in spans if "counterfact.handoff.to" in attrs(s)]
    assert [a["counterfact.handoff.to"] for a in handing] == ["researcher", "math_expert"]
    tools = [attrs(s) for s in spans if attrs(s).get("gen_ai.operation.name") == "execute_tool"]
    assert {a["gen_ai.tool.name"]: a.get("counterfact.tool.handoff") for a in tools if a.get("counterfact.tool.handoff")} == {
        "transfer_to_researcher": "researcher", "transfer_to_math_expert": "math_expert"}


def test_a_forced_response_is_shown_as_forced_not_as_zero_tokens(tmp_path: Any) -> None:
    from counterfact.interventions import Replayer, parse_intervention

    store, run_id, db = _run(tmp_path)
    replayer = Replayer(store, run_id)
    edit = parse_intervention({"kind": "response", "text": "The answer is 9390."})
    replay = replayer.replay(replayer.compile(edit, "supervisor#2"), arm="treatment")
    assert replay.applied, replay.applied_detail
    out = CliRunner().invoke(cli, ["runs", "show", replay.run_id, "--db", db], env={"COLUMNS": "200"}).output
    last = out[out.rindex("supervisor"):]
    assert "forced by the replay" in last and "0+0 tokens" not in last


def test_a_jsonl_export_keeps_the_timeline_agents_and_handoffs(tmp_path: Any) -> None:
    from counterfact.formats import export_jsonl, import_jsonl
    from counterfact.store import step_shape, verify_run

    store, run_id, _ = _run(tmp_path)
    export_jsonl(store, [run_id], tmp_path / "runs.jsonl")
    other = TraceStore.open(str(tmp_path / "other.db"))
    assert import_jsonl(other, tmp_path / "runs.jsonl") == [run_id]
    mine, theirs = store.steps(run_id), other.steps(run_id)
    assert [step_shape(s) for s in theirs] == [step_shape(s) for s in mine]
    assert [c.offset_ms for s in theirs for c in s.tool_calls] == [c.offset_ms for s in mine for c in s.tool_calls]
    assert verify_run(other, run_id).ok
