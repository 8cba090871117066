"""Deciding a debug session's hypotheses by replaying their fixes.

Apart from the debugger so that how replays are spent on fixes (a shared control for a greedy
run, batches of fixes of different hypotheses, the budget) is one job; the debugger keeps the
session's spend and records each verdict on its fix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import zip_longest
from typing import Any

from counterfact._errors import CounterfactError
from counterfact.executors import Executor
from counterfact.interventions._fixes import Fix
from counterfact.interventions._records import DebugLog, HypothesisRecord
from counterfact.interventions._replay import Replayer, ReplayResult
from counterfact.interventions._session import final_answer
from counterfact.interventions._specs import Intervention
from counterfact.interventions._units import replay_unit
from counterfact.interventions._verify import greedy_from, verify
from counterfact.store import RunRecord, discard_run, output_text

SHARED_CONTROL = "shared-control"  # the stage (in `completed`) and the role label of that replay
PLACED_BY_REPLAY = "placed_by_replay"  # a hypothesis's evidence: replays, not the log, placed its step
PROBE_RUNS = "probe_runs"  # and the replays that placed it, by the step each started from


def placed_by_replay(h: HypothesisRecord) -> bool:
    return bool(h.evidence.get(PLACED_BY_REPLAY))


def fixes_of(h: HypothesisRecord) -> list[Fix]:
    return [Fix.model_validate(f) for f in h.evidence.get("fixes", [])]


class ReplayCount:
    """The session's replays finished but not yet charged: the progress counts them on top of
    the spend until they are charged."""

    def __init__(self, tell: Callable[[int], None]) -> None:
        self.done = 0
        self._tell = tell  # the count so far, as each replay ends
        self._lock = threading.Lock()

    def __call__(self, *_: Any) -> None:
        with self._lock:
            self.done += 1
            self._tell(self.done)

    def charged(self) -> None:
        """The replays counted so far are in the spend now."""
        self.done = 0


class SharedControl:
    """The shared control of a greedy run: one unedited replay from `step`. If it fails and
    reproduces every step's output, it is the control arm of every fix at `step` or later (a
    replay from a later step would repeat it exactly). It may still be running while the first
    fixes are replayed beside it; calling it waits for it and returns the control arm, or None
    when it does not stand. A control that succeeds stands too: it shows that the failure does
    not reproduce, which no verdict can then overcome."""

    def __init__(self, replayer: Replayer, step: int, made: Future[ReplayResult]) -> None:
        self.step = step
        self._replayer = replayer
        self._made = made
        self._lock = threading.Lock()
        self._arm: list[ReplayResult] | None = None
        self._judged = False

    def result(self) -> ReplayResult:
        return self._made.result()

    def __call__(self) -> list[ReplayResult] | None:
        with self._lock:
            if not self._judged:
                result = self._made.result()
                mine = [(s.node, output_text(s.output)) for s in self._replayer.steps]
                theirs = [(s.node, output_text(s.output)) for s in self._replayer.store.steps(result.run_id)]
                self._arm = [result] if result.success or mine == theirs else None
                self._judged = True
            return self._arm


class FixVerifier:
    """Decides the open hypotheses of one session: each by its fixes, replayed against one
    control where the run allows it, as far as the budget goes."""

    def __init__(
        self,
        replayer: Replayer,
        log: DebugLog,
        session_id: str,
        *,
        pairs: int,  # most pairs of a sequential verification (sampled runs)
        parallel: int,  # fixes verified at once
        count: ReplayCount,
        afford: Callable[[int], bool],
        charge: Callable[[list[str], str], None],  # replays of a stage, charged once with it
        record: Callable[[str, int, Fix, list[str]], None],  # a fix's verdict and its replays
        say: Callable[[str], None],
        until_repaired: bool = False,  # stop once one fix is validated: the others cannot repair it more
        repeatable_tools: Sequence[str] = (),  # tools the placing replays ran again
        fill_batches: bool = False,  # a batch's free places go to further fixes of the same hypotheses
    ) -> None:
        self.replayer = replayer
        self.repeatable_tools = list(repeatable_tools)
        self.until_repaired = until_repaired
        self.fill_batches = fill_batches
        self.store = replayer.store
        self.log = log
        self.session_id = session_id
        self.pairs = pairs
        self.parallel = parallel
        self.count = count
        self.afford = afford
        self.charge = charge
        self.record = record
        self.say = say
        self._control: SharedControl | None = None  # the shared control of a greedy run
        self._charged_control = True  # whether the shared control's replay is in the spend
        self._batches = 0  # batches verified so far

    def hypotheses(self) -> list[HypothesisRecord]:
        return self.log.hypotheses(self.session_id)

    def adopt(self) -> int:
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
        shared = {r.id for r in replays if r.labels.get("debug_role") == SHARED_CONTROL}
        recorded = {f.verdict_id for h in self.hypotheses() for f in fixes_of(h) if f.verdict_id}
        adopted = 0
        for verdict in sorted(stored.values(), key=lambda v: (v.created_at, v.id)):
            if verdict.id in recorded:
                continue
            spec = self.store.get_intervention(verdict.intervention_id).spec
            found = next(
                ((h, i, f) for h in self.hypotheses() if h.status == "proposed"
                 for i, f in enumerate(fixes_of(h))
                 if f.verdict is None and Intervention.model_validate(f.intervention).dump() == spec),
                None,
            )
            if found is None:
                continue
            h, position, fix = found
            charged = [*verdict.stats.get("treatment_runs", []),
                       *(r for r in verdict.stats.get("control_runs", []) if r not in shared)]
            fix = fix.model_copy(update={"verdict": verdict.verdict, "verdict_id": verdict.id, "reason": verdict.reason})
            self.record(h.id, position, fix, charged)
            adopted += 1
        return adopted

    def verify_all(self, executor: Executor) -> None:
        """Each hypothesis's next fix first, then the rest of each in order; a hypothesis is
        settled by its first validated fix. Hypotheses whose step replays placed go first,
        against the replays that placed them (no control is replayed for them); the others
        then against one shared control. Up to `parallel` fixes are verified at once, every
        hypothesis's next fix before any second one, and by default never two of one hypothesis,
        so no replay goes to a fix that an earlier one made moot; with `parallel=1` hypotheses
        take the budget in order. With `fill_batches`, a batch's free places go to further
        fixes of the same hypotheses: a session of one hypothesis then waits for a batch rather
        than a replay per fix, and pays a replay for each sibling a validated fix made moot."""
        pending = sorted((h for h in self.hypotheses() if h.status == "proposed"), key=lambda h: not placed_by_replay(h))
        if not pending:
            return
        self._settle([h for h in pending if self._placed_control(h) is not None], executor)
        rest = [h for h in self.hypotheses() if h.status == "proposed" and self._next_fix(h) is not None]
        if rest and not self._repaired():
            rest.sort(key=lambda h: not placed_by_replay(h))
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared-control") as background:
                self._shared_control(rest, executor, background)
                self._settle(rest, executor)
                self._control_settled()
        repaired = self._repaired()
        for h in self.hypotheses():
            if h.status == "proposed" and repaired:
                self._close(h, "undecided", "not tried: another hypothesis's fix already repaired the run")
            elif h.status == "proposed":
                self._conclude(h)

    def _settle(self, hypotheses: list[HypothesisRecord], executor: Executor) -> None:
        """Verify these hypotheses' fixes: each one's next fix first, then the rest in order,
        until the budget ends (or a fix repairs the run, when asked to stop there)."""
        ids = {h.id for h in hypotheses}
        first_pass = [(h.id, position) for h in hypotheses if (position := self._next_fix(h)) is not None]
        while not self._repaired() and (first_pass := self._still_open(first_pass)) and (
            batch := self._affordable(self._and_siblings(first_pass, ids))
        ):
            first_pass = [c for c in first_pass if c not in batch]
            self._verify_batch(batch, executor)
        while not self._repaired() and (
            batch := self._affordable(self._and_siblings([c for c in self._next_fixes() if c[0] in ids], ids))
        ):
            self._verify_batch(batch, executor)

    def _still_open(self, candidates: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The candidates that are still their hypothesis's next fix (a control that succeeded
        closes hypotheses)."""
        open_now = set(self._next_fixes())
        return [c for c in candidates if c in open_now]

    def _and_siblings(self, candidates: list[tuple[str, int]], ids: set[str]) -> list[tuple[str, int]]:
        """`candidates`, then (with `fill_batches`) the other untried fixes of the open
        hypotheses in `ids`, round robin: each one's second fix, then each one's third."""
        if not self.fill_batches:
            return candidates
        untried = [[(h.id, i) for i, f in enumerate(fixes_of(h)) if f.verdict is None and (h.id, i) not in candidates]
                    for h in self.hypotheses() if h.status == "proposed" and h.id in ids]
        return [*candidates, *(c for tier in zip_longest(*untried) for c in tier if c is not None)]

    def _repaired(self) -> bool:
        """Whether to stop: asked to stop at the first repair, and a fix has repaired the run."""
        return self.until_repaired and any(f.verdict == "validated" for h in self.hypotheses() for f in fixes_of(h))

    def _shared_control(self, hypotheses: list[HypothesisRecord], executor: Executor,
                        background: ThreadPoolExecutor) -> None:
        """For a greedy run: one unedited replay from the earliest step of the hypotheses that
        need it (see `SharedControl`). It runs beside the first batch of fixes when the budget
        pays for that batch even if it does not stand (each fix then replays its own control),
        unless the session stops at the first repair; otherwise it runs first."""
        steps = [h.step for h in hypotheses if h.step is not None and self._placed_control(h) is None]
        if not steps or (self._control is not None and self._control.step <= min(steps)):
            return
        step = min(steps)
        if not greedy_from(self.replayer, step):
            return
        labels = {"debug_session": self.session_id, "debug_role": SHARED_CONTROL}
        made = sorted((r for r in self.store.list_runs(labels=labels, limit=None)
                       if r.status in ("succeeded", "failed") and (r.fork_step or 0) <= step),
                      key=lambda r: r.fork_step or 0)
        if made:  # a resumed session: the control made before the interruption
            run = made[0]
            done: Future[ReplayResult] = Future()
            done.set_result(self._as_control(run))
            self._control, self._charged_control = SharedControl(self.replayer, run.fork_step or 0, done), False
            self._control_settled()  # charged, unless it was before the interruption
            return
        if not self.afford(1):
            return
        unit = replay_unit(self.replayer, self.replayer.compile(None, step), arm="control", seed=0, labels=labels)
        self.say(f"control: replaying the run unedited from step {step}")
        self._control = SharedControl(self.replayer, step, background.submit(lambda: executor.map([unit], self.count)[0]))
        self._charged_control = False
        candidates = [(h.id, p) for h in hypotheses if (p := self._next_fix(h)) is not None]
        if self.until_repaired or len(self._affordable(candidates, worst=True)) < len(self._affordable(candidates)):
            # it goes first: a session that stops at the first repair spares replays rather than
            # time (a control that succeeds makes the fixes beside it moot), or the budget is too
            # tight to replay fixes beside it
            self._control_settled()

    def _control_settled(self) -> None:
        """Wait for the shared control, charge it once, and if the run does not fail again
        without an edit, close the hypotheses it stands for (only a step placed by replays has
        a control of its own that fails, as after a transient fault)."""
        if self._control is None or self._charged_control:
            return
        result = self._control.result()
        self._charged_control = True
        self.charge([result.run_id], f"{SHARED_CONTROL} from step {self._control.step}")
        if result.success:
            for h in self.hypotheses():
                if h.status == "proposed" and not placed_by_replay(h) and (h.step or 0) >= self._control.step:
                    self._close(h, "undecided", "the failure does not reproduce: the unedited replay succeeds")

    def _control_for(self, h: HypothesisRecord) -> SharedControl | None:
        """The shared control that stands for `h`'s fixes' control arm, if there is one (or may
        yet: one still running)."""
        if self._control is None or h.step is None or h.step < self._control.step:
            return None
        if self._charged_control and self._control() is None:  # settled, and it differs from the run
            return None
        return self._control

    def _next_fix(self, h: HypothesisRecord) -> int | None:
        return next((i for i, f in enumerate(fixes_of(h)) if f.verdict is None), None)

    def _next_fixes(self) -> list[tuple[str, int]]:
        """The next untried fix of each hypothesis still open, in order."""
        return [
            (h.id, position)
            for h in self.hypotheses() if h.status == "proposed"
            if (position := self._next_fix(h)) is not None
        ]

    def _replays_per_fix(self, hypothesis_id: str, worst: bool) -> int:
        """Replays one fix of the hypothesis takes; `worst`: if a shared control still running
        does not stand (the fix then replays its own)."""
        h = next(h for h in self.hypotheses() if h.id == hypothesis_id)
        if self._placed_control(h) is not None:
            return 1
        if self._control_for(h) is not None and (self._charged_control or not worst):
            return 1
        return 2 if greedy_from(self.replayer, h.step or 0) else 2 * self.pairs

    def _affordable(self, candidates: list[tuple[str, int]], worst: bool = False) -> list[tuple[str, int]]:
        """The first candidates (at most `parallel`) that the budget still pays for, beside a
        shared control not charged yet. When the session stops at the first repair, batches
        start at one fix and double: the first fix, best placed, most often repairs the run, and
        the fixes beside it would be replays for nothing."""
        width = min(self.parallel, 2 ** self._batches) if self.until_repaired else self.parallel
        batch: list[tuple[str, int]] = []
        need = 0 if self._charged_control else 1
        for candidate in candidates[:width]:
            need += self._replays_per_fix(candidate[0], worst)
            if not self.afford(need):
                break
            batch.append(candidate)
        return batch

    def _verify_batch(self, batch: list[tuple[str, int]], executor: Executor) -> None:
        """Verify the batch's fixes at once; record them in order."""
        stored = {h.id: h for h in self.hypotheses()}
        jobs = [(stored[h_id], position, fixes_of(stored[h_id])[position]) for h_id, position in batch]
        self._batches += 1
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(lambda job: self._verify_fix(*job, executor), jobs))
        self._control_settled()
        self.count.charged()
        for (h, position, _), (fix, charged) in zip(jobs, outcomes, strict=True):
            self.record(h.id, position, fix, charged)

    def _verify_fix(self, h: HypothesisRecord, position: int, fix: Fix, executor: Executor) -> tuple[Fix, list[str]]:
        """One fix's verification and the replays it made (run in a batch thread; the store
        is written by `record`)."""
        try:
            plan = self.replayer.compile(Intervention.model_validate(fix.intervention), h.step)
        except CounterfactError as exc:
            return fix.model_copy(update={"verdict": "inconclusive", "reason": f"the edit does not apply: {exc}"}), []
        self.say(f"verifying step {h.step}: {fix.label} ({fix.strategy})")
        placed = self._placed_control(h)
        shared = self._control_for(h)
        report = verify(
            self.replayer, plan, pairs=self.pairs, control=placed or shared, sequential=True,
            on_progress=lambda *_: self.count(), labels={"debug_session": self.session_id},
            executor=executor, live_tools=self.repeatable_tools if placed else False,
        )
        made_before = {r.run_id for r in placed or []} | ({shared.result().run_id} if shared and not placed else set())
        charged = [r.run_id for r in [*report.treatment, *report.control] if r.run_id not in made_before]
        return fix.model_copy(update={"verdict": report.verdict, "verdict_id": report.id, "reason": report.reason}), charged

    def _placed_control(self, h: HypothesisRecord) -> list[ReplayResult] | None:
        """The control of a step that replays placed (a greedy run): the step kept as recorded
        and what follows run again, which the placing replays already did (the replay from the
        step after it, which failed: a transient fault does not strike twice, so a replay from
        the step itself is no control); for the last step, the run as recorded. A fix is then
        replayed as the placing replays were, with the same tools run again."""
        steps = self.replayer.steps
        if not placed_by_replay(h) or h.step is None or not greedy_from(self.replayer, h.step):
            return None
        if h.step == len(steps) - 1:
            run = self.replayer.parent
        else:
            probe = h.evidence.get(PROBE_RUNS, {}).get(str(h.step + 1))
            run = self.store.get_run(probe) if probe else None
            if run is None or run.status != "failed":
                return None
        return [self._as_control(run)]

    def _as_control(self, run: RunRecord) -> ReplayResult:
        """A stored run as the result of a control replay."""
        return ReplayResult(run_id=run.id, arm="control", seed=0, status=run.status,
                            success=bool(run.outcome and run.outcome.success),
                            score=run.outcome.score if run.outcome else 0.0, answer=final_answer(self.store.steps(run.id)))

    def _conclude(self, h: HypothesisRecord) -> None:
        """A hypothesis none of whose fixes validated: refuted if all were tried, else why not."""
        fixes = fixes_of(h)
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
