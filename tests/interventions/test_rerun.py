"""Re-execution: a replay runs again only the tools named safe to repeat, and the rerun strategy
places a transient fault by bisection, within its budget."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from langchain_core.tools import StructuredTool

from counterfact.bench import fault_named
from counterfact.graphs import record
from counterfact.interventions import Budget, Debugger, Replayer
from counterfact.store import TraceStore
from examples.multiagent import supervisor
from examples.multiagent.common import QUESTIONS, TOOLS, ScriptedTeamModel, correct

TASK = {"messages": [("user", QUESTIONS[0])]}


def _counting(calls: dict[str, int]) -> dict[str, Any]:
    def wrap(name: str) -> StructuredTool:
        inner = TOOLS[name]

        def run(**arguments: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return inner.func(**arguments)  # type: ignore[attr-defined]

        return StructuredTool.from_function(func=run, name=name, description=inner.description, args_schema=inner.args_schema)

    return {name: wrap(name) for name in TOOLS}


def test_a_replay_runs_again_only_the_tools_named(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    calls: dict[str, int] = {}
    graph = supervisor.build(ScriptedTeamModel(), _counting(calls))
    run_id = record(graph, store, workflow="supervisor", check=correct).invoke(TASK).run_id
    assert calls == {"population": 2, "add": 1}
    replayer = Replayer(store, run_id, graph=graph, check=correct)
    plan = replayer.compile(None, 0)
    assert replayer.replay(plan, arm="control", live_tools=["population"]).success
    assert calls == {"population": 4, "add": 1}  # population ran again; add answered as recorded
    assert replayer.replay(plan, arm="control", live_tools=True).success
    assert calls == {"population": 6, "add": 2}
    assert replayer.replay(plan, arm="control").success
    assert calls == {"population": 6, "add": 2}


def _faulted_run(store: TraceStore) -> tuple[str, Any, int]:
    clean = record(supervisor.build(ScriptedTeamModel(), TOOLS), store, workflow="clean", check=correct).invoke(TASK)
    faulted = fault_named("tool_wrong_value").inject(supervisor.build, ScriptedTeamModel(), TOOLS,
                                                     store.steps(clean.run_id), random.Random(1))
    assert faulted is not None
    result = record(faulted.graph, store, workflow="supervisor", check=correct).invoke(TASK)
    assert result.status == "failed"
    return result.run_id, faulted.graph, 1  # the researcher's step made the lying call


def test_rerun_places_the_fault_in_log2_replays_and_its_fix_is_validated(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, truth = _faulted_run(store)
    report = Debugger(Replayer(store, run_id, graph=graph, check=correct), strategies=["rerun"], budget=Budget(replays=8),
                      repeatable_tools=["population", "add"]).run()
    [h] = report.hypotheses
    assert (h.step, h.strategy, h.verdict) == (truth, "rerun", "validated")
    assert h.evidence["placed_by_replay"] is True
    probes = h.evidence["probes"]
    steps = len(store.steps(run_id))
    assert len(probes) <= steps.bit_length() + 1 and probes[str(truth)] is True and probes.get(str(truth + 1)) is False


def test_without_repeatable_tools_a_lie_replayed_as_recorded_is_not_placed(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, _ = _faulted_run(store)
    report = Debugger(Replayer(store, run_id, graph=graph, check=correct), strategies=["rerun"],
                      budget=Budget(replays=8)).run()
    assert report.hypotheses == []
    assert any("re-executed from step 0 the run still fails" in note for note in report.notes)


def test_until_repaired_stops_verifying_once_a_fix_repairs_the_run(tmp_path: Path) -> None:
    store = TraceStore.open(str(tmp_path / "s.db"))
    run_id, graph, truth = _faulted_run(store)

    def debug(until_repaired: bool) -> Any:
        return Debugger(Replayer(store, run_id, graph=graph, check=correct), strategies=["handoff", "grounded", "rerun"],
                        budget=Budget(replays=24), repeatable_tools=["population", "add"],
                        until_repaired=until_repaired).run()

    stopped, full = debug(True), debug(False)
    assert stopped.hypotheses[0].step == truth and stopped.hypotheses[0].verdict == "validated"
    others = stopped.hypotheses[1:]
    assert others and all(h.note == "not tried: another hypothesis's fix already repaired the run" for h in others)
    assert stopped.spent.replays < full.spent.replays
    assert full.hypotheses[0].step == truth and full.hypotheses[0].verdict == "validated"


def test_a_transient_fault_at_the_last_step_is_verified_against_the_run_as_recorded(tmp_path: Path) -> None:
    from langchain_core.messages import AIMessage

    from counterfact.bench import FaultyModel
    from examples.multiagent import swarm

    store = TraceStore.open(str(tmp_path / "s.db"))
    clean = record(swarm.build(ScriptedTeamModel(), TOOLS), store, workflow="clean", check=correct).invoke(TASK)
    last_call = sum(len(s.model_calls) for s in store.steps(clean.run_id))

    def corrupt(n: int, reply: AIMessage, _sent: list[Any]) -> tuple[AIMessage, str, str] | None:
        if n != last_call:
            return None
        return reply.model_copy(update={"content": "The answer is 7."}), "answer -> 7", "7"

    graph = swarm.build(FaultyModel(inner=ScriptedTeamModel(), reply_fault=corrupt), TOOLS)
    faulted = record(graph, store, workflow="swarm", check=correct).invoke(TASK)
    assert faulted.status == "failed"
    last = len(store.steps(faulted.run_id)) - 1
    report = Debugger(Replayer(store, faulted.run_id, graph=graph, check=correct), strategies=["rerun"],
                      budget=Budget(replays=8), repeatable_tools=["population", "add"]).run()
    [h] = report.hypotheses
    assert (h.step, h.verdict) == (last, "validated")
    verdict = store.get_verdict(h.fixes[0].verdict_id)
    assert verdict.stats["control_runs"] == [faulted.run_id]  # the run as recorded stands for the control
