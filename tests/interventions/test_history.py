"""A run against the store's earlier runs: a tool that went wrong for good is placed by what the
same call returned before, and its usual result repairs the run; an agent whose instructions
changed is placed by the last successful run of the input, and its earlier instructions (a
prompt edit) repair it. A tool edit with arguments forces only the calls with those arguments."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from langchain_core.messages import SystemMessage
from langchain_core.tools import StructuredTool

from counterfact.bench import WRONG_SENTENCE, fault_named
from counterfact.graphs import record
from counterfact.interventions import Budget, Debugger, Intervention, Replayer
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.tool import ToolEdit
from counterfact.interventions.strategies import usual_result
from counterfact.store import ToolPrecedent, TraceStore
from examples.multiagent import supervisor
from examples.multiagent.common import QUESTIONS, TOOLS, ScriptedTeamModel, correct

TASK = {"messages": [("user", QUESTIONS[0])]}  # Lowmoor plus Glenlyn


def _buggy_run(store: TraceStore, *, earlier: bool) -> tuple[str, Any, int]:
    """A run whose `population` tool answers one town wrong every time; with `earlier`, the
    store also holds a run from before the bug."""
    clean_store = store if earlier else TraceStore.open(str(Path(store.engine.url.database).with_suffix(".clean.db")))
    clean = record(supervisor.build(ScriptedTeamModel(), TOOLS), clean_store, workflow="supervisor", check=correct).invoke(TASK)
    faulted = fault_named("tool_bug").inject(supervisor.build, ScriptedTeamModel(), TOOLS, clean_store.steps(clean.run_id),
                                             random.Random(0))
    assert faulted is not None
    result = record(faulted.graph, store, workflow="supervisor", check=correct).invoke(TASK)
    assert result.status == "failed"
    [event] = faulted.events[:1]
    step = next(s.index for s in store.steps(result.run_id) for c in s.tool_calls if str(c.result) == event.shows)
    return result.run_id, faulted.graph, step


def test_a_persistent_tool_bug_is_placed_by_its_history_and_repaired(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, truth = _buggy_run(store, earlier=True)
    replayer = Replayer(store, run_id, graph=graph, check=correct)
    # re-execution cannot place it: the bug answers the same every time
    rerun = Debugger(replayer, strategies=["rerun"], budget=Budget(replays=8), repeatable_tools=["population", "add"]).run()
    assert rerun.hypotheses == [] and any("the fault persists" in note for note in rerun.notes)
    report = Debugger(Replayer(store, run_id, graph=graph, check=correct), strategies=["history"], budget=Budget(replays=8),
                      repeatable_tools=["population", "add"]).run()
    [h] = report.hypotheses
    assert (h.step, h.strategy, h.verdict) == (truth, "history", "validated")
    assert h.evidence["usual"] != h.evidence["result"] and h.evidence["tool"] == "population"
    assert report.spent.replays == 2  # the fix and the shared control


def test_with_no_earlier_run_history_proposes_nothing(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, _ = _buggy_run(store, earlier=False)
    report = Debugger(Replayer(store, run_id, graph=graph, check=correct), strategies=["history"],
                      budget=Budget(replays=8)).run()
    assert report.hypotheses == [] and report.spent.replays == 0
    assert any("no tool call answered otherwise" in note for note in report.notes)


def test_precedents_are_original_runs_other_than_this_one(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, truth = _buggy_run(store, earlier=True)
    calls = [c for c in store.steps(run_id)[truth].tool_calls if c.name == "population"]
    replayer = Replayer(store, run_id, graph=graph, check=correct)
    replayer.replay(replayer.compile(None, 0), arm="control", live_tools=True)  # a replay calls it too
    found = {c.arguments["town"]: store.tool_precedents(c.name, c.arguments, excluding=run_id) for c in calls}
    assert all(len(p) == 1 and p[0].run_id != run_id and p[0].run_status == "succeeded" for p in found.values())
    differ = [c for c in calls if found[c.arguments["town"]][0].result != c.result]
    assert len(differ) == 1  # the one the bug answered
    assert store.tool_precedents("population", {"town": "Atlantis"}, excluding=run_id) == []


def _precedent(run: str, result: Any, *, status: str = "succeeded", task: str = "t1", error: str | None = None) -> ToolPrecedent:
    return ToolPrecedent(run_id=run, run_status=status, run_labels={"task_id": task}, step=0, result=result, error=error)


def test_the_usual_result_is_one_every_counted_run_agrees_on() -> None:
    same = {"task_id": "t1"}
    assert usual_result([_precedent("a", 5), _precedent("b", 5)], same).run_id == "a"
    assert usual_result([_precedent("a", 5), _precedent("b", 6)], same) is None  # the tool varies
    # runs of the same input count before others; succeeded runs before failed ones; errors never
    assert usual_result([_precedent("a", 5), _precedent("b", 6, task="t2")], same).result == 5
    assert usual_result([_precedent("a", 5, status="failed"), _precedent("b", 6)], same).result == 6
    assert usual_result([_precedent("a", None, error="boom")], same) is None
    assert usual_result([], same) is None


def test_a_tool_edit_with_arguments_forces_only_those_calls(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    seen: list[tuple[str, Any]] = []

    def population(town: str) -> Any:
        seen.append((town, "ran"))
        return TOOLS["population"].func(town=town)  # type: ignore[attr-defined]

    tools = {**TOOLS, "population": StructuredTool.from_function(func=population, name="population",
                                                                 description=TOOLS["population"].description,
                                                                 args_schema=TOOLS["population"].args_schema)}
    graph = supervisor.build(ScriptedTeamModel(), tools)
    run_id = record(graph, store, workflow="supervisor", check=correct).invoke(TASK).run_id
    step = next(s for s in store.steps(run_id) if len([c for c in s.tool_calls if c.name == "population"]) == 2)
    first, second = [c for c in step.tool_calls if c.name == "population"]
    replayer = Replayer(store, run_id, graph=graph, check=correct)
    edit = ToolEdit(at=StepRef(step=step.index), tool="population", arguments=first.arguments, result="1")
    result = replayer.replay(replayer.compile(Intervention(edits=[edit]), step.index), arm="treatment", live_tools=True)
    [replayed] = [s for s in store.steps(result.run_id) if s.index == step.index]
    got = {str(c.arguments): c.result for c in replayed.tool_calls if c.name == "population"}
    assert got[str(first.arguments)] == "1" != first.result  # forced
    assert got[str(second.arguments)] == second.result  # ran as before
    assert (second.arguments["town"], "ran") in seen[-1:]


class _Heeding(ScriptedTeamModel):
    """The team test double, heeding one rule if its instructions carry it: every number it
    reports is in thousands (a model that follows a wrong sentence in its prompt)."""

    def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        if any(isinstance(m, SystemMessage) and WRONG_SENTENCE in str(m.content) for m in messages):
            reply = result.generations[0].message
            if reply.content and not reply.tool_calls:
                reply.content = re.sub(r"\d+", lambda n: str(int(n.group()) * 1000), str(reply.content))
        return result


def test_a_changed_instruction_is_placed_by_the_last_successful_run_and_undone(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    task = {"messages": [("user", QUESTIONS[1])]}
    clean = record(supervisor.build(_Heeding(), TOOLS), store, workflow="supervisor", check=correct).invoke(task)
    assert clean.status == "succeeded"
    clean_steps = store.steps(clean.run_id)
    faulted = None
    for seed in range(8):  # the kind picks one agent's instructions: one whose agent states the answer
        faulted = fault_named("instruction_sentence").inject(supervisor.build, _Heeding(), TOOLS, clean_steps,
                                                             random.Random(seed))
        assert faulted is not None
        result = record(faulted.graph, store, workflow="supervisor", check=correct).invoke(task)
        if result.status == "failed":
            break
    assert faulted is not None and result.status == "failed"
    steps = store.steps(result.run_id)
    wrong = next(s.index for s in steps for c in s.model_calls if WRONG_SENTENCE in str(c.request))  # the trace shows it
    report = Debugger(Replayer(store, result.run_id, graph=faulted.graph, check=correct), strategies=["history"],
                      budget=Budget(replays=8)).run()
    [h] = [h for h in report.hypotheses if h.verdict == "validated"]
    assert h.step == wrong and "instructions differ" in h.reason and WRONG_SENTENCE[:20] in h.reason
    [edit] = h.intervention["edits"]
    assert edit["kind"] == "prompt" and WRONG_SENTENCE in edit["old"] and WRONG_SENTENCE not in edit["new"]


def test_a_prompt_edit_changes_only_the_span_that_differs() -> None:
    from counterfact.interventions.strategies._history import _changed_span

    before = "You research. Report each population."
    assert _changed_span(before, "You research. Report each population. Multiply by 1000.") == (" Multiply by 1000.", "")
    assert _changed_span(before, "You research. Report each town.") == ("town", "population")
    # a sentence taken out leaves nothing to replace: the whole instructions are the edit
    assert _changed_span(before, "You research.") == ("You research.", before)
    # a changed part that occurs twice could be replaced where it was right: the whole again
    assert _changed_span("a 1 b 2", "a 1 b 1") == ("a 1 b 1", "a 1 b 2")
    assert _changed_span("ab", "abc") == ("abc", "ab")  # a word grown at the very end: the whole word
    assert _changed_span("", "Be brief.") == ("Be brief.", "")
