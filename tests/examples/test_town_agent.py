"""The example app (examples/town_agent) as a user runs it: ChatOpenAI with tools through a
ToolNode, on `counterfact serve`'s app over the embedded model, recorded, replayed with
edits, and debugged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from counterfact.agents import ChatCounterfact, create_app, running_server
from counterfact.graphs import record
from counterfact.interventions import Replayer, parse_intervention, verify
from counterfact.store import TraceStore
from examples.town_agent import app

pytestmark = pytest.mark.slow
QUESTION = "What is the population of Wexham plus Corfe?"


@pytest.fixture(scope="module")
def base_url(embedded: Any) -> Iterator[str]:
    with running_server(create_app(embedded)) as url:
        yield url


def _graph(base_url: str) -> Any:
    chat = ChatOpenAI(model="embedded", base_url=base_url, api_key="unused", temperature=0,
                      max_tokens=64, max_retries=0)
    return app.build(chat.bind_tools(app.TOOLS))


def test_the_app_is_recorded_with_its_model_and_tool_calls(base_url: str, tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "town.db"))
    result = record(_graph(base_url), store, check=app.correct).invoke({"messages": [("user", QUESTION)]})
    steps = store.steps(result.run_id)
    agents = [s for s in steps if s.node == "agent"]
    assert agents and all(len(s.model_calls) == 1 for s in agents)
    call = agents[0].model_calls[0]
    assert call.backend.startswith("langchain:") and call.params["temperature"] == 0
    assert call.params["tools"] == ["population", "add"] and call.prompt_tokens > 0
    assert call.request[-1]["content"] == QUESTION
    tools = [c for s in steps if s.node == "tools" for c in s.tool_calls]
    assert all(c.name in ("population", "add") for c in tools)
    assert store.get_run(result.run_id).status in ("succeeded", "failed")


def test_a_failed_run_is_repaired_by_a_verified_edit(base_url: str, tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "town.db"))
    graph = _graph(base_url)
    run_id = record(graph, store, check=app.correct).invoke({"messages": [("user", QUESTION)]}).run_id
    last = len(store.steps(run_id)) - 1
    replayer = Replayer(store, run_id, graph=graph)
    # the agent's last turn answers from what the tools returned: force it to say the sum
    edit = {"kind": "response", "text": "The answer is 5365."}
    report = verify(replayer, replayer.compile(parse_intervention(edit), last), pairs=1)
    if store.get_run(run_id).status == "succeeded":
        assert report.verdict == "inconclusive"  # nothing to repair: the control succeeds too
    else:
        assert report.verdict == "validated" and report.applied, report.reason
        assert report.deterministic  # temperature 0 everywhere: one replay per arm decides


def test_the_app_on_chat_counterfact_takes_an_activation_edit(embedded: Any, tmp_path: Any) -> None:
    store = TraceStore.open(str(tmp_path / "town.db"))
    graph = app.build(ChatCounterfact(model="embedded", max_tokens=48).bind_tools(app.TOOLS))
    run_id = record(graph, store, check=app.correct).invoke({"messages": [("user", QUESTION)]}).run_id
    replayer = Replayer(store, run_id, graph=graph)
    edit = {"kind": "activation", "layers": [12], "positions": "all", "strength": 8.0,
            "vector": {"contrastive": {"positive": ["CALL population"], "negative": ["The answer is"]}}}
    report = verify(replayer, replayer.compile(parse_intervention(edit), "agent#0"), pairs=1)
    assert report.edit_hits and report.kl_divergence is not None and report.kl_divergence > 1e-3
    assert report.applied, report.applied_detail
