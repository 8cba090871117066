"""The debugger: from a failed run to failure hypotheses, each decided by replay.

1. Segments: the run splits at its planning steps (orchestrator workflows), else it is one.
2. Hypotheses (a suspect step and why) come from the strategies asked for, plug-ins found by
   name (`strategies`): handoff, grounded, llm, resample, patch by default, each in a module
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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, ModelError, shared_model
from counterfact.executors import Executor, LocalExecutor
from counterfact.interventions._fixes import Fix, thinking_fixes
from counterfact.interventions._records import DebugLog, DebugSpend, HypothesisRecord
from counterfact.interventions._replay import Replayer, ReplayResult
from counterfact.interventions._session import (
    Budget,
    DebugReport,
    final_answer,
    session_report,
    split_segments,
)
from counterfact.interventions._specs import Intervention
from counterfact.interventions._units import ReplayUnit, lend, replay_unit
from counterfact.interventions._verify import Progress, greedy_from, verify
from counterfact.interventions.strategies import (
    FollowsUp,
    Outcome,
    Skipped,
    strategies_from,
    strategy_named,
)
from counterfact.store import discard_run, output_text

SHARED_CONTROL = "shared-control"  # the stage (in `completed`) and the role label of that replay


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
        parallel: int = 4,
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
        self.reference = reference
        self.max_hypotheses = max_hypotheses
        self.on_progress = on_progress
        self.say = on_event or (lambda message: None)
        self._hypothesis_model = hypothesis_model
        self.steps = replayer.steps
        self.session_id = ""
        self.spent = DebugSpend()
        self.completed: list[str] = []  # stages finished, so a resumed session skips them
        self._control: list[ReplayResult] | None = None  # the shared control of a greedy run
        self._reproduces = True
        if parallel < 1:
            raise CounterfactError(f"parallel must be at least 1, got {parallel}")
        # Fixes verified at once. A setting of the session, not of the executor, so that the
        # same session on any executor makes the same replays and reaches the same report.
        self.parallel = parallel
        self.executor = executor
        self._replays_done = 0
        self._progress_lock = threading.Lock()

    # -- session bookkeeping -----------------------------------------------------------------

    def open_session(self) -> str:
        """Resume the run's unfinished session with the same strategies, or start one."""
        run_id = self.replayer.parent.id
        session = self.log.unfinished_session(run_id, list(self.strategies))
        if session is not None:
            self.session_id, self.spent, self.completed = session.id, session.spent, list(session.completed)
            # replays cut off with the session belong to no verdict: the verification runs again
            cut_off = self.store.list_runs(status="running", labels={"debug_session": session.id}, limit=None)
            for run in cut_off:
                discard_run(self.store, run.id)
            adopted = self._adopt_verdicts()
            self.say(f"resuming debug session {self.session_id[:12]}"
                     + (f" ({len(cut_off)} unfinished replays discarded)" if cut_off else "")
                     + (f" ({adopted} verdicts stored before the interruption kept)" if adopted else ""))
            return self.session_id
        settings = {"budget": self.budget.model_dump(), "pairs": self.pairs,
                    "samples": self.samples, "temperature": self.temperature}
        self.session_id = self.log.create_session(run_id, list(self.strategies), settings).id
        return self.session_id

    def _adopt_verdicts(self) -> int:
        """On resuming: what verifications the interruption cut off left behind. A verdict is
        stored when its verification ends, and recorded on its fix (and its replays charged)
        only when the session records the batch it belongs to; a verdict stored in between is
        recorded now rather than made again, and the finished replays of a verification that
        stored no verdict are discarded (they count for nothing). Returns the verdicts kept."""
        replays = self.store.list_runs(labels={"debug_session": self.session_id}, limit=None)
        verifications = {r.labels["verification_id"] for r in replays if r.labels.get("verification_id")}
        stored = {v.id: v for v in self.store.verdicts(run_id=self.replayer.parent.id) if v.id in verifications}
        for run in replays:
            if run.labels.get("verification_id") and run.labels["verification_id"] not in stored:
                discard_run(self.store, run.id)
            elif run.labels.get("arm") == "resample" and "resample" not in self.completed:
                discard_run(self.store, run.id)  # probes of a resampling cut off: it runs again whole
        shared = {r.id for r in replays if r.labels.get("debug_role") == SHARED_CONTROL}
        recorded = {f.verdict_id for h in self.hypotheses() for f in self._fixes_of(h) if f.verdict_id}
        adopted = 0
        for verdict in sorted(stored.values(), key=lambda v: (v.created_at, v.id)):
            if verdict.id in recorded:
                continue
            spec = self.store.get_intervention(verdict.intervention_id).spec
            found = next(
                ((h, i, f) for h in self.hypotheses() if h.status == "proposed"
                 for i, f in enumerate(self._fixes_of(h))
                 if f.verdict is None and Intervention.model_validate(f.intervention).dump() == spec),
                None,
            )
            if found is None:
                continue
            h, position, fix = found
            charged = [*verdict.stats.get("treatment_runs", []),
                       *(r for r in verdict.stats.get("control_runs", []) if r not in shared)]
            fix = fix.model_copy(update={"verdict": verdict.verdict, "verdict_id": verdict.id, "reason": verdict.reason})
            self._record(h.id, position, fix, charged)
            adopted += 1
        return adopted

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
                merged["fixes"] = [*existing.evidence.get("fixes", []), *(f.model_dump() for f in added)]
                merged["proposed_by"] = [*existing.evidence.get("proposed_by", [existing.strategy]), strategy]
                merged.setdefault("reasons", {})[strategy] = reason
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

    # -- the session ---------------------------------------------------------------------------

    def run(self) -> DebugReport:
        started = time.perf_counter()
        self.open_session()
        own = self.executor is None
        if own:
            self.executor = LocalExecutor(self.store, concurrency=8)
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
        return self.executor.map(units, self._count)

    def _count(self, *_: Any) -> None:
        with self._progress_lock:
            self._replays_done += 1
            if self.on_progress is not None:
                self.on_progress(self.spent.replays + self._replays_done, self.budget.replays)

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
                self._propose(outcome.label or strategy, outcome.step, outcome.reason, outcome.fixes,
                              reference=outcome.reference, evidence=outcome.evidence)

    def _shared_control(self) -> None:
        """For a greedy run: one full replay; if it reproduces every step's output it is the
        control arm of every fix (a replay from any later step would repeat it exactly)."""
        if self._control is not None or not greedy_from(self.replayer, 0):
            return
        labels = {"debug_session": self.session_id, "debug_role": SHARED_CONTROL}
        made = [r for r in self.store.list_runs(labels=labels, limit=None) if r.status in ("succeeded", "failed")]
        if made:  # a resumed session: the control made before the interruption
            run = made[0]
            if SHARED_CONTROL not in self.completed:  # cut off between its end and its charge
                self._charge([run.id])
                self.completed.append(SHARED_CONTROL)
                self._save_spent()
            result = ReplayResult(
                run_id=run.id, arm="control", seed=0, status=run.status,
                success=bool(run.outcome and run.outcome.success), score=run.outcome.score if run.outcome else 0.0,
                answer=final_answer(self.store.steps(run.id)),
            )
        elif self.afford(1):
            self.say("control: replaying the whole run unedited")
            [result] = self._replay([
                replay_unit(self.replayer, self.replayer.compile(None, 0), arm="control", seed=0, labels=labels)
            ])
            self._charge([result.run_id])
            self.completed.append(SHARED_CONTROL)
            self._save_spent()  # the charge and the stage in one update
        else:
            return
        if result.success:
            self._reproduces = False
            return
        mine = [(s.node, output_text(s.output)) for s in self.steps]
        theirs = [(s.node, output_text(s.output)) for s in self.store.steps(result.run_id)]
        if mine == theirs:
            self._control = [result]

    def _verify_all(self) -> None:
        """Each hypothesis's next fix first, then the rest of each in order; a hypothesis is
        settled by its first validated fix. Up to `parallel` fixes of different hypotheses are
        verified at once (never two of one hypothesis, so no replay goes to a fix that an
        earlier one made moot); with `parallel=1` hypotheses take the budget in order."""
        pending = [h for h in self.hypotheses() if h.status == "proposed"]
        if not pending:
            return
        self._shared_control()
        if not self._reproduces:
            for h in pending:
                self._close(h, "undecided", "the failure does not reproduce: the unedited replay succeeds")
            return
        first_pass = [(h.id, position) for h in pending if (position := self._next_fix(h)) is not None]
        while first_pass and (batch := self._affordable(first_pass)):
            first_pass = first_pass[len(batch):]
            self._verify_batch(batch)
        while batch := self._affordable(self._next_fixes()):
            self._verify_batch(batch)
        for h in self.hypotheses():
            if h.status == "proposed":
                self._conclude(h)

    @staticmethod
    def _fixes_of(h: HypothesisRecord) -> list[Fix]:
        return [Fix.model_validate(f) for f in h.evidence.get("fixes", [])]

    def _next_fix(self, h: HypothesisRecord) -> int | None:
        return next((i for i, f in enumerate(self._fixes_of(h)) if f.verdict is None), None)

    def _next_fixes(self) -> list[tuple[str, int]]:
        """The next untried fix of each hypothesis still open, in order."""
        return [
            (h.id, position)
            for h in self.hypotheses() if h.status == "proposed"
            if (position := self._next_fix(h)) is not None
        ]

    def _replays_per_fix(self) -> int:
        return 1 if self._control is not None else 2 if greedy_from(self.replayer, 0) else 2 * self.pairs

    def _affordable(self, candidates: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The first candidates (at most `parallel`) that the budget still pays for."""
        need = self._replays_per_fix()
        batch: list[tuple[str, int]] = []
        for candidate in candidates[: self.parallel]:
            if not self.afford(need * (len(batch) + 1)):
                break
            batch.append(candidate)
        return batch

    def _verify_batch(self, batch: list[tuple[str, int]]) -> None:
        """Verify the batch's fixes at once; record them in order."""
        stored = {h.id: h for h in self.hypotheses()}
        jobs = [(stored[h_id], position, self._fixes_of(stored[h_id])[position]) for h_id, position in batch]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(lambda job: self._verify_fix(*job), jobs))
        self._replays_done = 0
        for (h, position, _), (fix, charged) in zip(jobs, outcomes, strict=True):
            self._record(h.id, position, fix, charged)

    def _verify_fix(self, h: HypothesisRecord, position: int, fix: Fix) -> tuple[Fix, list[str]]:
        """One fix's verification and the replays it made (run in a batch thread; the store
        is written by `_record`)."""
        try:
            plan = self.replayer.compile(Intervention.model_validate(fix.intervention), h.step)
        except CounterfactError as exc:
            return fix.model_copy(update={"verdict": "inconclusive", "reason": f"the edit does not apply: {exc}"}), []
        self.say(f"verifying step {h.step}: {fix.label} ({fix.strategy})")
        report = verify(
            self.replayer, plan, pairs=self.pairs, control=self._control, sequential=True,
            on_progress=lambda *_: self._count(), labels={"debug_session": self.session_id},
            executor=self.executor,
        )
        charged = [r.run_id for r in report.treatment] + ([r.run_id for r in report.control] if self._control is None else [])
        return fix.model_copy(update={"verdict": report.verdict, "verdict_id": report.id, "reason": report.reason}), charged

    def _record(self, h_id: str, position: int, fix: Fix, charged: list[str]) -> None:
        h = next(x for x in self.hypotheses() if x.id == h_id)  # as stored now
        self._charge(charged)
        fixes = self._fixes_of(h)
        fixes[position] = fix
        self.log.update_hypothesis(h.id, evidence={**h.evidence, "fixes": [f.model_dump() for f in fixes]})
        self._save_spent()
        if fix.verdict == "validated" and h.status == "proposed":
            self.log.update_hypothesis(h.id, status="verified", verdict_id=fix.verdict_id,
                                         intervention=fix.intervention)

    def _conclude(self, h: HypothesisRecord) -> None:
        """A hypothesis none of whose fixes validated: refuted if all were tried, else why not."""
        fixes = [Fix.model_validate(f) for f in h.evidence.get("fixes", [])]
        tried = [f for f in fixes if f.verdict is not None]
        refuted = [f for f in tried if f.verdict == "refuted"]
        if len(tried) == len(fixes) and refuted:
            self._close(h, "verified", f"none of its {len(fixes)} fixes repaired the run", refuted[-1].verdict_id)
            return
        reasons = []
        if len(tried) < len(fixes):
            reasons.append(f"budget: {len(tried)} of {len(fixes)} fixes tried before the budget ran out")
        unapplied = [f for f in tried if f.verdict == "inconclusive"]
        if unapplied:
            reasons.append(f"{len(unapplied)} fixes undecided ({unapplied[0].reason})")
        self._close(h, "undecided", "; ".join(reasons) or "no fix was tried")

    def _close(self, h: HypothesisRecord, status: str, note: str, verdict_id: str | None = None) -> None:
        self.log.update_hypothesis(h.id, status=status, note=note, verdict_id=verdict_id)  # type: ignore[arg-type]

    # -- report ----------------------------------------------------------------------------------

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
        self._replays_done = 0
        return results

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


