"""The debugger: from a failed run to failure hypotheses, each proved or refuted by replay.

1. Segments: the run splits at its planning steps (orchestrator workflows), else it is one.
2. Hypotheses come from the strategies asked for:
   llm       a model reads a segment (steps with explicit indices, never the expected answer)
             and proposes (agent, step, reason, fix); the fix becomes a message edit;
   resample  the point of no return: replays from a step with fresh samples (bisection over
             steps, not one replay per step) find the last step from which the run can still
             succeed; its original output is the suspect, and a successful resample's output
             at that step the fix;
   patch     a successful run of the same task (given, or found by resampling the whole run)
             lends its step outputs, one step at a time; where a transplant repairs the run
             and the agent runs on a local model, its activations are patched layer by layer
             to find the layers that carry the repair.
3. Every hypothesis is verified (treatment against control replays) within a budget of
   replays and tokens. Sessions, hypotheses and verdicts are stored as they are made, so an
   interrupted session resumes where it stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.agents import ChatMessage, ChatModel, GenerationSettings, ModelError, resolve_model
from counterfact.interventions._replay import Replayer
from counterfact.interventions._specs import (
    ActivationIntervention,
    CapturedVector,
    Intervention,
    MessageEdit,
    StepRef,
    VectorSource,
)
from counterfact.interventions._verify import Progress, verify
from counterfact.traces import DebugSpend, HypothesisRecord, StepRecord

Strategy = Literal["llm", "resample", "patch"]
STRATEGIES: tuple[Strategy, ...] = ("llm", "resample", "patch")


class Budget(BaseModel):
    replays: int = Field(default=60, ge=1)
    tokens: int | None = Field(default=None, ge=1)


class Segment(BaseModel):
    """A stretch of a run between planning steps: what one hypothesis prompt shows."""

    index: int
    first_step: int
    last_step: int


class HypothesisView(BaseModel):
    """A hypothesis with its verdict, as the report shows it."""

    id: str
    strategy: str
    segment: int
    step: int | None
    agent: str | None
    reason: str
    intervention: dict[str, Any] | None
    status: str
    note: str = ""
    reference_run_id: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    verdict: str | None = None
    verdict_reason: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)


class DebugReport(BaseModel):
    session_id: str
    run_id: str
    question: str
    answer: str | None
    expected: str | None
    strategies: list[str]
    segments: list[Segment]
    hypotheses: list[HypothesisView]
    spent: DebugSpend
    status: str


def split_segments(steps: list[StepRecord]) -> list[Segment]:
    """Segments start at each planning step (the first one also takes what came before it)."""
    starts = [s.index or 0 for s in steps if s.kind == "plan"] or [0]
    starts[0] = 0
    ends = [*[s - 1 for s in starts[1:]], len(steps) - 1]
    return [Segment(index=i, first_step=a, last_step=b) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]


class Debugger:
    """Runs one debug session of a failed run."""

    def __init__(
        self,
        replayer: Replayer,
        *,
        strategies: list[Strategy],
        budget: Budget,
        trials: int = 1,
        samples: int = 4,
        temperature: float = 0.8,
        hypothesis_model: str | ChatModel | None = None,
        reference: str | None = None,
        max_hypotheses: int = 3,
        on_progress: Progress | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        run = replayer.parent
        if run.status == "succeeded":
            raise CounterfactError(f"run {run.id} succeeded: there is no failure to debug")
        if replayer.target.check is None:
            raise CounterfactError(
                f"run {run.id} has no check of its final state, so replays cannot be scored: give one"
            )
        if not strategies:
            raise CounterfactError("choose at least one strategy: llm, resample, patch or all")
        self.replayer = replayer
        self.store = replayer.store
        self.strategies = strategies
        self.budget = budget
        self.trials = trials
        self.samples = samples  # fresh replays per resampled step (and to find a reference)
        self.temperature = temperature
        self.reference = reference
        self.max_hypotheses = max_hypotheses
        self.on_progress = on_progress
        self.say = on_event or (lambda message: None)
        self._hypothesis_model = hypothesis_model
        self.steps = replayer.steps
        self.session_id = ""
        self.spent = DebugSpend()
        self.completed: list[str] = []  # stages finished, so a resumed session skips them

    # -- session bookkeeping -----------------------------------------------------------------

    def open_session(self) -> str:
        """Resume the run's unfinished session with the same strategies, or start one."""
        run_id = self.replayer.parent.id
        session = self.store.unfinished_debug_session(run_id, list(self.strategies))
        if session is not None:
            self.session_id, self.spent, self.completed = session.id, session.spent, list(session.completed)
            self.say(f"resuming debug session {self.session_id[:12]}")
            return self.session_id
        settings = {"budget": self.budget.model_dump(), "trials": self.trials,
                    "samples": self.samples, "temperature": self.temperature}
        self.session_id = self.store.create_debug_session(run_id, list(self.strategies), settings).id
        return self.session_id

    def _save_spent(self, status: str = "running") -> None:
        self.store.update_debug_session(
            self.session_id, spent=self.spent, completed=self.completed, status=status  # type: ignore[arg-type]
        )

    def _add(self, strategy: str, step: int | None, reason: str, intervention: Intervention | None,
             *, status: str = "proposed", note: str = "", reference: str | None = None,
             evidence: dict[str, Any] | None = None) -> HypothesisRecord:
        target = self.steps[step] if step is not None else None
        return self.store.add_hypothesis(
            self.session_id, strategy=strategy, segment=self._segment_of(step), step=step,
            agent=target.agent if target else None, reason=reason,
            intervention=intervention.dump() if intervention else None,
            status=status, note=note, reference_run_id=reference, evidence=evidence,  # type: ignore[arg-type]
        )

    def hypotheses(self) -> list[HypothesisRecord]:
        return self.store.hypotheses(self.session_id)

    def _segment_of(self, step: int | None) -> int:
        if step is None:
            return 0
        return next((t.index for t in split_segments(self.steps) if t.first_step <= step <= t.last_step), 0)

    # -- budget ---------------------------------------------------------------------------------

    def _afford(self, replays: int) -> bool:
        if self.spent.replays + replays > self.budget.replays:
            return False
        return self.budget.tokens is None or self.spent.tokens < self.budget.tokens

    def _charge(self, run_ids: list[str]) -> None:
        self.spent.replays += len(run_ids)
        self.spent.tokens += sum(self.store.get_run(r).total_tokens for r in run_ids)

    # -- the session ---------------------------------------------------------------------------

    def run(self) -> DebugReport:
        started = time.perf_counter()
        self.open_session()
        for strategy in self.strategies:
            if strategy in self.completed:
                continue
            self.say(f"proposing hypotheses: {strategy}")
            {"llm": self._llm, "resample": self._resample, "patch": self._patch}[strategy]()
            self.completed.append(strategy)
            self._save_spent()
        for hypothesis in self.hypotheses():
            if hypothesis.status != "proposed":
                continue
            self._verify(hypothesis)
        if "patch" in self.strategies and "patch-layers" not in self.completed:
            self._patch_layers()
            self.completed.append("patch-layers")
        self.spent.seconds += time.perf_counter() - started
        self._save_spent("done")
        return self.report()

    def _verify(self, hypothesis: HypothesisRecord) -> None:
        if hypothesis.intervention is None:
            return
        replays = 2 * self.trials
        if not self._afford(replays):
            self.store.update_hypothesis(hypothesis.id, status="skipped", note="budget exhausted before it was verified")
            return
        intervention = Intervention.model_validate(hypothesis.intervention)
        try:
            plan = self.replayer.compile(intervention, hypothesis.step)
        except CounterfactError as exc:
            self.store.update_hypothesis(hypothesis.id, status="skipped", note=f"edit does not apply: {exc}")
            return
        self.say(f"verifying {hypothesis.strategy} hypothesis at step {hypothesis.step}")
        report = verify(
            self.replayer, plan, trials=self.trials, on_progress=self.on_progress,
            labels={"debug_session": self.session_id},
        )
        self._charge([r.run_id for r in report.treatment + report.control])
        self.store.update_hypothesis(hypothesis.id, status="verified", verdict_id=report.id)
        self._save_spent()

    # -- strategy: llm -------------------------------------------------------------------------

    def _model(self) -> ChatModel:
        model = self._hypothesis_model
        if isinstance(model, ChatModel):
            return model
        resolved = resolve_model(model or "embedded")
        check = getattr(resolved, "check", None)
        if callable(check):
            try:
                check()
            except ModelError as exc:
                raise CounterfactError(
                    f"the llm strategy cannot reach its model: {exc}; give another hypothesis model, "
                    "or choose the resample or patch strategy"
                ) from None
        self._hypothesis_model = resolved
        return resolved

    def _llm(self) -> None:
        model = self._model()
        template = resources.files("counterfact.interventions").joinpath("prompts/debug_hypotheses.txt").read_text()
        for segment in split_segments(self.steps):
            lines = "\n".join(
                f"[{s.index}] {s.agent or s.node} ({s.kind}): {_one_line(s.output)}"
                for s in self.steps[segment.first_step : segment.last_step + 1]
            )
            prompt = template.format(
                question=self.replayer.target.question,
                steps=lines,
                answer=final_answer(self.steps),
                count=self.max_hypotheses,
            )
            proposals: list[tuple[int, str, str]] = []
            error = ""
            for _attempt in range(2):  # malformed output gets one retry
                text = model.complete(
                    [ChatMessage(role="user", content=prompt)],
                    GenerationSettings(max_tokens=160, temperature=0.0),
                ).text
                proposals, error = parse_hypotheses(text, self.steps, segment)
                if proposals:
                    break
            if not proposals:
                self._add("llm", None, f"segment {segment.index}: no usable hypothesis", None,
                          status="skipped", note=error)
                continue
            for step, reason, fix in proposals[: self.max_hypotheses]:
                edit = MessageEdit(at=StepRef(step=step), text=fix)
                self._add("llm", step, reason, Intervention(edits=[edit], note="llm"))

    # -- strategy: resample --------------------------------------------------------------------

    def _sample_from(self, step: int, count: int) -> list[tuple[str, bool]]:
        """`count` fresh replays from `step` at the sampling temperature: (run id, success)."""
        plan = self.replayer.compile(None, step)
        results = []
        for k in range(count):
            result = self.replayer.replay(
                plan, arm="resample", seed=1000 + 97 * step + k, temperature=self.temperature,
                labels={"debug_session": self.session_id},
            )
            results.append((result.run_id, result.success))
        self._charge([r for r, _ in results])
        return results

    def _resample(self) -> None:
        n = len(self.steps)
        count = max(1, self.samples)
        takes_temperature = self.replayer.target.counterfact_agents or any(
            "temperature" in call.params for step in self.steps for call in step.model_calls
        )
        if not takes_temperature:
            self._add("resample", None, "no point of no return found", None, status="skipped",
                      note="the run is deterministic: none of its model calls takes a sampling "
                           "temperature, so fresh samples would only repeat it")
            return
        probes: dict[int, list[tuple[str, bool]]] = {}

        def rate(step: int) -> float:
            if step not in probes:
                probes[step] = self._sample_from(step, count)
            return sum(ok for _, ok in probes[step]) / count

        if not self._afford(count) or rate(0) == 0.0:
            note = "budget exhausted" if 0 not in probes else f"no fresh sample from step 0 succeeds ({count} tried)"
            self._add("resample", None, "no point of no return found", None, status="skipped", note=note)
            return
        low, high = 0, n  # rate(low) > 0; from `high` on, assume the failure is certain
        while high - low > 1 and self._afford(count):
            mid = (low + high) // 2
            if rate(mid) > 0:
                low = mid
            else:
                high = mid
        winner = next(r for r, ok in probes[low] if ok)
        fixed = self.store.steps(winner)[low]
        summary = ", ".join(f"step {s}: {sum(ok for _, ok in v)}/{len(v)}" for s, v in sorted(probes.items()))
        reason = (
            f"point of no return: fresh samples from step {low} still succeed, from step {high} "
            f"they do not ({summary})"
        )
        edit = MessageEdit(at=StepRef(step=low), text=_text(fixed.output))
        self._add("resample", low, reason, Intervention(edits=[edit], note="resample"), note=f"sample {winner}")

    # -- strategy: patch ------------------------------------------------------------------------

    def _reference(self) -> str | None:
        if self.reference:
            return self.store.resolve_run_id(self.reference)
        parent = self.replayer.parent
        same_input = self.replayer.target.same_input
        successes = self.store.list_runs(
            status="succeeded", workflow=parent.workflow, labels=same_input, limit=None,
        ) if same_input else []
        for run in successes:  # an unedited success: an original run or a resample
            if run.labels.get("arm") != "treatment":
                return run.id
        count = max(1, self.samples)
        if not self._afford(count):
            return None
        return next((r for r, ok in self._sample_from(0, count) if ok), None)

    def _patch(self) -> None:
        reference = self._reference()
        if reference is None:
            self._add("patch", None, "no successful run of this task to patch from", None,
                      status="skipped", note="give a reference run, or a larger budget to find one")
            return
        theirs = {(s.node, s.invocation): s for s in self.store.steps(reference)}
        for step in self.steps:
            other = theirs.get((step.node, step.invocation))
            if other is None or _text(other.output) == _text(step.output) or not _text(other.output):
                continue
            edit = MessageEdit(at=StepRef(step=step.index), text=_text(other.output))
            self._add(
                "patch", step.index,
                f"transplanting step {step.index} ({step.node}) from successful run {reference[:12]}",
                Intervention(edits=[edit], note=f"patch from {reference}"),
                reference=reference,
            )

    def _patch_layers(self) -> None:
        """For validated transplants on local-model steps: which layers carry the repair."""
        for hypothesis in self.report().hypotheses:
            if hypothesis.strategy != "patch" or hypothesis.verdict != "validated" or hypothesis.step is None:
                continue
            model = self.replayer.model_of(self.steps[hypothesis.step])
            geometry = getattr(model, "geometry", None)
            if not model.white_box or geometry is None:
                continue
            reference = hypothesis.reference_run_id
            if reference is None:
                continue
            stride = max(1, geometry.num_layers // 6)
            for layer in range(0, geometry.num_layers, stride):
                if not self._afford(2 * self.trials):
                    return
                edit = ActivationIntervention(
                    at=StepRef(step=hypothesis.step), layers=[layer], positions="last", operation="set",
                    vector=VectorSource(captured=CapturedVector(run=reference, step=hypothesis.step)),
                )
                self._add(
                    "patch", hypothesis.step,
                    f"layer {layer}: the successful run's residual stream at the last prompt token",
                    Intervention(edits=[edit], note=f"activation patch layer {layer}"),
                )
                self._verify(self.hypotheses()[-1])

    # -- report ----------------------------------------------------------------------------------

    def report(self) -> DebugReport:
        verdicts = {v.id: v for v in self.store.verdicts(run_id=self.replayer.parent.id)}
        views = []
        for h in self.hypotheses():
            verdict = verdicts.get(h.verdict_id) if h.verdict_id else None
            views.append(
                HypothesisView(
                    id=h.id, strategy=h.strategy, segment=h.segment, step=h.step, agent=h.agent,
                    reason=h.reason, intervention=h.intervention, status=h.status, note=h.note,
                    reference_run_id=h.reference_run_id, evidence=h.evidence,
                    verdict=verdict.verdict if verdict else None,
                    verdict_reason=verdict.reason if verdict else "",
                    stats=dict(verdict.stats) if verdict else {},
                )
            )
        session = self.store.get_debug_session(self.session_id)  # its own record, also when resumed
        run = self.replayer.parent
        return DebugReport(
            session_id=self.session_id,
            run_id=run.id,
            question=self.replayer.target.question,
            answer=run.outcome.detail if run.outcome else None,
            expected=self.replayer.target.expected,
            strategies=list(self.strategies),
            segments=split_segments(self.steps),
            hypotheses=sorted(views, key=rank),
            spent=session.spent,
            status=session.status,
        )


def rank(h: HypothesisView) -> tuple[int, float]:
    """Validated first (largest effect first), then inconclusive, refuted, skipped."""
    order = {"validated": 0, "inconclusive": 1, "refuted": 2}.get(h.verdict or "", 3)
    effect = float(h.stats.get("comparison", {}).get("difference", 0.0)) if h.stats else 0.0
    return order, -effect


_HYPOTHESIS = re.compile(
    r"STEP\s*:\s*\[?(\d+)\]?\s*\|\s*AGENT\s*:\s*([^|]*)\|\s*REASON\s*:\s*([^|]*)\|\s*FIX\s*:\s*(.+)",
    re.IGNORECASE,
)


def parse_hypotheses(text: str, steps: list[StepRecord], segment: Segment) -> tuple[list[tuple[int, str, str]], str]:
    """(step, reason, fix) triples from a model's answer, and why lines were rejected."""
    found: list[tuple[int, str, str]] = []
    problems: list[str] = []
    for line in text.splitlines():
        match = _HYPOTHESIS.search(line)
        if not match:
            continue
        step, agent, reason, fix = int(match.group(1)), match.group(2).strip(), match.group(3).strip(), match.group(4).strip()
        if not segment.first_step <= step <= segment.last_step:
            problems.append(f"step {step} is outside the segment")
            continue
        actual = steps[step].agent or steps[step].node
        if agent and agent.lower() != actual.lower():
            problems.append(f"step {step} was taken by {actual}, not {agent}")
            continue
        if not fix:
            problems.append(f"no fix for step {step}")
            continue
        found.append((step, reason, fix))
    if not found and not problems:
        problems.append(f"no line in the form 'STEP: i | AGENT: a | REASON: r | FIX: f' in {text[:120]!r}")
    return found, "; ".join(problems)


def final_answer(steps: list[StepRecord]) -> str | None:
    """The run's final answer as its steps wrote it (never the expected one): a workflow's
    `final_answer`, else what the last step said."""
    for step in reversed(steps):
        if isinstance(step.delta, dict) and step.delta.get("final_answer"):
            return str(step.delta["final_answer"])
    return _text(steps[-1].output) or None if steps else None


def _text(output: Any) -> str:
    return str(output.get("content", "")) if isinstance(output, dict) else ("" if output is None else str(output))


def _one_line(output: Any, width: int = 240) -> str:
    text = " ".join(_text(output).split())
    return text if len(text) <= width else text[: width - 1] + "…"
