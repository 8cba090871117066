"""Verifying an intervention: N treatment replays against N control replays from the same
fork point, paired by seed, scored by the task's checker, and a stored verdict.

validated     the edit raised success (or, failing that, milestone progress) over the control,
              by a one-sided exact test at the 5% level;
refuted       the edit reached the agents and success did not rise, and the pairs are enough
              to exclude a rise of `min_effect` (the upper end of the 95% interval is below it);
inconclusive  otherwise, with the reason: not applied, the failure does not reproduce in the
              control arm, too few pairs.

When every agent decodes greedily the replays are deterministic: each arm's outcome is then
exact, and the verdict rests on it rather than on a p-value (which is still reported). One
treatment replay then decides, and the control may be one shared by many verifications (a
replay of the run that reproduced every step: `control=`). A shared control still being
replayed is given as a callable: the treatment is replayed meanwhile, and if no control stands
when the treatment ends (the shared one failed to reproduce the run), this fix's own is
replayed then.

Sequential mode (`sequential=True`) runs the pairs one at a time and stops as soon as the
verdict cannot change: validated at the first look where the exact test passes, refuted once
a rise of `min_effect` is excluded, or stopped when even all remaining pairs going the
treatment's way could not reach significance. Validation is looked for only at the looks that
can reach significance at all (with n pairs the smallest p is 0.5^n), and alpha is split
evenly over those looks (Bonferroni), so early stopping keeps the 5% level without giving up
the power of the test at the last pair: 6 pairs get one look, at the end, at 0.05; 8 pairs get
looks at 6, 7 and 8 pairs at 0.05/3. The final verdict is taken at the same level.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.agents import ActivationEdit, ChatMessage
from counterfact.executors import Executor, LocalExecutor
from counterfact.interventions._replay import Replayer, ReplayPlan, ReplayResult
from counterfact.interventions._stats import ArmComparison, compare, sign_test
from counterfact.interventions._units import lend, replay_unit
from counterfact.store import VerdictKind

ALPHA = 0.05
Progress = Callable[[int, int], None]  # (replays done, replays in all), called as each ends
PendingControl = Callable[[], "list[ReplayResult] | None"]  # a control being replayed: waits, then it or None


class VerdictReport(BaseModel):
    """A verdict with everything it rests on."""

    id: str
    intervention_id: str
    run_id: str
    step: int
    verdict: VerdictKind
    reason: str
    comparison: ArmComparison
    deterministic: bool
    applied: bool | None
    applied_detail: str = ""
    kl_divergence: float | None = None  # activation edits: first-token KL, treatment || control
    edit_hits: int | None = None  # activation edits: hook applications that changed something
    milestone_p_value: float | None = None
    treatment: list[ReplayResult] = Field(default_factory=list)
    control: list[ReplayResult] = Field(default_factory=list)


def verify(
    replayer: Replayer,
    plan: ReplayPlan,
    *,
    pairs: int = 3,
    seed: int = 0,
    temperature: float | None = None,
    live_tools: bool | list[str] = False,
    min_effect: float = 0.5,
    concurrency: int = 4,
    on_progress: Progress | None = None,
    labels: dict[str, Any] | None = None,
    control: list[ReplayResult] | PendingControl | None = None,
    sequential: bool = False,
    executor: Executor | None = None,
) -> VerdictReport:
    """Run the arms, compare them, store the intervention, its replays and the verdict.

    `pairs`: replays per arm; the i-th treatment and control replays share seed `seed + i`.
    `control`: replays that stand for the control arm (deterministic runs only), so only the
    treatment is replayed; or a callable that waits for a shared control still being replayed
    and returns it, or None when it does not stand (the control arm is then replayed here).
    `sequential`: stop the pairs early once the verdict is settled. `executor`: where the
    replays run (default: `concurrency` threads here).
    """
    if plan.intervention is None:
        raise CounterfactError("nothing to verify: give an edit")
    if pairs < 1:
        raise CounterfactError(f"pairs must be at least 1, got {pairs}")
    store = replayer.store
    intervention_id = store.add_intervention(replayer.parent.id, plan.step, plan.intervention.dump()).id
    verdict_id = uuid.uuid4().hex
    tags = {**(labels or {}), "verification_id": verdict_id}
    deterministic = greedy_from(replayer, plan.step, temperature)
    if control is not None and not deterministic:
        raise CounterfactError("a shared control arm stands only for deterministic (greedy) replays")
    arms = ("treatment",) if control is not None else ("treatment", "control")
    pairs = 1 if control is not None or deterministic and sequential else pairs
    pending = control if callable(control) else None
    shared = None if callable(control) else control

    results: list[ReplayResult] = []
    total = pairs * len(arms)
    rounds = [[(arm, seed + i) for i in range(pairs) for arm in arms]] if not sequential else [
        [(arm, seed + i) for arm in arms] for i in range(pairs)
    ]
    own = executor is None
    executor = executor or LocalExecutor(store, concurrency=concurrency)
    lend(executor, replayer)
    done = 0

    def progress(_: int, __: ReplayResult) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    def replays(jobs: list[tuple[str, int]]) -> list[ReplayResult]:
        units = [
            replay_unit(replayer, plan, arm=arm, seed=s, temperature=temperature, live_tools=live_tools,
                        intervention_id=intervention_id, labels=tags)
            for arm, s in jobs
        ]
        return executor.map(units, progress)

    try:
        for jobs in rounds:
            results.extend(replays(jobs))
            if sequential and pending is None and _settled(results, shared, pairs, min_effect):
                break
        if pending is not None and (shared := pending()) is None:  # the shared control did not stand
            total += 1
            results.extend(replays([("control", seed)]))
    finally:
        if own:
            executor.close()
    treatment = [r for r in results if r.arm == "treatment"]
    control = shared[: len(treatment)] if shared is not None else [r for r in results if r.arm == "control"]
    comparison = compare([r.success for r in treatment], [r.success for r in control])
    applied = all(r.applied for r in treatment)
    detail = "; ".join(sorted({r.applied_detail for r in treatment if r.applied_detail}))
    kl, hits = (None, None)
    if plan.activation:
        kl, hits = _activation_effect(replayer, plan, treatment[0].run_id)
        # edits of generated positions only cannot move the first token's distribution
        first_token = any(e.get("positions") != "generated" for e in plan.directives.activation_edits)
        moved = kl is not None and kl > 1e-6
        applied = applied and bool(hits) and (moved or not first_token)
        detail = f"hooks changed activations {hits} times; first-token KL {kl:.4g}" if kl is not None else detail
    milestone_p = _milestone_p(treatment, control)
    alpha = validating_looks(pairs)[1] if sequential else ALPHA  # the level every look was held to
    verdict, reason = decide(comparison, deterministic, applied, detail, milestone_p, min_effect, alpha=alpha)
    report = VerdictReport(
        id=verdict_id,
        intervention_id=intervention_id,
        run_id=replayer.parent.id,
        step=plan.step,
        verdict=verdict,
        reason=reason,
        comparison=comparison,
        deterministic=deterministic,
        applied=applied,
        applied_detail=detail,
        kl_divergence=kl,
        edit_hits=hits,
        milestone_p_value=milestone_p,
        treatment=treatment,
        control=control,
    )
    stats = report.model_dump(mode="json", exclude={"treatment", "control"}) | {
        "treatment_runs": [r.run_id for r in treatment], "control_runs": [r.run_id for r in control]
    }
    store.add_verdict(intervention_id, replayer.parent.id, verdict, reason, stats, verdict_id=verdict_id)
    return report


def decide(
    c: ArmComparison,
    deterministic: bool,
    applied: bool,
    detail: str,
    milestone_p: float | None,
    min_effect: float,
    *,
    alpha: float = ALPHA,
) -> tuple[VerdictKind, str]:
    """The verdict rules (see the module docstring), with a one-line reason; `alpha` is the
    level of the exact tests (split over the looks of a sequential verification)."""
    rates = f"success {c.treatment_successes}/{c.n} with the edit vs {c.control_successes}/{c.n} without"
    if not applied:
        return "inconclusive", f"the edit was not applied ({detail or 'no evidence it reached the agents'})"
    if deterministic:
        if c.control_rate == 1.0:
            return "inconclusive", f"the failure does not reproduce: the control succeeds ({rates})"
        if c.treatment_rate == 1.0:
            return "validated", f"deterministic replays: the edit repairs the run ({rates})"
        return "refuted", f"deterministic replays: with the edit the run still fails ({rates})"
    if c.control_rate >= 0.5:
        return "inconclusive", f"the failure does not reproduce in the control arm ({rates})"
    if c.difference > 0 and c.p_value < alpha:
        return "validated", f"{rates}, one-sided exact p = {c.p_value:.3g}"
    if milestone_p is not None and milestone_p < alpha:
        return "validated", f"milestones improve (p = {milestone_p:.3g}) though {rates}"
    if c.ci_high < min_effect:
        return "refuted", f"{rates}; a rise of {min_effect:.0%} is excluded (95% CI up to {c.ci_high:+.2f})"
    return "inconclusive", f"too few pairs to decide ({rates}, 95% CI {c.ci_low:+.2f}..{c.ci_high:+.2f})"


def validating_looks(pairs: int) -> tuple[int, float]:
    """Of a sequential verification of `pairs` pairs: the first look (pairs done) at which it
    may validate, and the level each such look is held to. The looks are the last k, for the
    largest k such that each of them could pass at alpha / k."""
    for k in range(pairs, 1, -1):
        first = pairs - k + 1
        if compare([True] * first, [False] * first).p_value < ALPHA / k:
            return first, ALPHA / k
    return pairs, ALPHA


def _settled(results: list[ReplayResult], shared: list[ReplayResult] | None, pairs: int, min_effect: float) -> bool:
    """Whether more pairs could still change a sequential verdict (see the module docstring)."""
    treatment = [r.success for r in results if r.arm == "treatment"]
    control = [r.success for r in shared[: len(treatment)]] if shared is not None else [
        r.success for r in results if r.arm == "control"
    ]
    c = compare(treatment, control)
    first, level = validating_looks(pairs)
    if (c.n >= first and c.p_value < level) or c.ci_high < min_effect:
        return True
    left = pairs - c.n
    best = compare(treatment + [True] * left, control + [False] * left)
    return best.p_value >= level


def greedy_from(replayer: Replayer, step: int, temperature: float | None = None) -> bool:
    """Whether replays from `step` are deterministic: every model call the run made from there
    on decoded greedily (a call that recorded no temperature counts as sampled; a graph that
    calls no model is deterministic)."""
    if temperature is not None and replayer.target.counterfact_agents:
        return temperature == 0.0
    if replayer.target.greedy is not None:
        return replayer.target.greedy
    calls = [call for record in replayer.steps[step:] for call in record.model_calls]
    return all(call.params.get("temperature") == 0.0 for call in calls)


def _milestone_p(treatment: list[ReplayResult], control: list[ReplayResult]) -> float | None:
    """One-sided sign test on paired milestone scores, when there are differing pairs."""
    better = sum(t.score > c.score for t, c in zip(treatment, control, strict=True))
    worse = sum(t.score < c.score for t, c in zip(treatment, control, strict=True))
    return sign_test(better, worse) if better + worse else None


def _activation_effect(replayer: Replayer, plan: ReplayPlan, treatment_run: str) -> tuple[float | None, int]:
    """Hook hits at the edited step, and the KL divergence of its first-token distribution
    with the edit against without, on the prompt the step actually saw."""
    step = replayer.store.steps(treatment_run)[plan.step]
    if not step.model_calls:
        return None, 0
    call = step.model_calls[0]
    hits = int(call.params.get("activation_edit_hits", 0))
    model = replayer.model_of(step)
    messages = [ChatMessage.model_validate(m) for m in call.request]
    edits = [ActivationEdit.model_validate(e) for e in plan.directives.activation_edits]
    import torch  # only activation edits need it: remote-model users never load it

    edited = torch.log_softmax(model.next_token_logits(messages, edits).double(), -1)
    plain = torch.log_softmax(model.next_token_logits(messages).double(), -1)
    kl = float(torch.sum(edited.exp() * (edited - plain)))
    return (kl if math.isfinite(kl) else None), hits
