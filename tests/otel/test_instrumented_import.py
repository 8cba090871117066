"""Traces made by a real instrumentor, imported: a small LangGraph app on LangChain's OpenAI
client against `counterfact serve` (the embedded model over HTTP), traced by OpenInference's
LangChain instrumentor, written as OTLP JSON by the SDK's encoder, then imported by
`counterfact import otel` and given to `counterfact attribute`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

import pytest

from counterfact.formats._otel import otlp_json_line
from counterfact.store import TraceStore


class State(TypedDict, total=False):
    question: str
    facts: str
    answer: str


def _app(base_url: str) -> Any:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph

    model = ChatOpenAI(base_url=base_url, api_key="not-needed", model="embedded", max_tokens=24, temperature=0)

    @tool
    def lookup(key: str) -> str:
        """Look a fact up."""
        return {"population of Lowmoor": "790"}.get(key, "no entry")

    def researcher(state: State) -> dict[str, Any]:
        facts = lookup.invoke({"key": "population of Lowmoor"})
        reply = model.invoke([("system", "You state facts briefly."), ("user", f"Fact: population of Lowmoor is {facts}. Repeat it.")])
        return {"facts": str(reply.content)}

    def writer(state: State) -> dict[str, Any]:
        reply = model.invoke([("user", f"{state['facts']}\nQuestion: {state['question']}\nAnswer with a number.")])
        return {"answer": str(reply.content)}

    graph = StateGraph(State)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_edge(START, "researcher")
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", END)
    return graph.compile()


@pytest.mark.slow
def test_a_langgraph_app_traced_by_openinference_is_imported_and_attributed(tmp_path: Path, embedded: Any) -> None:
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    from counterfact.agents import create_app, running_server

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with running_server(create_app(embedded)) as url:
            _app(url).invoke({"question": "What is the population of Lowmoor?"})
    finally:
        instrumentor.uninstrument()
    spans = memory.get_finished_spans()
    kinds = sorted({str(s.attributes.get("openinference.span.kind")) for s in spans})
    assert {"CHAIN", "LLM", "TOOL"} <= set(kinds)
    file = tmp_path / "traces.jsonl"
    file.write_text(otlp_json_line(spans) + "\n")

    db = str(tmp_path / "s.db")
    cli = subprocess.run([sys.executable, "-m", "counterfact.cli", "import", "otel", str(file), "--db", db],
                         capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "imported 1 runs" in cli.stdout and "2 model calls, 1 tool calls" in cli.stdout, cli.stdout
    store = TraceStore.open(db)
    [run] = store.list_runs()
    assert run.workflow == "LangGraph" and run.source == "otel"
    steps = store.steps(run.id)
    assert [(s.node, s.agent) for s in steps] == [("researcher", "researcher"), ("writer", "writer")]
    assert [t.name for t in steps[0].tool_calls] == ["lookup"] and steps[0].tool_calls[0].result == "790"
    calls = [c for s in steps for c in s.model_calls]
    assert len(calls) == 2 and all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in calls)
    assert "Question: What is the population of Lowmoor?" in calls[1].request[-1]["content"]
    assert steps[1].output is not None and steps[0].started_at <= steps[1].started_at
    store.close()

    attributed = subprocess.run([sys.executable, "-m", "counterfact.cli", "attribute", run.id, "--method", "all_at_once", "--model", "embedded",
                                 "--db", db], capture_output=True, text=True, check=False, timeout=600)
    assert attributed.returncode == 0, attributed.stderr[-2000:]
    prediction = TraceStore.open(db).get_run(run.id).labels["attribution"]["all_at_once"]
    assert prediction["model"].startswith("smollm2") and prediction["questions"] >= 1
    # the weak embedded judge may answer badly; what must hold is that it was asked about this
    # run's log and its answer was read against the run's own agents and steps
    assert prediction["raw_outputs"] and prediction["agent"] in (None, "researcher", "writer")
    assert prediction["step"] in (None, 0, 1)
