"""The debugger: from a failed run to failure hypotheses, each decided by replay.

1. Segments: the run splits at its planning steps (orchestrator workflows), else it is one.
2. Hypotheses (a suspect step and why) come from the strategies asked for, plug-ins found by
   name (`strategies`): history, handoff, grounded, rerun, llm, resample, patch by default, each in a module
   of its own. A strategy only proposes; the session stores what it proposes and verifies it.
   Hypotheses on the same step are one hypothesis, with the fixes of every strategy behind it.
3. Fixes are thinking interventions (see `_fixes`): the agent reads what went wrong and writes
   its own step again; several per hypothesis, best first.
4. Verification spends replays where they decide something. When the run decodes greedily one
   full control replay that reproduces every step stands for the control arm of every fix, and
   one treatment replay decides a fix; otherwise each fix is verified by a sequential exact test
   (`verify(sequential=True)`). Each hypothesis first gets its best fix; the budget left goes to
   hypotheses still undecided, in order. A hypothesis is validated by its first validated fix,
   refuted when every fix was tried and none repaired the run, and otherwise ends undecided
   with the reason (budget, fixes not applied, the failure does not reproduce).
Sessions, hypotheses and verdicts are stored as they are made, so an interrupted session
resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, ModelError, shared_model
from counterfact.executors import Executor, LocalExecutor
from counterfact.interventions._fix_verify import (
    PLACED_BY_REPLAY,
    FixVerifier,
    ReplayCount,
    fixes_of,
)
from counterfact.interventions._fixes import Fix, thinking_fixes
from counterfact.interventions._records import DebugLog, DebugSpend, HypothesisRecord
from counterfact.interventions._replay import Replayer, ReplayResult
from counterfact.interventions._session import (
    Budget,
    DebugReport,
    session_report,
    split_segments,
)
from counterfact.interventions._units import ReplayUnit, lend, replay_unit
from counterfact.interventions._verify import Progress
from counterfact.interventions.strategies import (
    FollowsUp,
    Outcome,
    Skipped,
    strategies_from,
    strategy_named,
)
from counterfact.store import StepRecord, discard_run


class Debugger:
    """Runs one debug session of a failed run."""

    def __init__(
        self,
        replayer: Replayer,
        *,
        strategies: Sequence[str],  # checked by `strategies_from`
        budget: Budget,
        pairs: int = 6,
        samples: int = 3,
        temperature: float = 0.8,
        hypothesis_model: str | ChatModel | None = None,
        reference: str | None = None,
        max_hypotheses: int = 2,
        on_progress: Progress | None = None,
        on_event: Callable[[str], None] | None = None,
        executor: Executor | None = None,
        parallel: int = 16,
        repeatable_tools: Sequence[str] = (),
        until_repaired: bool = False,
        fill_batches: bool | None = None,
    ) -> None:
        run = replayer.parent
        if run.status == "succeeded":
            raise CounterfactError(f"run {run.id} succeeded: there is no failure to debug")
        if replayer.target.check is None:
            raise CounterfactError(
                f"run {run.id} has no check of its final state, so replays cannot be scored: give one"
            )
        self.replayer = replayer
        self.store = replayer.store
        self.log = DebugLog(self.store)  # the session and its hypotheses, as they are made
        self.strategies = strategies_from(strategies)
        self.budget = budget
        self.pairs = pairs  # most pairs of a sequential verification (sampled runs)
        self.samples = samples  # sampled fixes per hypothesis; fresh replays per resampled step
        self.temperature = temperature
        self.repeatable_tools = sorted(repeatable_tools)  # tools the app declares safe to run again
        self.until_repaired = until_repaired  # stop verifying once a fix repairs the run
        # a batch's free places go to further fixes of one hypothesis; by default where that
        # costs no time: every model of the run is local, so the engine decodes the batch at once
        self.fill_batches = (not until_repaired and _all_local(replayer.steps)) if fill_batches is None else fill_batches
        self.reference = reference
        self.max_hypotheses = max_hypotheses
        self.on_progress = on_progress
        self.say = on_event or (lambda message: None)
        self._hypothesis_model = hypothesis_model
        self.steps = replayer.steps
        self.session_id = ""
        self.spent = DebugSpend()
        self.completed: list[str] = []  # stages finished, so a resumed session skips them
        self.verifier: FixVerifier  # decides the hypotheses; made when the session opens
        if parallel < 1:
            raise CounterfactError(f"parallel must be at least 1, got {parallel}")
        # Fixes verified at once. A setting of the session, not of the executor, so that the
        # same session on any executor makes the same replays and reaches the same report.
        self.parallel = parallel
        self.executor = executor
        self.counted = ReplayCount(self._tell)

    # -- session bookkeeping -----------------------------------------------------------------

    def open_session(self) -> str:
        """Resume the run's unfinished session with the same strategies, or start one."""
        run_id = self.replayer.parent.id
        session = self.log.unfinished_session(run_id, list(self.strategies))
        if session is not None:
            self.session_id, self.spent, self.completed = session.id, session.spent, list(session.completed)
            self.verifier = self._verifier()
            # replays cut off with the session belong to no verdict: the verification runs again
            cut_off = self.store.list_runs(status="running", labels={"debug_session": session.id}, limit=None)
            for run in cut_off:
                discard_run(self.store, run.id)
            if "resample" not in self.completed:  # probes of a resampling cut off: it runs again whole
                for run in self.store.list_runs(labels={"debug_session": session.id, "arm": "resample"}, limit=None):
                    discard_run(self.store, run.id)
            adopted = self.verifier.adopt()
            self.say(f"resuming debug session {self.session_id[:12]}"
                     + (f" ({len(cut_off)} unfinished replays discarded)" if cut_off else "")
                     + (f" ({adopted} verdicts stored before the interruption kept)" if adopted else ""))
            return self.session_id
        settings = {"budget": self.budget.model_dump(), "pairs": self.pairs,
                    "samples": self.samples, "temperature": self.temperature}
        self.session_id = self.log.create_session(run_id, list(self.strategies), settings).id
        self.verifier = self._verifier()
        return self.session_id

    def _verifier(self) -> FixVerifier:
        return FixVerifier(
            self.replayer, self.log, self.session_id, pairs=self.pairs, parallel=self.parallel,
            count=self.counted, afford=self.afford, charge=self._charge_stage, record=self._record, say=self.say,
            until_repaired=self.until_repaired, repeatable_tools=self.repeatable_tools, fill_batches=self.fill_batches,
        )

    def report_of(self, session_id: str) -> DebugReport:
        """The report of a stored session of this run (a finished one, to show it again); the
        id may be a unique prefix."""
        run_id = self.replayer.parent.id
        found = [s.id for s in self.log.sessions(run_id) if s.id.startswith(session_id)]
        if not found:
            raise CounterfactError(f"no debug session of run {run_id[:12]} starts with {session_id!r}")
        if len(found) > 1:
            raise CounterfactError(f"more than one debug session of run {run_id[:12]} starts with {session_id!r}: give more of it")
        self.session_id = found[0]
        return self.report()

    def _save_spent(self, status: str = "running") -> None:
        self.log.update_session(
            self.session_id, spent=self.spent, completed=self.completed, status=status  # type: ignore[arg-type]
        )

    def _note(self, strategy: str, note: str) -> None:
        """A strategy that proposed nothing says why (stored as a step-less, skipped record)."""
        self.log.add_hypothesis(
            self.session_id, strategy=strategy, segment=0, step=None, agent=None,
            reason="no hypothesis", intervention=None, status="skipped", note=note,
        )

    def _propose(self, strategy: str, step: int, reason: str, fixes: list[Fix], *,
                 reference: str | None = None, evidence: dict[str, Any] | None = None) -> None:
        """Store a hypothesis, or add its fixes to the hypothesis already on that step."""
        if not fixes:
            self._note(strategy, f"step {step}: {reason}; no fix applies to this step")
            return
        for existing in self.hypotheses():
            if existing.step == step and existing.status == "proposed":
                known = {json.dumps(f["intervention"], sort_keys=True) for f in existing.evidence.get("fixes", [])}
                added = [f for f in fixes if json.dumps(f.intervention, sort_keys=True) not in known]
                merged = dict(existing.evidence)
                stored, new = existing.evidence.get("fixes", []), [f.model_dump() for f in added]
                # fixes from a step that replays placed are tried before guesses read from the log
                merged["fixes"] = [*new, *stored] if (evidence or {}).get(PLACED_BY_REPLAY) else [*stored, *new]
                merged["proposed_by"] = [*existing.evidence.get("proposed_by", [existing.strategy]), strategy]
                merged.setdefault("reasons", {})[strategy] = reason
                for key, value in (evidence or {}).items():  # what placed the step, e.g. the replays that did
                    merged.setdefault(key, value)
                self.log.update_hypothesis(existing.id, evidence=merged)
                return
        target = self.steps[step]
        self.log.add_hypothesis(
            self.session_id, strategy=strategy, segment=self._segment_of(step), step=step,
            agent=target.agent or target.node, reason=reason, intervention=fixes[0].intervention,
            reference_run_id=reference,
            evidence={**(evidence or {}), "fixes": [f.model_dump() for f in fixes], "proposed_by": [strategy]},
        )

    def hypotheses(self) -> list[HypothesisRecord]:
        return self.log.hypotheses(self.session_id)

    def _segment_of(self, step: int | None) -> int:
        if step is None:
            return 0
        return next((t.index for t in split_segments(self.steps) if t.first_step <= step <= t.last_step), 0)

    # -- budget ---------------------------------------------------------------------------------

    def afford(self, replays: int) -> bool:
        if self.spent.replays + replays > self.budget.replays:
            return False
        return self.budget.tokens is None or self.spent.tokens < self.budget.tokens

    def _charge(self, run_ids: list[str]) -> None:
        self.spent.replays += len(run_ids)
        self.spent.tokens += sum(self.store.get_run(r).total_tokens for r in run_ids)

    def _charge_stage(self, run_ids: list[str], stage: str) -> None:
        """Charge a stage's replays with the stage, once: a stage completed before an
        interruption was charged then."""
        if stage in self.completed:
            return
        self._charge(run_ids)
        self.completed.append(stage)
        self._save_spent()  # the charge and the stage in one update

    def _record(self, h_id: str, position: int, fix: Fix, charged: list[str]) -> None:
        """A fix's verdict on its hypothesis (which it verifies, if validated), its replays charged."""
        h = next(x for x in self.hypotheses() if x.id == h_id)  # as stored now
        self._charge(charged)
        fixes = fixes_of(h)
        fixes[position] = fix
        self.log.update_hypothesis(h.id, evidence={**h.evidence, "fixes": [f.model_dump() for f in fixes]})
        self._save_spent()
        if fix.verdict == "validated" and h.status == "proposed":
            self.log.update_hypothesis(h.id, status="verified", verdict_id=fix.verdict_id,
                                         intervention=fix.intervention)

    # -- the session ---------------------------------------------------------------------------

    def run(self) -> DebugReport:
        started = time.perf_counter()
        self.open_session()
        own = self.executor is None
        if own:
            self.executor = LocalExecutor(self.store, concurrency=2 * self.parallel)  # a sampled fix replays pairs
        lend(self.executor, self.replayer)
        try:
            return self._run(started)
        finally:
            if own:
                self.executor.close()
                self.executor = None

    def _replay(self, units: list[ReplayUnit]) -> list[ReplayResult]:
        """Replays of the session on its executor, counted into the progress."""
        assert self.executor is not None
        return self.executor.map(units, self.counted)

    def _tell(self, uncharged: int) -> None:
        if self.on_progress is not None:
            self.on_progress(self.spent.replays + uncharged, self.budget.replays)

    def _run(self, started: float) -> DebugReport:
        for name in self.strategies:
            if name in self.completed:
                continue
            self.say(f"proposing hypotheses: {name}")
            self._take(name, strategy_named(name).propose(self))
            self.completed.append(name)
            self._save_spent()
        self._verify_all()
        for name in self.strategies:
            strategy = strategy_named(name)
            if isinstance(strategy, FollowsUp) and strategy.follow_up not in self.completed:
                self._take(name, strategy.after_verification(self))
                self._verify_all()
                self.completed.append(strategy.follow_up)
        self.spent.seconds += time.perf_counter() - started
        self._save_spent("done")
        return self.report()

    def _take(self, strategy: str, outcomes: Iterable[Outcome]) -> None:
        """Store what a strategy proposed, as it proposes it."""
        for outcome in outcomes:
            if isinstance(outcome, Skipped):
                self._note(strategy, outcome.note)
            else:
                evidence = {**outcome.evidence, PLACED_BY_REPLAY: True} if outcome.placed_by_replay else outcome.evidence
                self._propose(outcome.label or strategy, outcome.step, outcome.reason, outcome.fixes,
                              reference=outcome.reference, evidence=evidence)

    def _verify_all(self) -> None:
        assert self.executor is not None
        self.verifier.verify_all(self.executor)

    # -- what strategies may ask of the session (`strategies.DebugContext`) ---------------------

    def fixes(self, step: int, notes: list[str], strategy: str) -> list[Fix]:
        return thinking_fixes(self.replayer, self.steps[step], notes, strategy=strategy,
                              samples=self.samples, temperature=self.temperature)

    def sample_from(self, step: int, count: int) -> list[tuple[str, bool]]:
        plan = self.replayer.compile(None, step)
        replays = self._replay([
            replay_unit(self.replayer, plan, arm="resample", seed=1000 + 97 * step + k,
                        temperature=self.temperature, labels={"debug_session": self.session_id})
            for k in range(count)
        ])
        results = [(r.run_id, r.success) for r in replays]
        self._charge([r for r, _ in results])
        self.counted.charged()
        return results

    def rerun_from(self, step: int) -> tuple[str, bool]:
        """One replay from `step` with nothing edited: model calls made again, and tools too
        where the app declares them safe to repeat (others answer as recorded); charged to the
        budget. (run id, success)."""
        plan = self.replayer.compile(None, step)
        [result] = self._replay([replay_unit(self.replayer, plan, arm="rerun", seed=None, live_tools=self.repeatable_tools,
                                             labels={"debug_session": self.session_id})])
        self._charge([result.run_id])
        self.counted.charged()
        return result.run_id, result.success

    def hypothesis_model(self) -> ChatModel:
        model = self._hypothesis_model
        if isinstance(model, ChatModel):
            return model
        resolved = shared_model(model or "embedded")  # the agents' own, when it is the same model
        check = getattr(resolved, "check", None)
        if callable(check):
            try:
                check()
            except ModelError as exc:
                raise CounterfactError(
                    f"the llm strategy cannot reach its model: {exc}; give another hypothesis model, "
                    "or choose another strategy"
                ) from None
        self._hypothesis_model = resolved
        return resolved

    def report(self) -> DebugReport:
        return session_report(
            self.store, self.session_id, question=self.replayer.target.question,
            expected=self.replayer.target.expected, steps=self.steps,
        )


def _all_local(steps: Sequence[StepRecord]) -> bool:
    """Whether every model call of the run went to a model of this process (a local model that
    decodes concurrent requests in one batch)."""
    calls = [call for step in steps for call in step.model_calls]
    return bool(calls) and all(call.params.get("counterfact_model") for call in calls)
