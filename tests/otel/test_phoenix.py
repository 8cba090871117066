"""Runs exported to a real Arize Phoenix on loopback, read back through Phoenix's own REST API:
span kinds, parents, token counts, the replay's reference to its run and the verification's
verdict. (Phoenix keeps no OpenTelemetry span links, so a replay's link is checked by its
attributes here and by the OTLP payload in test_roundtrip.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from counterfact.formats import export_otlp
from counterfact.formats._otel import span_id_of
from counterfact.graphs import record
from counterfact.interventions import Replayer, parse_intervention, verify
from counterfact.store import TraceStore

from ..interventions import apps
from .conftest import Phoenix


def _by_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["context"]["span_id"]: s for s in spans}


def _check_runs_in_phoenix(store: TraceStore, phoenix: Phoenix, project: str, runs: list[str]) -> list[dict[str, Any]]:
    expected = sum(1 + sum(1 + len(s.model_calls) + len(s.tool_calls) for s in store.steps(r)) for r in runs)
    expected += len(store.verdicts())
    spans = phoenix.wait_for_spans(project, expected)
    assert len(spans) == expected
    by_id = _by_id(spans)
    for run_id in runs:
        run = store.get_run(run_id)
        root = by_id[f"{span_id_of('run', run_id):016x}"]
        assert root["parent_id"] is None and root["span_kind"] == "CHAIN"
        assert root["name"] == f"invoke_workflow {run.workflow}"
        assert root["attributes"]["counterfact.run.status"] == run.status
        for step in store.steps(run_id):
            span = by_id[f"{span_id_of('step', run_id, step.index):016x}"]
            assert span["parent_id"] == root["context"]["span_id"]
            assert span["span_kind"] == ("AGENT" if step.kind == "agent" and (step.agent or step.model_calls) else "CHAIN")
            for seq, call in enumerate(step.model_calls):
                llm = by_id[f"{span_id_of('model', run_id, step.index, seq):016x}"]
                assert llm["span_kind"] == "LLM" and llm["parent_id"] == span["context"]["span_id"]
                assert llm["attributes"]["llm.token_count.prompt"] == call.prompt_tokens
                assert llm["attributes"]["llm.token_count.completion"] == call.completion_tokens
                assert llm["attributes"]["gen_ai.usage.input_tokens"] == call.prompt_tokens
            for seq, tool in enumerate(step.tool_calls):
                span_tool = by_id[f"{span_id_of('tool', run_id, step.index, seq):016x}"]
                assert span_tool["span_kind"] == "TOOL" and span_tool["attributes"]["tool.name"] == tool.name
        if run.parent_run_id:
            assert root["attributes"]["counterfact.replay.parent_run_id"] == run.parent_run_id
            assert root["attributes"]["counterfact.replay.fork_step"] == run.fork_step
            assert root["attributes"]["counterfact.verification.verdict"] in ("validated", "refuted", "inconclusive")
    return spans


def test_runs_replays_and_verdicts_arrive_in_phoenix(tmp_path: Any, phoenix: Phoenix) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    record(apps.tool_agent(), store, ref="tests.interventions.apps:tool_agent").invoke({"messages": [("user", "add 2 and 2")]})
    run_id = record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    replayer = Replayer(store, run_id)
    report = verify(replayer, replayer.compile(parse_intervention({"kind": "message", "text": "compute 2+3"}), "planner#0"),
                    pairs=1)
    runs = [r.id for r in reversed(store.list_runs(limit=None))]
    count, sent = export_otlp(store, runs, phoenix.url, project="cf-apps")
    assert count == 4
    spans = _check_runs_in_phoenix(store, phoenix, "cf-apps", runs)
    assert len(spans) == sent
    treatment = next(s for s in spans if s["attributes"].get("counterfact.label.arm") == "treatment")
    assert json.loads(treatment["attributes"]["counterfact.replay.intervention"])["edits"][0]["text"] == "compute 2+3"
    verification = next(s for s in spans if s["name"] == "verify_intervention")
    assert verification["span_kind"] == "EVALUATOR"
    assert verification["attributes"]["counterfact.verification.verdict"] == report.verdict == "validated"
    assert verification["attributes"]["counterfact.verification.treatment_rate"] == 1.0
    assert verification["attributes"]["counterfact.verification.p_value"] == pytest.approx(report.comparison.p_value)


def test_live_export_reaches_phoenix_while_recording(tmp_path: Any, phoenix: Phoenix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERFACT_OTLP_ENDPOINT", phoenix.url)
    store = TraceStore.open(str(tmp_path / "live.db"))
    run_id = record(apps.tool_agent(), store, ref="tests.interventions.apps:tool_agent").invoke(
        {"messages": [("user", "add 2 and 2")]}).run_id
    assert store.live is not None
    store.live.flush()
    _check_runs_in_phoenix(store, phoenix, "counterfact", [run_id])


@pytest.mark.slow
def test_the_demos_runs_and_a_verified_replay_arrive_in_phoenix(tmp_path: Any, phoenix: Phoenix) -> None:
    from counterfact.graphs import (
        DEMO_SUITE,
        DEMO_WORKFLOW,
        load_suite,
        load_workflow,
        run_suite,
    )

    store = TraceStore.open(str(tmp_path / "demo.db"))
    results = run_suite(load_workflow(DEMO_WORKFLOW), load_suite(DEMO_SUITE), store, model="embedded", limit=2)
    run = store.get_run(results[0].run_id)
    answer = f"FINAL ANSWER: {run.labels['task']['answer']}"
    replayer = Replayer(store, run.id)
    verify(replayer, replayer.compile(parse_intervention({"kind": "message", "text": answer}), "reporter#0"), pairs=1)
    runs = [r.id for r in reversed(store.list_runs(limit=None))]
    export_otlp(store, runs, phoenix.otlp_url, project="cf-demo")
    spans = _check_runs_in_phoenix(store, phoenix, "cf-demo", runs)
    llm = [s for s in spans if s["span_kind"] == "LLM"]
    assert llm and all(s["attributes"]["llm.model_name"].startswith("smollm2") for s in llm)
    assert sum(s["attributes"]["llm.token_count.total"] for s in llm) == sum(store.get_run(r).total_tokens for r in runs)
