"""Message logs of other tools imported as runs: AutoGen team transcripts (made by AutoGen on a
replay model client, tests/formats/data/make_autogen.py), Magentic-One and AG2 histories as bare
lists (the Who&When logs' own), OpenAI message lists and tau-bench results (made through the
OpenAI SDK, make_openai.py); and a labels file that states their failure causes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterfact.formats import FormatError, detect_format, import_paths
from counterfact.store import TraceStore

DATA = Path(__file__).parent / "data"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    with TraceStore.open(str(tmp_path / "s.db")) as opened:
        yield opened


def _one(store: TraceStore, path: Path, fmt: str) -> str:
    [report] = import_paths(store, [path])
    assert report.format == fmt and len(report.run_ids) == 1, report
    return report.run_ids[0]


def test_an_autogen_team_run_is_a_step_per_message_with_its_tool_call_and_tokens(store: TraceStore) -> None:
    path = DATA / "autogen_round_robin.json"
    original = json.loads(path.read_text())["messages"]
    run_id = _one(store, path, "chat")
    run, steps = store.get_run(run_id), store.steps(run_id)
    assert [s.agent for s in steps] == [m["source"] for m in original]
    assert [s.kind for s in steps] == ["input", "agent", "agent", "tool", "agent", "agent"]
    assert run.task_input == {"question": "What is 17 + 25?"} and run.workflow == "autogen"
    assert run.labels["stop_reason"] == "Text 'TERMINATE' mentioned"
    [call] = steps[2].tool_calls
    assert (call.name, call.arguments, call.result) == ("add", {"a": 17, "b": 25}, "42")
    assert (steps[2].output["content"], steps[3].output["content"]) == ("", "42")  # the call is shown as a call
    assert [s.invocation for s in steps if s.agent == "coder"] == [0, 1, 2]
    usage = [m["models_usage"] for m in original if m["models_usage"]]
    assert run.total_tokens == sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage)
    assert steps[4].output["content"] == "The sum is 43."
    assert steps[1].input == [steps[0].output]  # the planner's first turn: everything before it
    assert steps[5].input == [s.output for s in steps[2:5]]  # later: what was said since its last turn
    assert steps[1].started_at.isoformat().startswith(original[1]["created_at"][:19])


def test_a_magentic_one_run_of_autogen_keeps_the_orchestrator_turns(store: TraceStore) -> None:
    steps = store.steps(_one(store, DATA / "autogen_magentic_one.json", "chat"))
    assert [s.agent for s in steps] == ["user", "MagenticOneOrchestrator", "MagenticOneOrchestrator", "assistant",
                                        "MagenticOneOrchestrator"]
    assert "Here is the plan to follow" in steps[1].output["content"]


def test_a_bare_list_of_role_and_content_is_a_transcript_not_an_error(store: TraceStore, whowhen: Path,
                                                                      tmp_path: Path) -> None:
    """The issue's Magentic-One transcript: Who&When's history alone, a JSON list of {role, content}."""
    history = json.loads((whowhen / "Hand-Crafted" / "1.json").read_text())["history"]
    path = tmp_path / "magentic.json"
    path.write_text(json.dumps(history))
    steps = store.steps(_one(store, path, "chat"))
    assert [s.output["content"] for s in steps] == [m["content"] for m in history]
    assert [s.agent for s in steps] == [m["role"] for m in history]
    assert steps[0].kind == "input"
    ag2 = json.loads((whowhen / "Algorithm-Generated" / "1.json").read_text())["history"]
    path.write_text(json.dumps({"chat_history": ag2}))
    steps = store.steps(_one(store, path, "chat"))
    assert [s.agent for s in steps] == [m["name"] for m in ag2]  # AG2: `name` over `role`


def test_a_failure_cause_in_the_file_is_stored_as_the_runs_labels(store: TraceStore, tmp_path: Path) -> None:
    path = tmp_path / "labelled.json"
    messages = [{"sender": "user", "content": "2+2?"}, {"sender": "Solver", "content": "5"},
                {"sender": "checker", "content": "ok"}]
    path.write_text(json.dumps({"messages": messages, "mistake_agent": "solver", "mistake_step": "1",
                                "mistake_reason": "wrong sum"}))
    run = store.get_run(_one(store, path, "chat"))
    assert run.status == "failed"
    assert (run.labels["mistake_agent"], run.labels["mistake_step"], run.labels["mistake_reason"]) == ("Solver", 1, "wrong sum")


def test_openai_messages_map_tool_calls_to_their_results(store: TraceStore) -> None:
    path = DATA / "openai_tool_calls.json"
    run_id = _one(store, path, "openai")
    run, steps = store.get_run(run_id), store.steps(run_id)
    assert [s.kind for s in steps] == ["input", "input", "agent", "tool", "agent"]
    assert run.task_input == {"question": "Where is my order #W100?"}
    [call] = steps[2].tool_calls
    assert call.name == "get_order" and call.arguments == {"order_id": "#W100"}
    assert json.loads(call.result) == {"status": "delivered", "item": "lamp"}
    assert steps[2].output["tool_calls"][0]["id"] == "call_100"
    [again] = import_paths(store, [path])
    assert again.run_ids == [] and "already in the store" in again.skipped[0].reason


def test_tau_bench_results_are_runs_failed_below_reward_one_with_the_task(store: TraceStore) -> None:
    path = DATA / "taubench_results.json"
    [report] = import_paths(store, [path])
    assert report.format == "tau-bench" and len(report.run_ids) == 2
    runs = {store.get_run(r).task_input["task_id"]: store.get_run(r) for r in report.run_ids}
    assert (runs[0].status, runs[1].status) == ("succeeded", "failed")
    assert runs[1].outcome is not None and runs[1].outcome.score == 0.0 and not runs[1].outcome.success
    assert runs[1].labels["task"]["user_id"] == "bob_2" and runs[1].labels["reward_info"]["reward"] == 0.0
    assert runs[1].task_input["question"] == "You want to know the status of order #W200."
    steps = store.steps(runs[1].id)
    assert steps[-1].output["content"] == "Yes, your desk has shipped."
    assert steps[2].tool_calls[0].name == "get_order"


def test_each_file_is_told_apart_by_content(tmp_path: Path) -> None:
    expected = {"autogen_round_robin.json": "chat", "openai_tool_calls.json": "openai",
                "taubench_results.json": "tau-bench", "langsmith_run_tree.json": "langsmith",
                "langfuse_observations.json": "langfuse"}
    for name, fmt in expected.items():
        renamed = tmp_path / f"{fmt}.log"
        shutil.copy(DATA / name, renamed)
        found = detect_format(renamed)
        assert found is not None and found.name == fmt, name


@pytest.mark.parametrize(("fmt", "content", "message"), [
    ("chat", [{"sender": "a", "content": "x"}, {"content": "y"}], "message[1] names no speaker"),
    ("chat", [{"sender": "a", "content": "x"}, 7], "message[1] is a number, not a message object"),
    ("chat", {"notes": []}, "top level is an object with no list of messages"),
    ("openai", [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}], "message[1] (tool) tool_call_id: Field required"),
    ("openai", [{"role": "robot", "content": "x"}], "message[0] has role 'robot'"),
    ("tau-bench", [{"task_id": 0, "reward": "high", "info": {}, "traj": []}], "result[0] reward: Input should be a valid number"),
    ("langsmith", [{"id": "1", "name": "r", "run_type": "chain"}], "run[0] is an object with no run_type, id and start_time"),
    ("langfuse", {"data": [{"id": "o", "type": "SPAN", "startTime": "yesterday", "traceId": "t"}]}, "entry[0] startTime: Input should be a valid datetime"),
])
def test_a_bad_file_is_one_line_naming_file_and_entry_and_nothing_is_stored(
        store: TraceStore, tmp_path: Path, fmt: str, content: object, message: str) -> None:
    good = DATA / "openai_tool_calls.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(FormatError) as err:
        import_paths(store, [good, bad], format_name=fmt) if fmt == "openai" else import_paths(store, [bad], format_name=fmt)
    text = str(err.value)
    assert text.startswith(f"{bad}: ") and message in text and "expected" in text and "\n" not in text, text
    assert store.list_runs() == []


def test_a_labels_file_puts_the_truth_on_the_runs_it_names_and_attribute_scores_against_it(tmp_path: Path) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text("autogen_round_robin.json:\n  mistake_agent: Coder\n  mistake_step: 4\n  mistake_reason: reported 43\n"
                      "elsewhere.json:\n  mistake_agent: x\n")
    db = str(tmp_path / "cli.db")
    cli = [sys.executable, "-m", "counterfact.cli"]
    out = subprocess.run([*cli, "import", str(DATA / "autogen_round_robin.json"), str(DATA / "openai_tool_calls.json"),
                          "--labels", str(labels), "--db", db], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "labels 'elsewhere.json': names no run of this import" in out.stdout
    with TraceStore.open(db) as store:
        runs = {r.source: r for r in store.list_runs()}
        chat = runs["chat"]
        assert (chat.labels["mistake_agent"], chat.labels["mistake_step"], chat.labels["truth_from"]) == ("coder", 4, "labels.yaml")
        assert "mistake_agent" not in runs["openai"].labels
    scored = subprocess.run([*cli, "attribute", chat.id, "--db", db], capture_output=True, text=True, check=False)
    assert scored.returncode == 0 and "against the labels" in scored.stdout, scored.stderr
    labels.write_text("autogen_round_robin.json:\n  mistake_step: 4\n")
    bad = subprocess.run([*cli, "import", str(DATA / "taubench_results.json"), "--labels", str(labels), "--db", db],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "mistake_agent" in bad.stderr, bad.stderr
    with TraceStore.open(db) as store:
        assert len(store.list_runs()) == 2  # the bad labels file stopped the import before it began
