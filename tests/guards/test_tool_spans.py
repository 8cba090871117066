"""The GenAI semantic-convention attributes of tool spans, read from an OTLP JSON export
(`write_otlp_json`): each recorded tool call is an `execute_tool {name}` span under its step,
with `gen_ai.operation.name`, `gen_ai.tool.name`, `gen_ai.tool.call.arguments` (JSON) and
`gen_ai.tool.call.result`; a failed call has no result and an error status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from counterfact.formats import write_otlp_json
from counterfact.graphs import record
from counterfact.store import TraceStore

from ..interventions import apps


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"boom: {reason}")


def _asks_explode(state: MessagesState) -> dict[str, Any]:
    call = {"name": "explode", "args": {"reason": "on purpose"}, "id": "call_explode"}
    return {"messages": [AIMessage("", tool_calls=[call])]}


def _failing_tool_graph() -> StateGraph:
    graph = StateGraph(MessagesState)
    graph.add_node("agent", _asks_explode)
    graph.add_node("tools", ToolNode([explode], handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "tools")
    graph.add_edge("tools", END)
    return graph


def _spans(path: Path) -> list[dict[str, Any]]:
    return [span for line in path.read_text().splitlines()
            for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def test_tool_spans_carry_the_genai_tool_attributes(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "trace.db"))
    ok = record(apps.tool_agent(), store, ref="tests.interventions.apps:tool_agent").invoke(
        {"messages": [("user", "add 2 and 2")]}).run_id
    failed = record(_failing_tool_graph(), store).invoke({"messages": [("user", "go")]}).run_id
    recorded = {c.name: c for r in (ok, failed) for s in store.steps(r) for c in s.tool_calls}
    assert recorded["add"].result == "4" and recorded["explode"].error  # what the spans must show
    path = tmp_path / "spans.jsonl"
    write_otlp_json(store, [ok, failed], path)
    spans = _spans(path)
    by_id = {s["spanId"]: s for s in spans}
    tools = [s for s in spans if _attributes(s).get("gen_ai.operation.name") == "execute_tool"]
    assert sorted(s["name"] for s in tools) == ["execute_tool add", "execute_tool explode"]

    add = _attributes(next(s for s in tools if s["name"] == "execute_tool add"))
    assert add["gen_ai.tool.name"] == "add"
    assert json.loads(add["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 2}
    assert add["gen_ai.tool.call.result"] == "4"

    explode_span = next(s for s in tools if s["name"] == "execute_tool explode")
    boom = _attributes(explode_span)
    assert boom["gen_ai.tool.name"] == "explode"
    assert json.loads(boom["gen_ai.tool.call.arguments"]) == {"reason": "on purpose"}
    assert "gen_ai.tool.call.result" not in boom  # it failed: no result
    assert explode_span["status"]["code"] == "STATUS_CODE_ERROR"
    assert "boom: on purpose" in explode_span["status"]["message"]

    # each tool span sits under the span of the step that made the call (the `tools` node)
    for span in tools:
        parent = _attributes(by_id[span["parentSpanId"]])
        assert parent.get("gen_ai.operation.name") != "execute_tool"
        assert "tools" in by_id[span["parentSpanId"]]["name"]
