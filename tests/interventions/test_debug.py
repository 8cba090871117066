"""The debugger on scripted workflows: segments, hypotheses from each strategy, their fixes,
verification against a shared control, the budget, resuming, bad input and the reports."""

from __future__ import annotations

import io
import json
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from counterfact import CounterfactError
from counterfact.agents import (
    ChatMessage,
    ChatModel,
    Completion,
    ScriptedChatModel,
    UnreadableAnswer,
)
from counterfact.graphs import (
    ModelPool,
    Task,
    WorkflowRunner,
    load_suite,
    parse_workflow,
)
from counterfact.interventions import (
    Budget,
    Debugger,
    DebugLog,
    DebugReport,
    Replayer,
    hypothesis_schema,
    leaked,
    read_hypothesis,
    report_table,
    split_segments,
    write_html,
)
from counterfact.store import StepRecord, TraceStore
from counterfact.store.schema import Run

from ..graphs.scripted import arithmetic_brain, trio_spec
from .test_replay import SUITE, _recorded_orchestrator, _recorded_trio

Brain = Callable[[list[ChatMessage]], str]

# -- scripted agents --------------------------------------------------------------------------
# The trio (researcher, solver, reporter) on the suite's tasks: "wrong" asks for the population
# of Avalon (the lookup says 1000, the checker wants 999), "sum" for Avalon plus Brindle (1500).
# A fix's note reaches the agent appended to its last user turn as "Note: ...".


def _noted(messages: list[ChatMessage]) -> bool:
    return any("\n\nNote: " in m.content for m in messages if m.role == "user")


def _without_note(messages: list[ChatMessage]) -> list[ChatMessage]:
    return [m.model_copy(update={"content": m.content.split("\n\nNote: ")[0]}) for m in messages]


def _solving(messages: list[ChatMessage]) -> bool:
    return "Compute" in messages[0].content


def heeds_the_note(messages: list[ChatMessage]) -> str:
    """On "wrong": the solver answers 999 once a note says it erred, else the lookup's 1000."""
    if _solving(messages) and _noted(messages):
        return "RESULT: 999"
    return arithmetic_brain(_without_note(messages))


def ignores_the_note(messages: list[ChatMessage]) -> str:
    """On "wrong": every agent does the same with a note or without (the run always fails)."""
    return arithmetic_brain(_without_note(messages))


def inventing(heeds: bool) -> Brain:
    """On "sum": a solver that writes 1740 without calling the calculator (a number no tool
    result gives); with a note it computes the sum properly, if it `heeds`."""

    def brain(messages: list[ChatMessage]) -> str:
        if _solving(messages) and not (heeds and _noted(messages)):
            return "RESULT: 1740"
        return arithmetic_brain(_without_note(messages))

    return brain


class SampledOnly(ScriptedChatModel):
    """On "wrong": the solver answers 999 only when it has a note and samples (temperature
    above 0): the instruction fix alone does not repair the run, a sampled redraft does."""

    def __init__(self) -> None:
        super().__init__(ignores_the_note, name="sampled-only")
        self._right = ScriptedChatModel(lambda messages: "RESULT: 999", name="sampled-only")

    def complete(self, request):  # type: ignore[no-untyped-def]
        messages = request.messages
        if request.settings.temperature > 0 and _solving(messages) and _noted(messages):
            return self._right.complete(request)
        return super().complete(request)


def _record(store: TraceStore, brain: Brain | ChatModel, task: str = "wrong") -> tuple[str, ModelPool]:
    model = brain if isinstance(brain, ChatModel) else ScriptedChatModel(brain, name="brain")
    pool = ModelPool("test", {"test": model})
    run_id = WorkflowRunner(trio_spec(), store, pool).run(load_suite(SUITE).task(task), suite="tiny").run_id
    assert store.get_run(run_id).status == "failed"
    return run_id, pool


def _critic(step: int, reason: str = "the solver kept the looked-up value") -> ScriptedChatModel:
    """A hypothesis model that names `step`, as the schema asks."""
    return ScriptedChatModel(lambda messages: json.dumps({"step": step, "reason": reason}))


def _debugger(store: TraceStore, run_id: str, pool: ModelPool, **kwargs: object) -> Debugger:
    return Debugger(Replayer(store, run_id, pool=pool), **kwargs)  # type: ignore[arg-type]


def _two_fixes_at_step_1(store: TraceStore, run_id: str, pool: ModelPool) -> DebugReport:
    """A session of the llm strategy naming the solver (step 1), with one sampled fix beside
    the instruction; both fixes refuted."""
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                       hypothesis_model=_critic(1)).run()
    (h,) = report.hypotheses
    assert [f.verdict for f in h.fixes] == ["refuted", "refuted"]
    return report


def _texts(fix_intervention: dict) -> list[str]:
    return [e["text"] for e in fix_intervention["edits"] if e["kind"] == "instruction"]


# -- segments and the hypothesis format ---------------------------------------------------------


def test_segments_split_at_planning_steps() -> None:
    kinds = ["plan", "router", "agent", "router", "plan", "router", "agent"]
    steps = [StepRecord(index=i, node=k, kind=k) for i, k in enumerate(kinds)]  # type: ignore[arg-type]
    assert [(t.first_step, t.last_step) for t in split_segments(steps)] == [(0, 3), (4, 6)]
    assert [(t.index, t.first_step, t.last_step) for t in split_segments(steps[1:4])] == [(0, 0, 2)]
    late = [StepRecord(index=i, node=k, kind=k) for i, k in enumerate(["agent", "plan", "agent"])]  # type: ignore[arg-type]
    assert [(t.first_step, t.last_step) for t in split_segments(late)] == [(0, 2)]  # the first takes what came before


def test_hypothesis_schema_and_reading_answers() -> None:
    schema = hypothesis_schema([3, 4, 5])
    assert schema["properties"]["step"]["enum"] == [3, 4, 5]
    assert schema["required"] == ["step", "reason"] and schema["additionalProperties"] is False
    assert read_hypothesis('{"step": 4, "reason": "  copied the\\nwrong   number "}', schema) == (
        4, "copied the wrong number"
    )
    with pytest.raises(UnreadableAnswer, match="step 9 is not one of the steps shown"):
        read_hypothesis('{"step": 9, "reason": "wrong number"}', schema)
    with pytest.raises(UnreadableAnswer, match="step '4' is not one of the steps shown"):
        read_hypothesis('{"step": "4", "reason": "wrong number"}', schema)
    with pytest.raises(UnreadableAnswer, match="not JSON: 'STEP: 4 | REASON: x'"):
        read_hypothesis("STEP: 4 | REASON: x", schema)
    with pytest.raises(UnreadableAnswer, match="not a JSON object"):
        read_hypothesis("[4]", schema)
    with pytest.raises(UnreadableAnswer, match="no reason"):
        read_hypothesis('{"step": 4}', schema)
    with pytest.raises(UnreadableAnswer, match="no reason"):
        read_hypothesis('{"step": 4, "reason": "   "}', schema)


# -- the llm strategy ------------------------------------------------------------------------------


def test_llm_hypothesis_is_validated_when_the_agent_heeds_the_note(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    critic = _critic(1)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10),
                       hypothesis_model=critic).run()
    (request,) = critic.requests  # one segment, one request
    prompt = request.messages[0].content
    assert "[0] researcher: FACTS: 1000" in prompt and "[1] solver: RESULT: 1000" in prompt
    assert "999" not in prompt  # the expected answer is never shown
    assert request.settings.json_schema == hypothesis_schema([0, 1, 2])
    assert request.settings.temperature == 0.0
    (h,) = report.hypotheses
    assert (h.step, h.agent, h.strategy, h.proposed_by) == (1, "solver", "llm", ["llm"])
    assert h.reason == "the solver kept the looked-up value"
    assert [(f.label, f.strategy, f.source) for f in h.fixes] == [
        ("instruction", "llm", "hypothesis"),
        ("sample 1", "llm", "agent"), ("sample 2", "llm", "agent"), ("sample 3", "llm", "agent"),
    ]
    note = (
        "Someone checking your last answer found this mistake: the solver kept the looked-up value. "
        "Write your answer again without it."
    )
    assert _texts(h.fixes[0].intervention) == [note]
    assert [e["kind"] for e in h.fixes[1].intervention["edits"]] == ["instruction", "sample"]
    assert [f.verdict for f in h.fixes] == ["validated", None, None, None]  # the best fix decided it
    assert (h.status, h.verdict, h.decided) == ("verified", "validated", True)
    assert h.intervention == h.fixes[0].intervention and h.verdict_reason.startswith("deterministic replays")
    assert report.spent.replays == 2 and report.notes == []  # one control, one treatment
    assert not any(leaked(f, report.expected) for f in h.fixes)


def test_filled_batches_verify_a_hypothesis_s_fixes_at_once_and_keep_the_best(sqlite_path: str) -> None:
    """With fill_batches the four fixes of the one hypothesis go in one batch (one control, four
    treatments, where one at a time stopped after the first); the best fix still decides it."""
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10),
                       hypothesis_model=_critic(1), fill_batches=True).run()
    (h,) = report.hypotheses
    assert all(f.verdict is not None for f in h.fixes) and h.fixes[0].verdict == "validated"
    assert (h.status, h.verdict) == ("verified", "validated") and h.intervention == h.fixes[0].intervention
    assert report.spent.replays == 5


def test_the_shared_control_is_replayed_beside_the_first_fixes_from_the_hypothesis_s_step(sqlite_path: str) -> None:
    """The control does not go first alone: its solver call and the first fix's meet at a
    barrier that only two calls in flight at once can pass. It starts at the hypothesis's step
    (1), not at the start of the run."""
    store = TraceStore.open(sqlite_path)
    meeting = threading.Barrier(2, timeout=20)
    solver_calls: list[bool] = []  # in replays: whether each solver call carried the note
    lock = threading.Lock()
    replaying = {"on": False}

    def meets_the_other(messages: list[ChatMessage]) -> str:
        if replaying["on"] and _solving(messages):
            with lock:
                solver_calls.append(_noted(messages))
                first_two = len(solver_calls) <= 2
            if first_two:
                meeting.wait()  # raises BrokenBarrierError (the replay errs) if the other never comes
        return ignores_the_note(messages)

    run_id, pool = _record(store, meets_the_other)
    replaying["on"] = True
    report = _two_fixes_at_step_1(store, run_id, pool)
    assert sorted(solver_calls[:2]) == [False, True]  # the control's call and the first fix's, at once
    (control,) = store.list_runs(labels={"debug_role": "shared-control"}, limit=None)
    assert control.fork_step == 1 and report.spent.replays == 3


def test_a_control_that_does_not_repeat_the_run_leaves_each_fix_a_control_of_its_own(sqlite_path: str) -> None:
    """Replays word the solver's step otherwise than the recorded run (and still fail): the
    shared control, replayed beside the first fix, does not stand, so each fix replays its own
    control, and the budget counts those replays too."""
    store = TraceStore.open(sqlite_path)
    replaying = {"on": False}

    def drifting(messages: list[ChatMessage]) -> str:
        text = ignores_the_note(messages)
        return f"{text} (again)" if replaying["on"] and _solving(messages) else text

    run_id, pool = _record(store, drifting)
    replaying["on"] = True
    report = _two_fixes_at_step_1(store, run_id, pool)
    (shared,) = store.list_runs(labels={"debug_role": "shared-control"}, limit=None)
    assert shared.status == "failed"
    controls = [v.stats["control_runs"] for v in store.verdicts(run_id=run_id)]
    assert len(controls) == 2 and all(len(c) == 1 and c[0] != shared.id for c in controls)
    assert report.spent.replays == 1 + 2 * 2  # the shared control, then a treatment and a control per fix


def test_batches_are_filled_by_default_only_where_every_model_is_local(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, ignores_the_note)
    assert _debugger(store, run_id, pool, strategies=["llm"], budget=Budget()).fill_batches is False
    local = Replayer(store, run_id, pool=pool)
    for step in local.steps:
        for call in step.model_calls:
            call.params["counterfact_model"] = "embedded"
    assert Debugger(local, strategies=["llm"], budget=Budget()).fill_batches is True
    assert Debugger(local, strategies=["llm"], budget=Budget(), until_repaired=True).fill_batches is False
    assert Debugger(local, strategies=["llm"], budget=Budget(), fill_batches=False).fill_batches is False


def test_llm_hypothesis_is_refuted_when_no_fix_repairs_the_run(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, ignores_the_note)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                       hypothesis_model=_critic(1)).run()
    (h,) = report.hypotheses
    assert [f.label for f in h.fixes] == ["instruction", "sample 1"]
    assert [f.verdict for f in h.fixes] == ["refuted", "refuted"]
    assert all("still fails" in f.reason for f in h.fixes)
    assert (h.status, h.verdict, h.decided) == ("verified", "refuted", True)
    assert h.note == "none of its 2 fixes repaired the run"
    assert report.spent.replays == 3


def test_a_malformed_llm_answer_is_a_note_not_a_hypothesis(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    critic = ScriptedChatModel(lambda messages: "I am not sure.")
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4),
                       hypothesis_model=critic).run()
    assert len(critic.requests) == 2  # asked once more, with a reminder of the format
    assert report.hypotheses == []
    assert report.notes == [
        "llm: segment 0: the hypothesis model's answer is not a hypothesis (not JSON: 'I am not sure.')"
    ]
    assert report.spent.replays == 0  # nothing to verify, not even a control


def test_an_llm_answer_mended_after_the_reminder_is_a_hypothesis(sqlite_path: str) -> None:
    """A model without structured output (a remote one, say) may answer in prose first."""
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    answers = iter(["The solver is wrong.", json.dumps({"step": 1, "reason": "the solver kept the looked-up value"})])
    critic = ScriptedChatModel(lambda messages: next(answers))
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4),
                       hypothesis_model=critic).run()
    first, second = critic.requests
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    assert second.messages[1].content == "The solver is wrong." and "JSON object" in second.messages[2].content
    assert [(h.step, h.reason) for h in report.hypotheses] == [(1, "the solver kept the looked-up value")]
    assert report.notes == []


def test_an_llm_answer_naming_a_step_not_shown_is_a_note(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4),
                       hypothesis_model=_critic(7)).run()
    assert report.hypotheses == []
    (note,) = report.notes
    assert note.startswith("llm: segment 0:") and "step 7 is not one of the steps shown" in note


# -- the grounded strategy, and merging ----------------------------------------------------------


def test_grounded_flags_the_agent_that_states_an_unsupported_number(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, inventing(heeds=True), task="sum")
    report = _debugger(store, run_id, pool, strategies=["grounded"], budget=Budget(replays=10)).run()
    (h,) = report.hypotheses
    assert (h.step, h.agent, h.proposed_by) == (1, "solver", ["grounded"])
    assert h.evidence["unsupported"] == ["1740"] and h.evidence["supported"] == ["500", "1000"]
    assert h.evidence["failed_calls"] == []
    assert "solver wrote 1740" in h.reason
    (note,) = _texts(h.fixes[0].intervention)
    assert "Last time you wrote 1740" in note and "(500, 1000)" in note
    assert h.fixes[0].label == "instruction" and h.fixes[0].strategy == "grounded"
    assert (h.verdict, h.fixes[0].verdict) == ("validated", "validated")
    assert not any(leaked(f, report.expected) for f in h.fixes)  # 1500 is named by no fix


def test_grounded_proposes_nothing_when_every_number_is_supported(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)  # the run copies the lookup's 1000 faithfully
    report = _debugger(store, run_id, pool, strategies=["grounded"], budget=Budget(replays=4)).run()
    assert report.hypotheses == []
    assert report.notes == ["grounded: every number the steps state is supported and no tool call failed"]


def test_strategies_on_the_same_step_make_one_hypothesis(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, inventing(heeds=True), task="sum")
    report = _debugger(store, run_id, pool, strategies=["grounded", "llm"], budget=Budget(replays=10),
                       samples=0, hypothesis_model=_critic(1, "the solver made up the sum")).run()
    (h,) = report.hypotheses
    assert (h.step, h.strategy, h.proposed_by) == (1, "grounded", ["grounded", "llm"])
    assert [(f.label, f.strategy) for f in h.fixes] == [("instruction", "grounded"), ("instruction", "llm")]
    assert "1740" in _texts(h.fixes[0].intervention)[0]
    assert "the solver made up the sum" in _texts(h.fixes[1].intervention)[0]
    assert h.evidence["reasons"] == {"llm": "the solver made up the sum"}
    assert [f.verdict for f in h.fixes] == ["validated", None]  # the best fix first, and it did
    assert report.spent.replays == 2


# -- verification: the shared control, the budget, reproduction ------------------------------------


def test_a_greedy_run_shares_one_control_replay_among_all_fixes(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, SampledOnly())
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=2,
                       hypothesis_model=_critic(1)).run()
    (h,) = report.hypotheses
    assert [(f.label, f.verdict) for f in h.fixes] == [
        ("instruction", "refuted"), ("sample 1", "validated"), ("sample 2", None),
    ]
    assert h.verdict == "validated" and h.intervention == h.fixes[1].intervention
    assert report.spent.replays == 1 + 2  # one control, one treatment per tried fix
    verdicts = store.verdicts(run_id=run_id)
    assert len(verdicts) == 2
    controls = {tuple(v.stats["control_runs"]) for v in verdicts}
    assert len(controls) == 1 and len(next(iter(controls))) == 1  # the same single control run
    assert all(len(v.stats["treatment_runs"]) == 1 for v in verdicts)


def test_each_hypothesis_gets_its_best_fix_before_any_gets_a_second(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, inventing(heeds=False), task="sum")
    # grounded suspects the solver (step 1), the hypothesis model the reporter (step 2)
    report = _debugger(store, run_id, pool, strategies=["grounded", "llm"], budget=Budget(replays=4),
                       samples=1, hypothesis_model=_critic(2, "the reporter repeated a wrong sum")).run()
    by_step = {h.step: h for h in report.hypotheses}
    assert set(by_step) == {1, 2}
    solver, reporter = by_step[1], by_step[2]
    # control, solver's fix 1, reporter's fix 1, then the budget left goes to the solver first
    assert [f.verdict for f in solver.fixes] == ["refuted", "refuted"]
    assert [f.verdict for f in reporter.fixes] == ["refuted", None]
    assert (solver.status, solver.verdict) == ("verified", "refuted")
    assert (reporter.status, reporter.verdict, reporter.decided) == ("undecided", None, False)
    assert reporter.note == "budget: 1 of 2 fixes tried before the budget ran out"
    assert report.spent.replays == 4


def test_a_budget_that_runs_out_in_the_first_pass_leaves_the_rest_undecided(sqlite_path: str) -> None:
    """Control and the solver's first fix use the budget up: the reporter's first fix cannot be
    paid for, and the session ends with it untried (it used to crash on an empty batch)."""
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, inventing(heeds=False), task="sum")
    report = _debugger(store, run_id, pool, strategies=["grounded", "llm"], budget=Budget(replays=2),
                       samples=1, hypothesis_model=_critic(2, "the reporter repeated a wrong sum")).run()
    by_step = {h.step: h for h in report.hypotheses}
    assert [f.verdict for f in by_step[1].fixes] == ["refuted", None]
    assert [f.verdict for f in by_step[2].fixes] == [None, None]
    assert by_step[2].note == "budget: 0 of 2 fixes tried before the budget ran out"
    assert report.spent.replays == 2 and report.status == "done"


def test_a_budget_too_small_for_every_fix_leaves_the_hypothesis_undecided(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, ignores_the_note)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=3),
                       hypothesis_model=_critic(1)).run()
    (h,) = report.hypotheses
    assert [f.verdict for f in h.fixes] == ["refuted", "refuted", None, None]
    assert (h.status, h.verdict, h.decided) == ("undecided", None, False)
    assert h.note.startswith("budget") and h.note == "budget: 2 of 4 fixes tried before the budget ran out"
    assert report.spent.replays == 3


def test_hypotheses_are_undecided_when_the_failure_does_not_reproduce(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    recording = {"on": True}

    def once_wrong(messages: list[ChatMessage]) -> str:  # invents a sum while recorded, not after
        return inventing(heeds=False)(messages) if recording["on"] else arithmetic_brain(_without_note(messages))

    run_id, pool = _record(store, once_wrong, task="sum")
    recording["on"] = False
    report = _debugger(store, run_id, pool, strategies=["grounded", "llm"], budget=Budget(replays=10),
                       hypothesis_model=_critic(2, "the reporter repeated a wrong sum")).run()
    assert sorted(h.step for h in report.hypotheses) == [1, 2]
    for h in report.hypotheses:
        assert (h.status, h.verdict, h.decided) == ("undecided", None, False)
        assert h.note == "the failure does not reproduce: the unedited replay succeeds"
        # each one's first fix was replayed beside the control, and the control's success decides it
        assert [f.verdict for f in h.fixes[:1]] == ["inconclusive"] and all(f.verdict is None for f in h.fixes[1:])
        assert h.fixes[0].reason.startswith("the failure does not reproduce: the control succeeds")
    assert report.spent.replays == 1 + 2  # the control, and the first fixes beside it; no more


# -- resample and patch ----------------------------------------------------------------------------


class Flaky(ChatModel):
    """A solver that gets the sum right at random when sampling, never when greedy."""

    backend = "scripted"

    @property
    def name(self) -> str:
        return "flaky"

    def complete(self, request):  # type: ignore[no-untyped-def]
        messages, settings = request.messages, request.settings
        text = arithmetic_brain(_without_note(messages))
        sampling = settings is not None and settings.temperature > 0
        if _solving(messages) and text.startswith("RESULT:"):
            lucky = sampling and random.Random(settings.seed).random() < 0.5  # type: ignore[union-attr]
            text = text if lucky else "RESULT: 1000"
        return Completion(text=text)


def test_resample_finds_the_point_of_no_return_and_patch_transplants(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, Flaky(), task="sum")
    report = _debugger(store, run_id, pool, strategies=["resample", "patch"], budget=Budget(replays=30),
                       pairs=2).run()
    assert [h.step for h in report.hypotheses] == [1, 2]
    solver, reporter = report.hypotheses
    assert (solver.strategy, solver.proposed_by, solver.agent) == ("resample", ["resample", "patch"], "solver")
    assert solver.reason.startswith("point of no return: fresh samples from step 1 still succeed, from step 2")
    assert "step 2: 0/3" in solver.reason
    assert [(f.label, f.strategy, f.source) for f in solver.fixes] == [
        ("message from a sample", "resample", "agent"), ("transplant", "patch", "reference"),
    ]
    assert [e["text"] for f in solver.fixes for e in f.intervention["edits"]] == ["RESULT: 1500", "RESULT: 1500"]
    assert [f.verdict for f in solver.fixes] == ["validated", None] and solver.verdict == "validated"
    assert solver.evidence["reasons"]["patch"].startswith("transplanting step 1 (solver) from successful run")
    assert (reporter.proposed_by, reporter.verdict) == (["patch"], "validated")
    assert reporter.fixes[0].intervention["edits"][0]["text"] == "FINAL ANSWER: 1500"
    assert reporter.reference_run_id is not None and store.get_run(reporter.reference_run_id).status == "succeeded"
    # three rounds of bisection (steps 0, 1, 2) of 3 samples, then one control and one replay per fix
    assert report.spent.replays == 3 * 3 + 1 + 2


# -- sessions, errors ----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_an_interrupted_session_resumes_where_it_stopped(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, ignores_the_note)
    critic = _critic(1)
    verifying: list[str] = []

    def stop_at_the_second_fix(message: str) -> None:
        if message.startswith("verifying"):
            verifying.append(message)
            if len(verifying) == 2:
                raise Interrupted

    with pytest.raises(Interrupted):
        _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                  hypothesis_model=critic, on_event=stop_at_the_second_fix).run()
    assert verifying == ["verifying step 1: instruction (llm)", "verifying step 1: sample 1 (llm)"]
    (first_verdict,) = store.verdicts(run_id=run_id)
    events: list[str] = []
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                       hypothesis_model=critic, on_event=events.append).run()
    assert events[0].startswith("resuming debug session")
    assert len(critic.requests) == 1  # the hypothesis was not proposed again
    assert [e for e in events if e.startswith("verifying")] == ["verifying step 1: sample 1 (llm)"]
    (h,) = report.hypotheses
    assert [f.verdict for f in h.fixes] == ["refuted", "refuted"]
    assert h.fixes[0].verdict_id == first_verdict.id  # the first fix was not verified again
    assert (h.status, h.verdict, report.status) == ("verified", "refuted", "done")
    assert report.spent.replays == 3  # control and fix 1, then fix 2 against the stored control
    assert len(store.list_runs(labels={"debug_role": "shared-control"}, limit=None)) == 1


def test_bad_input(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    good, _, pool = _recorded_trio(store, "sum")
    with pytest.raises(CounterfactError, match="succeeded: there is no failure to debug"):
        _debugger(store, good, pool, strategies=["llm"], budget=Budget())
    unscored = WorkflowRunner(
        parse_workflow({"name": "u", "topology": "pipeline", "model": "test",
                        "agents": [{"name": "a", "role": "Report."}]}), store, pool
    )
    run_id = unscored.run(Task(id="free", question="anything?")).run_id
    with store.begin() as conn:  # an unscored run that stopped: nothing to score replays with
        conn.execute(Run.__table__.update().where(Run.id == run_id).values(status="error"))
    with pytest.raises(CounterfactError, match="has no check of its final state"):
        _debugger(store, run_id, pool, strategies=["llm"], budget=Budget())
    failed, _, pool2 = _recorded_trio(store, "wrong")
    with pytest.raises(CounterfactError, match="choose strategies among history, handoff, grounded, rerun, llm, resample, patch or all$"):
        _debugger(store, failed, pool2, strategies=[], budget=Budget())
    with pytest.raises(CounterfactError, match="choose strategies among history, handoff, grounded, rerun, llm, resample, patch or all, not magic"):
        _debugger(store, failed, pool2, strategies=["magic"], budget=Budget())
    os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    try:
        with pytest.raises(CounterfactError, match="cannot reach its model"):
            _debugger(store, failed, pool2, strategies=["llm"], budget=Budget(),
                      hypothesis_model="openai:gpt-test").run()
    finally:
        del os.environ["OPENAI_BASE_URL"]


def test_orchestrator_runs_are_one_segment_per_plan(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _recorded_orchestrator(store)
    critic = _critic(2, "the finder reported a wrong value")
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=3),
                       hypothesis_model=critic).run()
    assert [(s.first_step, s.last_step) for s in report.segments] == [(0, 5)]
    prompt = critic.requests[0].messages[0].content
    assert "[0] lead: PLAN: 1. finder: find the value\n" in prompt and "[2] finder: found 1\n" in prompt
    (h,) = report.hypotheses
    assert (h.step, h.agent) == (2, "finder")


# -- reports ------------------------------------------------------------------------------------


def _report_with_everything(store: TraceStore) -> DebugReport:
    """A validated hypothesis with a <tag> in its reason, and a strategy that found nothing."""
    run_id, pool = _record(store, heeds_the_note)
    return _debugger(store, run_id, pool, strategies=["grounded", "llm"], budget=Budget(replays=4), samples=1,
                     hypothesis_model=_critic(1, "wrong <sum> & co")).run()


def test_html_report_is_a_standalone_page(sqlite_path: str, tmp_path: Path) -> None:
    report = _report_with_everything(TraceStore.open(sqlite_path))
    page = write_html(report, tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "wrong &lt;sum&gt; &amp; co" in page and "<sum>" not in page  # escaped
    assert "http" not in page and "<script" not in page and "<link" not in page  # no external resources
    assert '<span class="validated">validated</span>' in page
    assert "<strong>Proposed by:</strong> llm" in page
    assert "the agent at step 1 reads the note" in page  # the instruction fix, described
    assert "sampled at temperature 0.8 with seed 0" in page  # the sampled redraft
    assert "not tried" in page  # sample 1 was not needed
    assert "grounded: every number the steps state is supported" in page  # the session's notes
    assert "<strong>1</strong> hypotheses, <strong>1</strong> decided" in page
    assert "spent <strong>2</strong> replays" in page
    assert "replays per decided hypothesis:\n<strong>2.0</strong>" in page


def test_html_report_shows_why_a_hypothesis_is_undecided(sqlite_path: str, tmp_path: Path) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, ignores_the_note)
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=2),
                       hypothesis_model=_critic(1)).run()
    page = write_html(report, tmp_path / "report.html").read_text()
    assert '<span class="undecided">undecided</span>' in page
    assert "Undecided: budget: 1 of 4 fixes tried before the budget ran out" in page
    assert "n/a (none decided)" in page


def test_terminal_report_lists_fixes_notes_and_the_footer(sqlite_path: str) -> None:
    report = _report_with_everything(TraceStore.open(sqlite_path))
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(report_table(report))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "validated" in text and "1 solver" in text
    assert "llm: wrong <sum> & co" in text
    assert "instruction (llm): the agent at step 1 reads the note" in text
    assert "sample 1 (llm)" in text and "not tried" in text
    assert "grounded: every number the steps state is supported" in text
    assert "1 hypotheses, 1 decided; spent 2 replays" in text
    assert "replays per decided hypothesis: 2.0" in text


def test_a_finished_session_is_reported_again_from_the_store(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, heeds_the_note)
    first = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=4), samples=1,
                      hypothesis_model=_critic(1)).run()
    assert [s.id for s in DebugLog(store).sessions(run_id, ["llm"], status="done")] == [first.session_id]
    assert DebugLog(store).sessions(run_id, ["grounded"]) == []
    again = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget()).report_of(first.session_id)
    assert again.model_dump() == first.model_dump()
    other, other_pool = _record(store, heeds_the_note)
    with pytest.raises(CounterfactError, match="no debug session of run .* starts with"):
        _debugger(store, other, other_pool, strategies=["llm"], budget=Budget()).report_of(first.session_id)
