"""The multi-agent apps on real models: the embedded model in this process (ChatCounterfact)
and the same model behind `counterfact serve` through langchain-openai's ChatOpenAI (a real
HTTP client against a real server on loopback). Both decode greedily, so a plain run and a
recorded run make the same calls and a replay reproduces the recording."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from counterfact.agents import ChatCounterfact, create_app, running_server
from counterfact.graphs import record
from counterfact.interventions import Budget, Debugger, Replayer
from counterfact.store import TraceStore, step_handoffs, step_shape
from examples.multiagent import supervisor, swarm
from examples.multiagent.common import QUESTIONS, correct

from .test_record_replay import Counter

pytestmark = pytest.mark.slow
QUESTION = QUESTIONS[0]
LIMIT = {"recursion_limit": 30}  # the embedded model can loop; the run ends at this limit


@pytest.fixture(scope="module")
def base_url(embedded: Any) -> Iterator[str]:
    with running_server(create_app(embedded)) as url:
        yield url


def _check(graph: Any, tmp_path: Any, name: str, *, hands_off: bool = True) -> tuple[TraceStore, str]:
    counter = Counter()
    try:
        graph.compile().invoke({"messages": [("user", QUESTION)]}, {**LIMIT, "callbacks": [counter]})
    except Exception:  # a run that hits the limit still made its calls
        pass
    store = TraceStore.open(str(tmp_path / f"{name}.db"))
    run = record(graph, store, workflow=name, check=correct).invoke({"messages": [("user", QUESTION)]}, LIMIT)
    steps = store.steps(run.run_id)
    assert steps and store.get_run(run.run_id).labels["config"] == {"recursion_limit": 30}
    assert sum(len(s.model_calls) for s in steps) == len(counter.models)
    assert sum(len(s.tool_calls) for s in steps) == len(counter.tools)
    assert any(step_handoffs(s) for s in steps) == hands_off
    replayer = Replayer(store, run.run_id, graph=graph)
    for at in sorted({0, len(steps) - 1}):
        control = replayer.replay(replayer.compile(None, at), arm="control")
        assert [step_shape(s) for s in store.steps(control.run_id)] == [step_shape(s) for s in steps], at
        assert control.status == store.get_run(run.run_id).status
    return store, run.run_id


def test_the_supervisor_app_on_the_embedded_model(embedded: Any, tmp_path: Any) -> None:
    _check(supervisor.build(ChatCounterfact(model=embedded, max_tokens=96)), tmp_path, "supervisor")


def test_the_supervisor_app_on_counterfact_serve_through_chat_openai(base_url: str, tmp_path: Any) -> None:
    chat = ChatOpenAI(model="embedded", base_url=base_url, api_key="unused", temperature=0, max_tokens=96, max_retries=0)
    _check(supervisor.build(chat), tmp_path, "supervisor")


def test_the_swarm_on_the_embedded_model(embedded: Any, tmp_path: Any) -> None:
    _check(swarm.build(ChatCounterfact(model=embedded, max_tokens=96)), tmp_path, "swarm")


def test_a_debug_session_of_a_supervisor_run_is_quick_and_considers_the_handoffs(embedded: Any, tmp_path: Any) -> None:
    graph = supervisor.build(ChatCounterfact(model=embedded, max_tokens=96))
    store, run_id = _check(graph, tmp_path, "supervisor")
    # greedy, so the same every time: the embedded supervisor hands the question to the math
    # expert before anyone looked the populations up
    assert store.get_run(run_id).status != "succeeded"
    report = Debugger(Replayer(store, run_id, graph=graph), strategies=["handoff"], budget=Budget(replays=6)).run()
    proposed = [h for h in report.hypotheses if h.step is not None]
    assert proposed and all(h.strategy == "handoff" for h in proposed)
    assert all(h.status in ("verified", "undecided") for h in proposed)
    assert report.spent.replays <= 6
