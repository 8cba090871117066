"""Trace exports of other tools imported as runs: a LangSmith run tree the LangSmith SDK traced
and read back (tests/formats/data/make_langsmith.py), and Langfuse observations in the Langfuse
SDK's own API models (make_langfuse.py); and a folder that goes on past a bad file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterfact.formats import export_jsonl, import_paths
from counterfact.store import TraceStore

DATA = Path(__file__).parent / "data"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    with TraceStore.open(str(tmp_path / "s.db")) as opened:
        yield opened


def test_a_langsmith_run_tree_maps_child_runs_to_steps_and_llm_and_tool_runs_to_calls(store: TraceStore) -> None:
    tree = json.loads((DATA / "langsmith_run_tree.json").read_text())
    [report] = import_paths(store, [DATA / "langsmith_run_tree.json"])
    assert report.format == "langsmith" and report.run_ids == [f"langsmith-{tree['id']}"]
    run, steps = store.get_run(report.run_ids[0]), store.steps(report.run_ids[0])
    assert run.workflow == "support_team" and run.source == "langsmith"
    assert run.task_input == {"question": tree["inputs"]["question"]}
    assert [s.node for s in steps] == [c["name"] for c in tree["child_runs"]] == ["researcher", "writer"]
    [llm] = steps[0].model_calls
    assert (llm.model, llm.backend, llm.prompt_tokens, llm.completion_tokens) == ("gpt-4o", "openai", 120, 18)
    assert llm.request == tree["child_runs"][0]["child_runs"][0]["inputs"]["messages"]
    assert llm.response["content"] == "Order #W200 is a desk; I will look its status up."
    [tool] = steps[0].tool_calls
    assert (tool.name, tool.arguments, tool.result) == ("get_order", {"order_id": "#W200"},
                                                        json.dumps({"status": "pending", "item": "desk"}))
    assert steps[1].output["content"] == "Your desk (order #W200) has shipped."
    assert run.total_tokens == 2 * 138


def test_a_flat_langsmith_run_list_is_put_back_into_its_tree(store: TraceStore, tmp_path: Path) -> None:
    """`Client.list_runs` gives runs flat, each naming its parent."""
    tree = json.loads((DATA / "langsmith_run_tree.json").read_text())
    flat: list[dict[str, object]] = []
    pending = [tree]
    while pending:
        run = pending.pop()
        pending.extend(run.pop("child_runs") or [])
        flat.append(run)
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(flat))
    [report] = import_paths(store, [path])
    steps = store.steps(report.run_ids[0])
    assert [s.node for s in steps] == ["researcher", "writer"] and len(steps[0].model_calls) == 1


def test_langfuse_observations_map_agents_to_steps_and_generations_and_tools_to_calls(store: TraceStore) -> None:
    [report] = import_paths(store, [DATA / "langfuse_observations.json"])
    assert report.format == "langfuse" and report.run_ids == ["langfuse-5f1b2c3d4e5f60718293a4b5c6d7e8f9"]
    run, steps = store.get_run(report.run_ids[0]), store.steps(report.run_ids[0])
    assert run.workflow == "support_team" and run.task_input == {"question": "Has my desk order #W200 shipped?"}
    assert [s.node for s in steps] == ["researcher", "handoff", "writer"]
    [generation] = steps[0].model_calls
    assert (generation.model, generation.prompt_tokens, generation.completion_tokens) == ("gpt-4o-2024-08-06", 120, 18)
    assert steps[0].tool_calls[0].name == "get_order"
    assert steps[2].model_calls[0].response["content"] == "Your desk (order #W200) has shipped."


def test_a_langfuse_trace_export_with_an_error_observation(store: TraceStore, tmp_path: Path) -> None:
    observations = json.loads((DATA / "langfuse_observations.json").read_text())["data"]
    children = [o for o in observations if o["parentObservationId"]]
    writer = next(o for o in children if o["name"] == "writer")
    writer.update(level="ERROR", statusMessage="rate limited")
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"id": "t-1", "name": "support", "timestamp": "2026-12-07T03:00:00Z",
                                "input": "Has my desk shipped?", "observations": children,
                                "scores": [{"name": "correct", "value": 0}]}))
    [report] = import_paths(store, [path])
    run, steps = store.get_run("langfuse-t-1"), store.steps("langfuse-t-1")
    assert report.run_ids == [run.id] and run.labels["scores"] == [{"name": "correct", "value": 0}]
    assert run.workflow == "support" and run.task_input == {"question": "Has my desk shipped?"}
    assert [s.node for s in steps] == ["researcher", "handoff", "writer"]  # under the trace, their parent left out
    assert [s.error for s in steps] == [None, None, "rate limited"]


def test_a_folder_goes_on_past_a_bad_file_and_reports_it_at_the_end(store: TraceStore, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    for name in ("openai_tool_calls.json", "taubench_results.json", "autogen_round_robin.json"):
        shutil.copy(DATA / name, folder / name)
    (folder / "broken.json").write_text(json.dumps([{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]))
    reports = {r.format: r for r in import_paths(store, [folder])}
    assert len(reports["openai"].run_ids) == 1 and len(reports["tau-bench"].run_ids) == 2
    assert len(reports["chat"].run_ids) == 1
    [skipped] = reports["none"].skipped
    assert skipped.what == str(folder / "broken.json") and "message[1] (tool) tool_call_id" in skipped.reason
    assert len(store.list_runs()) == 4


def test_every_imported_run_exports_and_imports_again_with_its_chain_intact(store: TraceStore, tmp_path: Path) -> None:
    """Times an export gave with a zone are kept as the store keeps times (naive UTC), so the
    digests of the imported runs survive a JSON lines round trip."""
    imported = [r for report in import_paths(store, [DATA]) for r in report.run_ids]
    assert len(imported) == 7
    export_jsonl(store, imported, tmp_path / "runs.jsonl")
    with TraceStore.open(str(tmp_path / "again.db")) as again:
        [report] = import_paths(again, [tmp_path / "runs.jsonl"])
        assert sorted(report.run_ids) == sorted(imported)
        assert [s.started_at for s in again.steps(imported[0])] == [s.started_at for s in store.steps(imported[0])]
