"""The verdict rules of _verify, one at a time and at their boundaries, on stand-ins (fast: no
model, no replay, no database): `decide`'s branches, the sequential looks (`validating_looks`,
`_settled`), `greedy_from`, `_milestone_p`, `_activation_effect`, and what `verify` runs, asks
and stores, with a scripted executor standing for the replays."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from counterfact._errors import CounterfactError
from counterfact.agents import ActivationEdit, ChatMessage
from counterfact.capture import StepDirectives
from counterfact.executors import Executor
from counterfact.interventions import (
    ReplayerSpec,
    ReplayPlan,
    ReplayResult,
    _verify,
    compare,
    decide,
    parse_intervention,
    validating_looks,
    verify,
)
from counterfact.interventions._stats import sign_test
from counterfact.interventions._verify import (
    _activation_effect,
    _milestone_p,
    _settled,
    greedy_from,
)

T, F = True, False


def arms(treatment: Sequence[bool], control: Sequence[bool]):  # type: ignore[no-untyped-def]
    return compare(list(treatment), list(control))


def rates(t: int, c: int, n: int) -> str:
    return f"success {t}/{n} with the edit vs {c}/{n} without"


# -- decide ----------------------------------------------------------------------------------


def test_an_edit_not_applied_is_inconclusive_whatever_the_arms() -> None:
    repaired = arms([T] * 6, [F] * 6)
    for deterministic in (True, False):
        assert decide(repaired, deterministic, False, "hook never ran", 0.001, 0.5) == (
            "inconclusive", "the edit was not applied (hook never ran)")
        assert decide(repaired, deterministic, False, "", None, 0.5) == (
            "inconclusive", "the edit was not applied (no evidence it reached the agents)")


def test_deterministic_arms_decide_by_their_outcome_not_a_p_value() -> None:
    # one pair: p = 0.5, yet the repair is exact
    assert decide(arms([T], [F]), True, True, "", None, 0.5) == (
        "validated", f"deterministic replays: the edit repairs the run ({rates(1, 0, 1)})")
    assert decide(arms([F], [F]), True, True, "", None, 0.5) == (
        "refuted", f"deterministic replays: with the edit the run still fails ({rates(0, 0, 1)})")
    assert decide(arms([T], [T]), True, True, "", None, 0.5) == (
        "inconclusive", f"the failure does not reproduce: the control succeeds ({rates(1, 1, 1)})")
    assert decide(arms([F], [T]), True, True, "", None, 0.5) == (
        "inconclusive", f"the failure does not reproduce: the control succeeds ({rates(0, 1, 1)})")
    # rates short of 1: a control that fails once reproduces; a treatment that fails once does not repair
    assert decide(arms([T, T], [T, F]), True, True, "", None, 0.5) == (
        "validated", f"deterministic replays: the edit repairs the run ({rates(2, 1, 2)})")
    assert decide(arms([T, F], [F, F]), True, True, "", None, 0.5) == (
        "refuted", f"deterministic replays: with the edit the run still fails ({rates(1, 0, 2)})")
    # a milestone p or a wide interval changes nothing there
    assert decide(arms([F], [F]), True, True, "", 0.001, 0.0)[0] == "refuted"


def test_a_control_that_succeeds_half_the_time_does_not_reproduce_the_failure() -> None:
    half = arms([T, T], [T, F])  # control rate exactly 0.5
    assert half.control_rate == 0.5
    assert decide(half, False, True, "", 0.001, 0.5) == (
        "inconclusive", f"the failure does not reproduce in the control arm ({rates(2, 1, 2)})")
    below = arms([T, T, T, T, T, T, T], [T, T, T, F, F, F, F])  # 3/7 < 0.5: goes on to the tests
    assert decide(below, False, True, "", None, 0.5)[1].startswith("too few pairs to decide")
    assert decide(below, False, True, "", 0.001, 0.5) == (
        "validated", f"milestones improve (p = 0.001) though {rates(7, 3, 7)}")


def test_the_exact_test_validates_below_alpha_only() -> None:
    six = arms([T] * 6, [F] * 6)  # p = 1/64
    assert decide(six, False, True, "", None, 0.5) == (
        "validated", f"{rates(6, 0, 6)}, one-sided exact p = 0.0156")
    assert decide(six, False, True, "", None, 0.5, alpha=six.p_value)[0] == "inconclusive"  # p == alpha
    assert decide(six, False, True, "", None, 0.5, alpha=math.nextafter(six.p_value, 1))[0] == "validated"
    # a rise with a large p is not a validation
    rise = arms([T, F, F], [F, F, F])
    assert rise.difference > 0 and rise.p_value == 0.5
    assert decide(rise, False, True, "", None, 0.5) == (
        "inconclusive", f"too few pairs to decide ({rates(1, 0, 3)}, 95% CI -0.29..+0.79)")
    # no rise is not validated by the exact test, even at a level its p passes
    tie = arms([T, F, F, F, F], [F, T, F, F, F])
    assert tie.difference == 0 and tie.p_value == 0.75
    assert decide(tie, False, True, "", None, 0.4, alpha=0.9)[1].startswith("too few pairs to decide")


def test_milestones_validate_below_alpha_only() -> None:
    flat = arms([F] * 3, [F] * 3)
    assert decide(flat, False, True, "", 0.01, 0.5) == (
        "validated", f"milestones improve (p = 0.01) though {rates(0, 0, 3)}")
    assert decide(flat, False, True, "", 0.05, 0.5)[1].startswith("too few pairs")  # p == alpha
    assert decide(flat, False, True, "", 0.02, 0.5, alpha=0.02)[1].startswith("too few pairs")
    assert decide(flat, False, True, "", 0.019, 0.5, alpha=0.02)[0] == "validated"
    assert decide(flat, False, True, "", None, 0.5)[1].startswith("too few pairs")


def test_refuted_when_the_interval_excludes_min_effect() -> None:
    none = arms([F] * 12, [F] * 12)  # CI -0.24..+0.24
    assert decide(none, False, True, "", None, 0.5) == (
        "refuted", f"{rates(0, 0, 12)}; a rise of 50% is excluded (95% CI up to +0.24)")
    assert decide(none, False, True, "", 0.5, 0.25)[0] == "refuted"  # a milestone p above alpha
    # ci_high exactly min_effect is not excluded
    assert decide(none, False, True, "", None, none.ci_high) == (
        "inconclusive", f"too few pairs to decide ({rates(0, 0, 12)}, 95% CI -0.24..+0.24)")
    assert decide(none, False, True, "", None, math.nextafter(none.ci_high, 1))[0] == "refuted"


# -- validating_looks ------------------------------------------------------------------------


def test_validating_looks_by_pair_count() -> None:
    expected = {1: (1, 1), 2: (2, 1), 5: (5, 1), 6: (6, 1), 7: (6, 2), 8: (6, 3), 9: (7, 3), 10: (7, 4),
                11: (7, 5), 12: (7, 6), 13: (8, 6), 14: (8, 7), 20: (9, 12)}
    for pairs, (first, looks) in expected.items():
        assert validating_looks(pairs) == (first, 0.05 / looks), pairs


# -- _settled --------------------------------------------------------------------------------


def result(arm: str, seed: int, success: bool, score: float = 0.0, *, applied: bool | None = None,
           detail: str = "") -> ReplayResult:
    return ReplayResult(run_id=f"{arm}-{seed}", arm=arm, seed=seed, status="done", success=success,
                        score=score, answer=None, applied=applied, applied_detail=detail)


def paired(treatment: Sequence[bool], control: Sequence[bool]) -> list[ReplayResult]:
    out: list[ReplayResult] = []
    for i, (t, c) in enumerate(zip(treatment, control, strict=True)):
        out += [result("treatment", i, t), result("control", i, c)]
    return out


def test_settled_at_a_passing_look_only_from_the_first_validating_look() -> None:
    # 8 pairs: looks at 6, 7, 8 at 0.05/3; 5/5 (p = 1/32) comes before the first look
    assert not _settled(paired([T] * 5, [F] * 5), None, 8, 0.5)
    assert _settled(paired([T] * 6, [F] * 6), None, 8, 0.5)  # p = 1/64 < 0.05/3
    # 6 pairs: one look, at 6, at 0.05; 5/5 would pass 0.05 but is no look
    assert not _settled(paired([T] * 5, [F] * 5), None, 6, 0.5)
    assert _settled(paired([T] * 5, [F] * 5), None, 5, 0.5)  # 1/32 < 0.05 at the look of 5 pairs


def test_settled_when_min_effect_is_excluded() -> None:
    flat = paired([F] * 12, [F] * 12)  # CI up to +0.24: more pairs could still validate
    assert _settled(flat, None, 30, 0.5)
    assert not _settled(flat, None, 30, compare([F] * 12, [F] * 12).ci_high)  # ci_high == min_effect


def test_settled_when_even_the_remaining_pairs_could_not_validate() -> None:
    # 6 pairs at 0.05: after 1 failed pair, 5 wins give p = 1/32 (can pass); after 2, 4 give 1/16
    assert not _settled(paired([F], [F]), None, 6, 0.5)
    assert _settled(paired([F, F], [F, F]), None, 6, 0.5)
    assert _settled(paired([F, F], [F, F]), None, 7, 0.5)  # 7 pairs: 5 more wins, 1/32 > 0.025
    assert not _settled(paired([F, F], [F, F]), None, 8, 0.5)  # 8 pairs: 6 more, 1/64 < 0.05/3
    # 5 pairs at 0.05, the first won by the control only: the best is 4 wins against 1, p = 6/32
    assert _settled(paired([F], [T]), None, 5, 0.5)
    assert _settled(paired([T], [T]), None, 1, 0.0)  # no pair left: p = 1.0


def test_a_look_must_pass_its_level_not_touch_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """decide validates at p < alpha, so a look counts only where p can fall below its level,
    and a verification is settled once the best case is no longer below it. At 5% no p (a
    multiple of 1/2^n) equals a level (0.05/k), so the boundary shows only at a level that is
    a power of 2: alpha = 1 here."""
    monkeypatch.setattr(_verify, "ALPHA", 1.0)
    assert validating_looks(2) == (2, 1.0)  # 1 pair: p = 0.5, the level of 2 looks: 0.5: no look
    assert validating_looks(3) == (2, 0.5)  # 2 pairs: p = 0.25 < 0.5
    # 3 pairs, looks at 2 and 3 at 0.5: 1/2 vs 0/2 has p = 0.5, not below; one more win can pass
    assert not _settled(paired([T, F], [F, F]), None, 3, 0.0)
    # 0/2 vs 0/2: the best, one more win, has p = 0.5: it cannot pass
    assert _settled(paired([F, F], [F, F]), None, 3, 0.0)


def test_settled_uses_the_shared_control_in_place_of_control_replays() -> None:
    shared = [result("control", 0, F) for _ in range(6)]
    treatment = [result("treatment", i, T) for i in range(6)]
    assert _settled(treatment, shared, 6, 0.5)  # 6/6 vs the shared 0/6
    assert not _settled(treatment[:5], shared, 6, 0.5)  # compared with the first 5 of it
    assert _settled(treatment[:5], [result("control", 0, T)] * 6, 6, 0.5)  # a control that succeeds: no chance


# -- greedy_from -----------------------------------------------------------------------------


def stand_in(*, counterfact_agents: bool = False, greedy: bool | None = None,
             temperatures: Sequence[Sequence[Any]] = ()) -> SimpleNamespace:
    """A replayer with the target's flags and steps whose model calls recorded these
    temperatures (the string "none": a call that recorded none)."""
    steps = [SimpleNamespace(model_calls=[SimpleNamespace(params={} if t == "none" else {"temperature": t})
                                          for t in step]) for step in temperatures]
    return SimpleNamespace(target=SimpleNamespace(counterfact_agents=counterfact_agents, greedy=greedy),
                           steps=steps)


def test_greedy_from_a_temperature_given_for_counterfacts_own_agents() -> None:
    assert greedy_from(stand_in(counterfact_agents=True, greedy=False), 0, 0.0) is True
    assert greedy_from(stand_in(counterfact_agents=True, greedy=True), 0, 0.7) is False
    assert greedy_from(stand_in(counterfact_agents=True, greedy=True), 0, 1.0) is False
    # a temperature does not apply to other agents; no temperature: the target decides
    assert greedy_from(stand_in(counterfact_agents=False, greedy=False), 0, 0.0) is False
    assert greedy_from(stand_in(counterfact_agents=False, greedy=True), 0, 0.7) is True
    assert greedy_from(stand_in(counterfact_agents=True, greedy=True), 0) is True
    assert greedy_from(stand_in(counterfact_agents=True, greedy=False), 0) is False


def test_greedy_from_the_recorded_calls_from_the_step_on() -> None:
    replayer = stand_in(temperatures=[[0.8], [0.0, 0.0], [], [0.0]])
    assert greedy_from(replayer, 0) is False  # the first step sampled
    assert greedy_from(replayer, 1) is True  # from step 1 on every call was greedy
    assert greedy_from(replayer, 3) is True
    assert greedy_from(stand_in(temperatures=[[0.0], [0.0, 1.0]]), 1) is False
    assert greedy_from(stand_in(temperatures=[[0.0], ["none"]]), 0) is False  # no temperature: sampled
    assert greedy_from(stand_in(temperatures=[[], []]), 0) is True  # no model call: deterministic
    assert greedy_from(stand_in(counterfact_agents=True, temperatures=[[0.7]]), 0, 0.0) is True


# -- _milestone_p ----------------------------------------------------------------------------


def scored(arm: str, scores: Sequence[float]) -> list[ReplayResult]:
    return [result(arm, i, False, s) for i, s in enumerate(scores)]


def test_milestone_p_is_a_sign_test_of_the_differing_pairs() -> None:
    t, c = scored("treatment", [0.5, 0.5, 0.2, 1.0]), scored("control", [0.2, 0.1, 0.4, 1.0])
    assert _milestone_p(t, c) == sign_test(2, 1) == 0.5  # two better, one worse, one tie
    assert _milestone_p(c, t) == sign_test(1, 2) == 0.875
    assert _milestone_p(scored("treatment", [1.0, 1.0]), scored("control", [0.0, 0.5])) == 0.25
    assert _milestone_p(scored("treatment", [0.3, 0.3]), scored("control", [0.3, 0.3])) is None  # all ties
    assert _milestone_p(scored("treatment", [0.4, 0.2]), scored("control", [0.3, 0.3])) == 0.75  # one each way
    with pytest.raises(ValueError):
        _milestone_p(scored("treatment", [1.0, 0.0]), scored("control", [0.0]))


# -- _activation_effect ----------------------------------------------------------------------

EDIT = {"layer": 1, "positions": "all", "operation": "add", "vector": [1.0, 0.0]}


class LogitModel:
    """next_token_logits: `plain` without edits, `edited` with exactly the expected edits."""

    def __init__(self, plain: list[float], edited: list[float], edits: list[dict[str, Any]]) -> None:
        self.plain, self.edited = plain, edited
        self.expected = [ActivationEdit.model_validate(e) for e in edits]
        self.asked: list[list[ChatMessage]] = []

    def next_token_logits(self, messages: list[ChatMessage], activation_edits: list[Any] | None = None) -> torch.Tensor:
        self.asked.append(messages)
        if activation_edits is None:
            return torch.tensor(self.plain, dtype=torch.float32)
        assert activation_edits == self.expected
        return torch.tensor(self.edited, dtype=torch.float32)


class Store:
    """What verify asks of a store: it keeps the intervention and the verdict it is given,
    and has the steps of some runs."""

    def __init__(self, steps: dict[str, list[Any]] | None = None) -> None:
        self.interventions: list[tuple[Any, ...]] = []
        self.verdicts: list[dict[str, Any]] = []
        self._steps = steps or {}

    def add_intervention(self, run_id: str, fork_step: int, spec: dict[str, Any]) -> SimpleNamespace:
        self.interventions.append((run_id, fork_step, spec))
        return SimpleNamespace(id="iv-1")

    def add_verdict(self, intervention_id: str, run_id: str, verdict: str, reason: str, stats: dict[str, Any],
                    *, verdict_id: str) -> None:
        self.verdicts.append({"intervention_id": intervention_id, "run_id": run_id, "verdict": verdict,
                              "reason": reason, "stats": stats, "verdict_id": verdict_id})

    def steps(self, run_id: str) -> list[Any]:
        return self._steps[run_id]


def edited_step(hits: int | None, calls: int = 1) -> SimpleNamespace:
    params = {} if hits is None else {"activation_edit_hits": hits}
    call = SimpleNamespace(params=params, request=[{"role": "user", "content": "add 2 and 2"}])
    return SimpleNamespace(model_calls=[call] * calls)


def activation_replayer(model: LogitModel, edited: SimpleNamespace, step: int = 1, *,
                        greedy: bool | None = True) -> SimpleNamespace:
    other = SimpleNamespace(model_calls=[])  # the other steps: a KL from them would be wrong
    steps = [other] * step + [edited] + [other]
    return SimpleNamespace(
        store=Store({"treatment-0": steps}), parent=SimpleNamespace(id="run-1"), spec=ReplayerSpec(run_id="run-1"),
        target=SimpleNamespace(counterfact_agents=False, greedy=greedy), steps=[SimpleNamespace(model_calls=[])] * 3,
        model_of=lambda s: model if s is edited else None,
    )


def kl(p_logits: list[float], q_logits: list[float]) -> float:
    p = torch.log_softmax(torch.tensor(p_logits, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.tensor(q_logits, dtype=torch.float64), -1)
    return float(torch.sum(p.exp() * (p - q)))


def activation_plan(edits: list[dict[str, Any]], step: int = 1) -> ReplayPlan:
    return ReplayPlan(step=step, intervention=parse_intervention({"kind": "message", "text": "x"}),
                      directives=StepDirectives(activation_edits=edits), activation=True)


def test_activation_effect_is_the_first_token_kl_and_the_hook_hits_at_the_step() -> None:
    model = LogitModel([0.0, 0.0, 0.0], [2.0, 0.0, -1.0], [EDIT])
    replayer = activation_replayer(model, edited_step(7), step=2)
    value, hits = _activation_effect(replayer, activation_plan([EDIT], step=2), "treatment-0")
    assert hits == 7 and value == pytest.approx(kl([2.0, 0.0, -1.0], [0.0, 0.0, 0.0]), rel=1e-9)
    assert value == pytest.approx(0.5743, abs=1e-4)
    assert model.asked == [[ChatMessage(role="user", content="add 2 and 2")]] * 2
    # no hit recorded: 0; no model call at the step: no KL
    assert _activation_effect(activation_replayer(model, edited_step(None)), activation_plan([EDIT]), "treatment-0")[1] == 0
    assert _activation_effect(activation_replayer(model, edited_step(3, calls=0)), activation_plan([EDIT]),
                              "treatment-0") == (None, 0)
    # an edit that puts mass where the plain model has none: an infinite KL is no number
    inf = LogitModel([0.0, -math.inf], [0.0, 0.0], [EDIT])
    assert _activation_effect(activation_replayer(inf, edited_step(2)), activation_plan([EDIT]), "treatment-0") == (None, 2)


# -- verify ----------------------------------------------------------------------------------


class Scripted(Executor):
    """Answers each replay unit with `outcome(arm, seed)`, calling back as each ends."""

    kind = "local"  # type: ignore[assignment]
    width = 1

    def __init__(self, outcome: Callable[[str, int], ReplayResult]) -> None:
        self.outcome = outcome
        self.batches: list[list[tuple[str, int]]] = []
        self.units: list[Any] = []
        self.kept: list[tuple[Any, Any]] = []
        self.closed = 0

    def map(self, units, on_result=None):  # type: ignore[no-untyped-def]
        self.batches.append([(u.arm, u.seed) for u in units])
        self.units += units
        out = []
        for i, unit in enumerate(units):
            out.append(self.outcome(unit.arm, unit.seed))
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def keep(self, key, value):  # type: ignore[no-untyped-def]
        self.kept.append((key, value))

    def close(self) -> None:
        self.closed += 1


def by_seed(treatment: Callable[[int], bool], control: Callable[[int], bool], *, detail: str = "",
            t_score: float = 0.0, c_score: float = 0.0) -> Callable[[str, int], ReplayResult]:
    def outcome(arm: str, seed: int) -> ReplayResult:
        if arm == "treatment":
            return result(arm, seed, treatment(seed), t_score, applied=True, detail=detail)
        return result(arm, seed, control(seed), c_score)
    return outcome


def replayer_of(*, greedy: bool | None = False, counterfact_agents: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        store=Store(), parent=SimpleNamespace(id="run-1"), spec=ReplayerSpec(run_id="run-1"),
        target=SimpleNamespace(counterfact_agents=counterfact_agents, greedy=greedy),
        steps=[SimpleNamespace(model_calls=[]) for _ in range(3)],
    )


PLAN = ReplayPlan(step=2, intervention=parse_intervention({"kind": "message", "text": "RESULT: 999"}))


def test_verify_wants_an_edit_and_a_pair() -> None:
    replayer = replayer_of()
    with pytest.raises(CounterfactError) as raised:
        verify(replayer, ReplayPlan(step=2), executor=Scripted(by_seed(bool, bool)))  # type: ignore[arg-type]
    assert str(raised.value) == "nothing to verify: give an edit"
    for pairs in (0, -1):
        with pytest.raises(CounterfactError) as raised:
            verify(replayer, PLAN, pairs=pairs, executor=Scripted(by_seed(bool, bool)))  # type: ignore[arg-type]
        assert str(raised.value) == f"pairs must be at least 1, got {pairs}"
    assert replayer.store.interventions == []  # refused before anything is stored
    one = Scripted(by_seed(lambda s: True, lambda s: False))
    assert verify(replayer, PLAN, pairs=1, executor=one).comparison.n == 1  # type: ignore[arg-type]
    with pytest.raises(CounterfactError) as raised:
        verify(replayer_of(greedy=False), PLAN, control=[result("control", 0, F)],  # type: ignore[arg-type]
               executor=Scripted(by_seed(bool, bool)))
    assert str(raised.value) == "a shared control arm stands only for deterministic (greedy) replays"


def test_verify_runs_paired_arms_and_stores_the_verdict_with_its_stats() -> None:
    replayer = replayer_of(greedy=False)
    executor = Scripted(by_seed(lambda s: True, lambda s: s in (13, 14), detail="forced", t_score=1.0, c_score=0.5))
    progress: list[tuple[int, int]] = []
    report = verify(replayer, PLAN, pairs=6, seed=10, temperature=0.7, live_tools=True,  # type: ignore[arg-type]
                    labels={"who": "me"}, on_progress=lambda d, t: progress.append((d, t)), executor=executor)
    # one round of every replay, pair i on seed 10 + i in both arms
    assert executor.batches == [[(arm, s) for s in range(10, 16) for arm in ("treatment", "control")]]
    assert progress == [(i, 12) for i in range(1, 13)]
    assert executor.closed == 0  # the caller's executor is the caller's to close
    assert [value for _, value in executor.kept] == [replayer]
    for unit in executor.units:
        assert (unit.target, unit.plan, unit.temperature, unit.live_tools, unit.intervention_id) == (
            replayer.spec, PLAN, 0.7, True, "iv-1")
        assert unit.labels == {"who": "me", "verification_id": report.id}
    assert len({u.child_id for u in executor.units}) == 12
    assert replayer.store.interventions == [("run-1", 2, PLAN.intervention.dump())]  # type: ignore[union-attr]

    assert [r.seed for r in report.treatment] == [r.seed for r in report.control] == list(range(10, 16))
    assert {r.arm for r in report.treatment} == {"treatment"} and {r.arm for r in report.control} == {"control"}
    assert report.comparison == compare([T] * 6, [F, F, F, T, T, F])
    # 4 pairs only the treatment won: p = 1/16; but the treatment scored better in all 6: 1/64
    assert (report.verdict, report.reason) == ("validated", f"milestones improve (p = 0.0156) though {rates(6, 2, 6)}")
    assert (report.deterministic, report.applied, report.applied_detail) == (False, True, "forced")
    assert report.milestone_p_value == 1 / 64 and report.run_id == "run-1" and report.step == 2
    assert (report.intervention_id, report.kl_divergence, report.edit_hits) == ("iv-1", None, None)
    [stored] = replayer.store.verdicts
    assert stored == {
        "intervention_id": "iv-1", "run_id": "run-1", "verdict": "validated", "reason": report.reason,
        "verdict_id": report.id,
        "stats": report.model_dump(mode="json", exclude={"treatment", "control"}) | {
            "treatment_runs": [f"treatment-{s}" for s in range(10, 16)],
            "control_runs": [f"control-{s}" for s in range(10, 16)]},
    }
    assert stored["stats"]["milestone_p_value"] == 1 / 64 and stored["stats"]["comparison"]["n"] == 6


def test_verify_validates_by_the_exact_test_and_needs_every_replay_applied() -> None:
    repaired = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer_of(), PLAN, pairs=6, executor=repaired)  # type: ignore[arg-type]
    assert (report.verdict, report.reason) == ("validated", f"{rates(6, 0, 6)}, one-sided exact p = 0.0156")

    def partly(arm: str, seed: int) -> ReplayResult:
        applied = seed != 3
        return result(arm, seed, arm == "treatment", applied=applied if arm == "treatment" else None,
                      detail="kept from the tool" if not applied else "forced 999" if seed == 1 else "")
    replayer = replayer_of()
    report = verify(replayer, PLAN, pairs=6, executor=Scripted(partly))  # type: ignore[arg-type]
    assert (report.applied, report.applied_detail) == (False, "forced 999; kept from the tool")
    assert (report.verdict, report.reason) == (
        "inconclusive", "the edit was not applied (forced 999; kept from the tool)")
    assert replayer.store.verdicts[0]["stats"]["applied"] is False


def test_verify_closes_the_executor_it_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Scripted] = []

    def local(store: Any, *, concurrency: int) -> Scripted:
        executor = Scripted(by_seed(lambda s: True, lambda s: False))
        executor.opened_with = (store, concurrency)  # type: ignore[attr-defined]
        opened.append(executor)
        return executor

    monkeypatch.setattr(_verify, "LocalExecutor", local)
    replayer = replayer_of()
    verify(replayer, PLAN, pairs=2, concurrency=3)  # type: ignore[arg-type]
    verify(replayer, PLAN, pairs=2)  # type: ignore[arg-type]
    assert [(e.opened_with, e.closed) for e in opened] == [((replayer.store, 3), 1), ((replayer.store, 4), 1)]  # type: ignore[attr-defined]


def test_deterministic_verification_runs_the_pairs_asked_or_one_when_sequential() -> None:
    executor = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer_of(greedy=True), PLAN, pairs=3, executor=executor)  # type: ignore[arg-type]
    assert executor.batches == [[("treatment", 0), ("control", 0), ("treatment", 1), ("control", 1),
                                 ("treatment", 2), ("control", 2)]]
    assert report.deterministic and (report.verdict, report.reason) == (
        "validated", f"deterministic replays: the edit repairs the run ({rates(3, 0, 3)})")
    executor = Scripted(by_seed(lambda s: False, lambda s: False))
    report = verify(replayer_of(greedy=True), PLAN, pairs=5, sequential=True, executor=executor)  # type: ignore[arg-type]
    assert executor.batches == [[("treatment", 0), ("control", 0)]]
    assert (report.verdict, report.comparison.n) == ("refuted", 1)
    # the temperature decides for counterfact's agents
    executor = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer_of(greedy=False, counterfact_agents=True), PLAN, pairs=2, temperature=0.0,  # type: ignore[arg-type]
                    executor=executor)
    assert report.deterministic and report.verdict == "validated"


def test_a_shared_control_stands_for_the_control_arm() -> None:
    shared = [result("control", 100 + i, F, 0.0) for i in range(3)]
    executor = Scripted(by_seed(lambda s: True, lambda s: False, t_score=1.0))
    progress: list[tuple[int, int]] = []
    replayer = replayer_of(greedy=True)
    report = verify(replayer, PLAN, pairs=3, seed=7, control=shared, executor=executor,  # type: ignore[arg-type]
                    on_progress=lambda d, t: progress.append((d, t)))
    assert executor.batches == [[("treatment", 7)]] and progress == [(1, 1)]
    assert report.control == shared[:1] and [r.run_id for r in report.treatment] == ["treatment-7"]
    assert (report.verdict, report.comparison.n, report.milestone_p_value) == ("validated", 1, 0.5)
    assert replayer.store.verdicts[0]["stats"]["control_runs"] == ["control-100"]


def test_sequential_verification_stops_at_the_first_passing_look() -> None:
    executor = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer_of(), PLAN, pairs=8, sequential=True, executor=executor)  # type: ignore[arg-type]
    assert executor.batches == [[("treatment", i), ("control", i)] for i in range(6)]  # looks at 6, 7, 8
    assert (report.verdict, report.reason) == ("validated", f"{rates(6, 0, 6)}, one-sided exact p = 0.0156")


def test_sequential_verification_stops_once_it_cannot_validate() -> None:
    executor = Scripted(by_seed(lambda s: False, lambda s: False))
    report = verify(replayer_of(), PLAN, pairs=6, sequential=True, executor=executor)  # type: ignore[arg-type]
    assert len(executor.batches) == 2  # 2 failed pairs: 4 wins would leave p = 1/16
    assert (report.verdict, report.reason) == (
        "inconclusive", f"too few pairs to decide ({rates(0, 0, 2)}, 95% CI -0.66..+0.66)")


def test_a_sequential_verdict_is_held_to_the_split_level() -> None:
    """5/8 vs 0/8 (p = 1/32) passes 5% but not 0.05/3, the level of 8 pairs' looks."""
    wins = {0, 1, 2, 4, 5}  # 5 of the first 6 (no pass), none after: 8 pairs
    executor = Scripted(by_seed(lambda s: s in wins, lambda s: False))
    report = verify(replayer_of(), PLAN, pairs=8, sequential=True, executor=executor)  # type: ignore[arg-type]
    assert len(executor.batches) == 8
    assert (report.verdict, report.reason) == (
        "inconclusive", f"too few pairs to decide ({rates(5, 0, 8)}, 95% CI +0.17..+0.86)")
    same = verify(replayer_of(), PLAN, pairs=8, executor=Scripted(by_seed(lambda s: s in wins, lambda s: False)))  # type: ignore[arg-type]
    assert same.verdict == "validated"


def test_an_activation_edit_is_applied_when_its_hooks_hit_and_it_moves_the_first_token() -> None:
    def run(model: LogitModel, step: SimpleNamespace, edits: list[dict[str, Any]], detail: str = "") -> Any:
        replayer = activation_replayer(model, step)
        outcome = by_seed(lambda s: True, lambda s: False, detail=detail)
        return verify(replayer, activation_plan(edits), pairs=1, executor=Scripted(outcome))  # type: ignore[arg-type]

    moved = LogitModel([0.0, 0.0, 0.0], [2.0, 0.0, -1.0], [EDIT])
    report = run(moved, edited_step(4), [EDIT])
    value = kl([2.0, 0.0, -1.0], [0.0, 0.0, 0.0])
    assert (report.applied, report.edit_hits, report.kl_divergence) == (True, 4, pytest.approx(value))
    assert report.applied_detail == f"hooks changed activations 4 times; first-token KL {value:.4g}"
    assert report.applied_detail == "hooks changed activations 4 times; first-token KL 0.5743"
    assert report.verdict == "validated"
    # no hook hit; a first token that did not move
    assert run(moved, edited_step(0), [EDIT]).applied is False
    still = LogitModel([1.0, 0.0], [1.0, 0.0], [EDIT])
    report = run(still, edited_step(4), [EDIT])
    assert (report.applied, report.kl_divergence) == (False, 0.0)
    assert (report.verdict, report.reason) == (
        "inconclusive", "the edit was not applied (hooks changed activations 4 times; first-token KL 0)")
    tiny = LogitModel([0.0, 0.0], [2e-3, 0.0], [EDIT])  # KL ~ 5e-7: not moved
    assert run(tiny, edited_step(4), [EDIT]).applied is False
    small = LogitModel([0.0, 0.0], [4e-3, 0.0], [EDIT])  # KL ~ 2e-6: moved
    assert run(small, edited_step(4), [EDIT]).applied is True
    # edits of generated positions only need not move the first token
    generated = {**EDIT, "positions": "generated"}
    assert run(LogitModel([1.0, 0.0], [1.0, 0.0], [generated]), edited_step(4), [generated]).applied is True
    both = [generated, EDIT]
    assert run(LogitModel([1.0, 0.0], [1.0, 0.0], both), edited_step(4), both).applied is False
    # no KL: the replays' own detail stands
    inf = LogitModel([0.0, -math.inf], [0.0, 0.0], [EDIT])
    report = run(inf, edited_step(2), [EDIT], detail="hooked")
    assert (report.applied, report.applied_detail, report.kl_divergence, report.edit_hits) == (False, "hooked", None, 2)
    report = run(LogitModel([0.0, -math.inf], [0.0, 0.0], [generated]), edited_step(2), [generated], detail="hooked")
    assert (report.applied, report.applied_detail) == (True, "hooked")


def test_verify_defaults_three_sampled_pairs_at_a_min_effect_of_a_half() -> None:
    executor = Scripted(by_seed(lambda s: False, lambda s: False))
    report = verify(replayer_of(), PLAN, executor=executor)  # type: ignore[arg-type]
    assert executor.batches == [[(arm, s) for s in range(3) for arm in ("treatment", "control")]]
    assert {(u.temperature, u.live_tools) for u in executor.units} == {(None, False)}
    assert all(u.labels == {"verification_id": report.id} for u in executor.units)
    # 0/3 vs 0/3: the interval reaches +0.56, so a rise of 50% is not excluded
    assert (report.verdict, report.reason) == (
        "inconclusive", f"too few pairs to decide ({rates(0, 0, 3)}, 95% CI -0.56..+0.56)")


def test_verify_judges_determinism_from_the_edited_step_on() -> None:
    replayer = replayer_of(greedy=None)
    replayer.steps = stand_in(temperatures=[[0.8], [0.8], [0.0]]).steps  # sampled before the fork only
    executor = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer, PLAN, pairs=3, sequential=True, executor=executor)  # type: ignore[arg-type]
    assert report.deterministic and executor.batches == [[("treatment", 0), ("control", 0)]]
    assert report.verdict == "validated"
    replayer.steps = stand_in(temperatures=[[0.0], [0.0], [0.8]]).steps
    report = verify(replayer, PLAN, pairs=3, executor=Scripted(by_seed(lambda s: True, lambda s: False)))  # type: ignore[arg-type]
    assert not report.deterministic and report.verdict == "inconclusive"


def test_a_sequential_verification_with_a_shared_control() -> None:
    shared = [result("control", 50, F)]
    executor = Scripted(by_seed(lambda s: True, lambda s: False))
    report = verify(replayer_of(greedy=True), PLAN, pairs=4, sequential=True, control=shared,  # type: ignore[arg-type]
                    executor=executor)
    assert executor.batches == [[("treatment", 0)]]
    assert (report.verdict, report.control) == ("validated", shared)
