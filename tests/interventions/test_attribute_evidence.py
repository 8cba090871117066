"""The evidence method of log-only attribution: signals from the log alone, no model, whole logs
of any length, and accuracy above the trivial baselines on the Who&When subset."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from counterfact._errors import CounterfactError
from counterfact.capture import ToolCallRecord
from counterfact.cli import app
from counterfact.formats import import_whowhen
from counterfact.interventions import (
    attribute,
    blame,
    gather_evidence,
    score_attributions,
)
from counterfact.store import StepRecord, TraceStore

QUESTION = "How many stations does the line have between North End and South Bay?"


def _step(index: int, agent: str, text: str, kind: str = "agent", **extra: object) -> StepRecord:
    return StepRecord(index=index, node=agent, agent=agent, kind=kind,  # type: ignore[arg-type]
                      output={"role": "assistant", "name": agent, "content": text}, **extra)


def _ag_log(folder: Path, name: str, history: list[tuple[str, str]], mistake: int) -> Path:
    """An Algorithm-Generated Who&When log with this (agent, text) history."""
    log = {
        "question": QUESTION,
        "ground_truth": "12",
        "is_correct": False,
        "system_prompt": {agent: f"You are {agent}." for agent, _ in history},
        "history": [{"content": text, "role": "user", "name": agent} for agent, text in history],
        "mistake_agent": history[mistake][0],
        "mistake_step": str(mistake),
        "mistake_reason": "the station count was invented",
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(log))
    return path


HISTORY = [
    ("Planner_Expert", f"# General Task\n{QUESTION}\n\nPlan: look the line up, count the stations."),
    ("Transit_Expert", "Let me look it up.\n```python\nprint(stations('North End', 'South Bay'))\n```"),
    ("Computer_terminal", "exitcode: 0 (execution succeeded)\nCode output: 12"),
    ("Transit_Expert", "I cannot access the timetable, so let's assume 47 stations for demonstration."),
    ("Computer_terminal", "exitcode: 1 (execution failed)\nCode output: Traceback (most recent call last):\nKeyError: 'line'"),
    ("Checker_Expert", "That is wrong: the count of 47 did not come from any output. It failed."),
    ("Transit_Expert", "Final answer: 47 stations."),
    ("Checker_Expert", "TERMINATE"),
]


def test_evidence_blames_the_invented_claim_without_a_model(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = import_whowhen(store, [_ag_log(tmp_path, "1", HISTORY, mistake=3)]).run_ids
    [result] = attribute(store, [run_id], None, "evidence")
    assert (result.agent, result.step) == ("Transit_Expert", 3)
    assert result.questions == 0 and result.prompt_tokens == 0 and not result.truncated and not result.errors
    assert result.model == "log-signals"
    top = result.candidates[0]
    assert top.step == 3 and top.fabricated >= 2 and top.tool_failed and top.criticised >= 2
    assert top.propagated == ["47"]  # invented here, repeated by the checker
    assert "47" in (result.reason or "") and "tool call it caused failed" in (result.reason or "")
    stored = store.get_run(run_id).labels["attribution"]["evidence"]
    assert stored["step"] == 3 and stored["candidates"][0]["step"] == 3
    score = score_attributions(store, [run_id], "evidence")
    assert (score.agent_correct, score.step_correct) == (1, 1)


def test_tools_input_handoffs_and_terminations_are_never_blamed() -> None:
    steps = [
        _step(0, "human", QUESTION, kind="input"),
        _step(1, "Router", "Next speaker Coder", kind="router", delta={"route": {"to": "Coder"}}),
        _step(2, "Coder", "Running the count now."),
        _step(3, "terminal", "Traceback (most recent call last):\nValueError: no such line", kind="tool"),
        _step(4, "Coder", "TERMINATE"),
    ]
    found = gather_evidence(steps, QUESTION)
    assert [e.step for e in found] == [2]  # the tool's failure is charged to the step that caused it
    assert found[0].tool_failed
    assert blame(steps, QUESTION).step == 2


def test_a_failed_tool_call_inside_a_step_and_grounded_numbers() -> None:
    failed = ToolCallRecord(name="lookup", arguments={"line": "North"}, error="timeout")
    steps = [
        _step(0, "Searcher", "The line has 12 stops per the search.",
              tool_calls=[ToolCallRecord(name="search", arguments={"q": "line"}, result="12 stops listed")]),
        _step(1, "Writer", "Then it is 12, and with the branch 30 in total.", tool_calls=[failed]),
        _step(2, "Checker", "Agreed: 30 stations."),
    ]
    first, second, _checker = gather_evidence(steps, QUESTION)
    assert first.propagated == [] and not first.tool_failed  # 12 came from its own tool result
    assert second.propagated == ["30"] and second.tool_failed
    assert blame(steps, QUESTION).step == 1


def test_a_step_that_raised_counts_against_itself() -> None:
    steps = [
        _step(0, "Lookup", "Looking the line up."),
        _step(1, "Adder", "Adding the branch stations.", error="ZeroDivisionError: division by zero"),
        _step(2, "Lookup", "Done."),
    ]
    assert [e.tool_failed for e in gather_evidence(steps, QUESTION)] == [False, True, False]


def test_a_step_others_build_on_weighs_more() -> None:
    seed = "The Harbour Crossing timetable lists Ferrygate, Lanternhill, Saltmarsh and Quayside stops."
    steps = [
        _step(0, "Scout", "Searching for something about trains in general today."),
        _step(1, "Scout", seed),
        _step(2, "Reader", "Counting Ferrygate, Lanternhill, Saltmarsh and Quayside from the Harbour timetable."),
        _step(3, "Writer", "So Ferrygate, Lanternhill, Saltmarsh, Quayside and Harbour: that is the answer."),
    ]
    found = {e.step: e for e in gather_evidence(steps, QUESTION)}
    assert (found[0].depended_on, found[1].depended_on) == (0, 2)
    assert found[1].score > found[0].score and "2 later steps of others build on" in found[1].reason


def test_a_long_log_is_read_whole_and_a_late_mistake_found() -> None:
    filler = "Still browsing the archive page, nothing new. " * 400  # 18,000 characters a step
    steps = [_step(i, "Surfer" if i % 2 else "Lead", filler) for i in range(300)]
    steps[251] = _step(251, "Surfer", "I will assume the value is 9000 (a placeholder).")
    steps[252] = _step(252, "Lead", "That was wrong and we are stuck in a loop; 9000 is not supported.")
    result = blame(steps, QUESTION)
    assert (result.agent, result.step) == ("Surfer", 251)
    assert result.candidates[0].propagated == ["9000"]


def test_methods_that_ask_a_model_still_need_one(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = import_whowhen(store, [_ag_log(tmp_path, "2", HISTORY, mistake=3)]).run_ids
    with pytest.raises(CounterfactError, match="needs a judge model"):
        attribute(store, [run_id], None, "all_at_once")


def test_cli_attributes_with_evidence_by_default(sqlite_path: str, tmp_path: Path) -> None:
    import_whowhen(TraceStore.open(sqlite_path), [_ag_log(tmp_path, "3", HISTORY, mistake=3)])
    result = CliRunner().invoke(app, ["attribute", "--db", sqlite_path], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "attribution (evidence)" in result.output and "Transit_Expert" in result.output
    assert "1/1 (100%)" in result.output  # agent and step both right, scored against the label


@pytest.mark.parametrize("half", ["Hand-Crafted", "Algorithm-Generated"])
def test_evidence_beats_the_trivial_baselines_on_who_and_when(whowhen: Path, sqlite_path: str, half: str) -> None:
    """Step accuracy above every trivial baseline, agent accuracy at least theirs (the design
    figures of the benchmark; the full table is benchmarks/bench_attribution.py)."""
    store = TraceStore.open(sqlite_path)
    ids = import_whowhen(store, [whowhen / half]).run_ids
    attribute(store, ids, None, "evidence")
    score = score_attributions(store, ids, "evidence")
    baselines: Counter[str] = Counter()
    for run_id in ids:
        labels = store.get_run(run_id).labels
        written = [s for s in store.steps(run_id) if s.kind not in ("input", "tool")]
        for name, chosen in (("first", written[0]), ("last", written[-1])):
            baselines[f"{name} agent"] += chosen.agent == labels["mistake_agent"]
            baselines[f"{name} step"] += chosen.index == labels["mistake_step"]
    assert score.step_correct > max(baselines["first step"], baselines["last step"])
    assert score.agent_correct >= max(baselines["first agent"], baselines["last agent"])
