"""A process killed (SIGKILL) in the middle of a replay, of a verification and of a debug
session, on the local executor: afterwards every run's hash chain verifies, no verdict is stored
twice, and resuming finishes the work with nothing doubled.

The agents are the scripted trio behind a delayed OpenAI-compatible server in this process
(`tests/cluster/delayed.py`, plain FastAPI), so the `counterfact` commands run as subprocesses
reach them as `openai:killbrain` and each model call takes long enough to be killed in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from counterfact.agents import ChatMessage
from counterfact.graphs import Suite, load_suite, run_suite
from counterfact.interventions import Budget, Debugger, DebugLog, DebugReport
from counterfact.store import RunRecord, TraceStore, verify_run
from counterfact.store.schema import Checkpoint, Intervention

from ..cluster.delayed import DelayedModel, delayed_server
from ..conftest import _truncate
from ..graphs.scripted import trio_spec
from .test_debug import inventing
from .test_replay import SUITE

ROOT = Path(__file__).resolve().parents[2]
COUNTERFACT = str(Path(sys.executable).parent / "counterfact")
MODEL = "openai:killbrain"  # a name of this module's own: a process resolves a spec once
NODES = ["researcher", "solver", "reporter"]


def brain(messages: list[ChatMessage]) -> str:
    """On "sum" the solver writes 1740 without calling the calculator and never heeds a note
    (grounded suspects the solver, step 1); asked for a hypothesis, the model names the
    reporter (step 2). Two hypotheses on different steps, every fix refuted."""
    if "Find the step where the run went wrong" in messages[-1].content:
        return json.dumps({"step": 2, "reason": "the reporter repeated a wrong sum"})
    return inventing(heeds=False)(messages)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, DelayedModel]]:
    with delayed_server(brain, 0.05, name="killbrain") as (url, model):
        before = os.environ.get("OPENAI_BASE_URL")
        os.environ["OPENAI_BASE_URL"] = url
        try:
            yield url, model
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)
            if before is not None:
                os.environ["OPENAI_BASE_URL"] = before


@pytest.fixture
def model(server: tuple[str, DelayedModel]) -> DelayedModel:
    server[1].use(brain)
    server[1].delay = 0.05
    return server[1]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store: a SQLite file, or this session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        yield str(tmp_path / "trace.db")
        return
    url = request.getfixturevalue("pg_url")
    store = TraceStore.open(url)
    _truncate(store)
    store.close()
    yield url


@pytest.fixture
def store(db: str) -> Iterator[TraceStore]:
    s = TraceStore.open(db)
    yield s
    s.close()


def _failed_run(store: TraceStore) -> str:
    [summary] = run_suite(trio_spec(), Suite(name="tiny", tasks=[load_suite(SUITE).task("sum")]), store, model=MODEL)
    assert not summary.success and summary.answer == "1740"
    return summary.run_id


def _cli(*args: str, db: str) -> list[str]:
    return [COUNTERFACT, *args, "--db", db]


def _start(args: list[str], server: tuple[str, DelayedModel]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, "OPENAI_BASE_URL": server[0]},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _run(args: list[str], server: tuple[str, DelayedModel]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, cwd=ROOT, env={**os.environ, "OPENAI_BASE_URL": server[0]},
                          capture_output=True, text=True, timeout=300)


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 90) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (it must still be running then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the process ended (rc {proc.returncode}) before it could be killed:\n{output}")
        assert time.monotonic() < deadline, "the process never reached the point to kill it at"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _children(store: TraceStore, parent: str) -> list[RunRecord]:
    return store.list_runs(parent=parent, limit=None)


def _past_the_fork(store: TraceStore, run: RunRecord) -> bool:
    """Whether a replay is still running and wrote a step of its own (past its copied ones)."""
    return run.status == "running" and len(store.steps(run.id, payloads=False)) > (run.fork_step or 0)


def _assert_sound(store: TraceStore) -> None:
    """Every run's chain verifies, and its steps are 0..n-1, none doubled, each with the
    checkpoint it ran from (and, once the run went on past it, the one it wrote)."""
    runs = store.list_runs(limit=None)
    with store.engine.connect() as conn:
        checkpoints = set(conn.execute(select(Checkpoint.thread_id, Checkpoint.checkpoint_id)).tuples())
    for run in runs:
        report = verify_run(store, run.id)
        assert report.ok, (run.id, run.status, report.problem)
        steps = store.steps(run.id, payloads=False)
        assert [s.index for s in steps] == list(range(len(steps))), run.id
        assert len({(s.node, s.invocation) for s in steps}) == len(steps), run.id
        for step in steps:
            owner = run  # a step copied into a fork keeps its checkpoints in the parent's thread
            while owner.fork_step is not None and step.index < owner.fork_step:
                owner = store.get_run(owner.parent_run_id or "")
            assert (owner.id, step.checkpoint_before) in checkpoints, (run.id, step.index)
        finished = run.status in ("succeeded", "failed")
        assert all(s.checkpoint_after for s in (steps if finished else steps[:-1])), run.id


def _assert_complete(store: TraceStore, run_id: str) -> None:
    """A finished replay of the trio: the parent's three steps once each, scored."""
    run = store.get_run(run_id)
    assert run.status in ("succeeded", "failed") and run.outcome is not None, (run_id, run.status, run.error)
    assert [s.node for s in store.steps(run_id, payloads=False)] == NODES, run_id


# -- a single replay ------------------------------------------------------------------------------


def test_a_replay_killed_mid_run_is_finished_by_resume(
    store: TraceStore, db: str, server: tuple[str, DelayedModel], model: DelayedModel
) -> None:
    run_id = _failed_run(store)
    model.delay = 0.8  # from the solver on: two calls, about 1.6 s
    replay = _start(_cli("replay", run_id, "--at", "solver#0", "--format", "json", db=db), server)
    _kill_when(replay, lambda: any(_past_the_fork(store, c) for c in _children(store, run_id)))
    [child] = _children(store, run_id)
    before = store.steps(child.id, payloads=False)
    assert child.status == "running" and child.fork_step == 1 and len(before) == 2
    _assert_sound(store)  # a fork cut off past its copied steps verifies (it used not to)

    model.use(brain)  # count the calls of the resumed run alone
    model.delay = 0.05
    resumed = _run(_cli("resume", child.id, db=db), server)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [c.id for c in _children(store, run_id)] == [child.id]  # resumed in place, no new run
    _assert_complete(store, child.id)
    after = store.steps(child.id)
    assert [s.digest for s in after[: len(before)]] == [s.digest for s in before]  # kept as recorded
    # only the steps not stored before the kill ran again: nothing was done twice
    assert model.calls == sum(len(s.model_calls) for s in after[len(before):]) > 0
    again = store.get_run(child.id)
    assert (again.parent_run_id, again.fork_step, again.labels["arm"]) == (run_id, 1, "control")
    assert again.outcome and again.outcome.detail and "1740" in again.outcome.detail
    _assert_sound(store)


# -- a verification ----------------------------------------------------------------------------------
# A verification stores its verdict once, when all its replays are in; there is no resuming one
# half-way (a verdict rests on the replays of one verification, and a cut-off one might still
# be running elsewhere). Killed, it leaves no verdict; its finished replays are complete, its
# cut-off ones stay `running` and `counterfact resume` finishes them, edit and seed kept; running it again makes a
# whole new verification with one verdict that rests on its own replays alone.

PAIRS = 2


@pytest.mark.slow  # about 10 s on each backend
def test_a_verification_killed_mid_way_stores_no_verdict_and_runs_again_whole(
    store: TraceStore, db: str, server: tuple[str, DelayedModel], model: DelayedModel, tmp_path: Path
) -> None:
    run_id = _failed_run(store)
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps({"kind": "message", "text": "RESULT: 1500"}))
    verify = _cli("replay", run_id, "--at", "solver#0", "--edit", str(edit), "--pairs", str(PAIRS),
                  "--concurrency", "1", "--format", "json", db=db)
    model.delay = 0.5
    first = _start(verify, server)

    def one_done_one_running() -> bool:
        children = _children(store, run_id)
        return any(r.status != "running" for r in children) and any(_past_the_fork(store, r) for r in children)

    _kill_when(first, one_done_one_running)
    cut = _children(store, run_id)
    assert store.verdicts(run_id=run_id) == []  # no verdict from a verification cut off
    [cut_verification] = {r.labels["verification_id"] for r in cut}
    running = [r for r in cut if r.status == "running"]
    assert len(running) == 1 and 2 <= len(cut) < 2 * PAIRS
    for r in cut:
        if r.status != "running":
            _assert_complete(store, r.id)
    _assert_sound(store)

    # the cut-off replay, finished where it stopped: complete, the edit kept (it was written
    # before the kill), nothing run twice
    model.use(brain)  # count the calls of the resumed replay alone
    model.delay = 0.05
    [late] = running
    before = store.steps(late.id, payloads=False)
    resumed = _run(_cli("resume", "--interrupted", db=db), server)  # cut-off replays are among them
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed replay {late.id[:12]} of run {run_id[:12]}" in resumed.stdout
    assert {r.id for r in _children(store, run_id)} == {r.id for r in cut}  # resumed in place
    _assert_complete(store, late.id)
    after = store.steps(late.id)
    assert model.calls == sum(len(s.model_calls) for s in after[len(before):]) > 0
    finished = store.get_run(late.id)
    treated = late.labels["arm"] == "treatment"
    assert finished.status == ("succeeded" if treated else "failed") and finished.intervention_id == late.intervention_id

    # the verification again, whole: one verdict, on exactly its own PAIRS replays per arm
    again = _run(verify, server)
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    [verdict] = store.verdicts(run_id=run_id)
    assert (verdict.id, verdict.verdict, report["verdict"]) == (report["id"], "validated", "validated")
    treatment, control = verdict.stats["treatment_runs"], verdict.stats["control_runs"]
    assert len(set(treatment)) == len(treatment) == PAIRS and len(set(control)) == len(control) == PAIRS
    mine = [r for r in _children(store, run_id) if r.labels["verification_id"] == verdict.id]
    assert sorted(r.id for r in mine) == sorted(treatment + control)
    assert Counter(r.labels["arm"] for r in mine) == {"treatment": PAIRS, "control": PAIRS}
    assert {r.intervention_id for r in mine if r.labels["arm"] == "treatment"} == {verdict.intervention_id}
    for r in mine:
        _assert_complete(store, r.id)
    # the cut-off verification's replays are as they were: none joined the new one, none doubled
    assert {r.id for r in _children(store, run_id)} - {r.id for r in mine} == {r.id for r in cut}
    assert cut_verification != verdict.id
    with store.engine.connect() as conn:  # the cut-off one's intervention, and this one's
        interventions = conn.execute(select(Intervention.id).where(Intervention.run_id == run_id)).scalars().all()
    assert len(interventions) == 2 and verdict.intervention_id in interventions
    _assert_sound(store)


# -- a debug session ---------------------------------------------------------------------------------

DEBUG = ["--strategy", "grounded,llm", "--hypothesis-model", MODEL, "--samples", "1", "--parallel", "2"]


def _session_runs(store: TraceStore, session_id: str) -> list[RunRecord]:
    return store.list_runs(labels={"debug_session": session_id}, limit=None)


@pytest.mark.slow  # about 10 s on each backend
def test_a_debug_session_killed_between_verdicts_is_finished_by_resume(
    store: TraceStore, db: str, server: tuple[str, DelayedModel], model: DelayedModel
) -> None:
    """Two hypotheses (the solver's, the reporter's), their first fixes verified at once: the
    reporter's replay is the shorter, so its verdict is stored while the solver's replay still
    runs, and the kill lands there, before the session recorded the batch."""
    run_id = _failed_run(store)
    model.delay = 0.5
    debug = _start(_cli("debug", run_id, *DEBUG, db=db), server)

    def verdict_and_a_replay_running() -> bool:
        sessions = DebugLog(store).sessions(run_id)
        return bool(sessions and store.verdicts(run_id=run_id)
                    and any(_past_the_fork(store, r) for r in _session_runs(store, sessions[0].id)))

    _kill_when(debug, verdict_and_a_replay_running)
    [session] = DebugLog(store).sessions(run_id)
    assert session.status == "running"
    _assert_sound(store)

    model.delay = 0.05
    resumed = _run(_cli("debug", run_id, *DEBUG, "--resume", "--format", "json", db=db), server)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = json.loads(resumed.stdout)
    [again] = DebugLog(store).sessions(run_id)
    assert (again.id, again.status, report["status"]) == (session.id, "done", "done")
    hypotheses = [h for h in report["hypotheses"] if h["step"] is not None]
    assert sorted(h["step"] for h in hypotheses) == [1, 2]
    fixes = [f for h in hypotheses for f in h["fixes"]]
    assert len(fixes) == 4 and [f["verdict"] for f in fixes] == ["refuted"] * 4
    assert all(h["status"] == "verified" and h["verdict"] == "refuted" for h in hypotheses)
    # one verdict per fix, and no other: none stored twice, none left behind by the kill
    verdicts = store.verdicts(run_id=run_id)
    assert sorted(v.id for v in verdicts) == sorted(f["verdict_id"] for f in fixes)
    with store.engine.connect() as conn:
        specs = {i: spec for i, spec in conn.execute(select(Intervention.id, Intervention.spec)).all()}
    per_fix = Counter(json.dumps(specs[v.intervention_id], sort_keys=True) for v in verdicts)
    assert sorted(per_fix.values()) == [1, 1, 1, 1]
    # what the session spent is what its stored replays are: one shared control and one
    # treatment per fix, every one finished (the cut-off replay discarded), none twice
    replays = _session_runs(store, session.id)
    assert report["spent"]["replays"] == len(replays) == 1 + len(fixes)
    assert Counter(r.labels.get("debug_role", r.labels["arm"]) for r in replays) == {"shared-control": 1, "treatment": 4}
    for r in replays:
        run = store.get_run(r.id)
        assert run.status in ("succeeded", "failed") and run.outcome is not None
        assert [s.node for s in store.steps(r.id, payloads=False)] == NODES
    referenced = {rid for v in verdicts for rid in v.stats["treatment_runs"] + v.stats["control_runs"]}
    assert referenced == {r.id for r in replays}
    assert {r.id for r in _children(store, run_id)} == referenced
    _assert_sound(store)


# -- the windows of a session, hit exactly (in process) ---------------------------------------------
# A verification stores its verdict when its replays are in, and the session records it on its
# fix a moment later: a death just before the verdict or just after it, made to happen here by
# an exception at that point, and the session resumed.


class Died(Exception):
    pass


def _die_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """The first call of `owner.name` dies before it does anything."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def dying(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Died
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)


def _cut_session(store: TraceStore, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> DebugReport:
    from .test_debug import _critic, _debugger, _record, ignores_the_note

    run_id, pool = _record(store, ignores_the_note)
    _die_once(monkeypatch, owner, name)
    with pytest.raises(Died):
        _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                  hypothesis_model=_critic(1)).run()
    monkeypatch.undo()
    [session] = DebugLog(store).sessions(run_id)
    assert session.status == "running"
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                       hypothesis_model=_critic(1)).run()
    assert report.session_id == session.id and report.status == "done"
    [h] = report.hypotheses
    assert [f.verdict for f in h.fixes] == ["refuted", "refuted"] and h.verdict == "refuted"
    replays = _session_runs(store, session.id)
    assert report.spent.replays == len(replays) == 3  # the shared control, one replay per fix
    assert all(r.status in ("succeeded", "failed") for r in replays)
    verdicts = store.verdicts(run_id=run_id)
    assert sorted(v.id for v in verdicts) == sorted(f.verdict_id for f in h.fixes if f.verdict_id)
    _assert_sound(store)
    return report


def test_a_session_that_died_before_storing_a_verdict_discards_that_verification(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first fix's replay finished, its verdict never stored: on resuming, that replay
    belongs to nothing (it used to stay, finished and uncharged, beside the one made again)."""
    store = TraceStore.open(sqlite_path)
    _cut_session(store, monkeypatch, store, "add_verdict")


def test_a_verdict_stored_before_the_session_recorded_it_is_kept_on_resume(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first fix's verdict stored, the session dead before it recorded it on the fix: on
    resuming the verdict is the fix's, not made a second time (it used to be)."""
    store = TraceStore.open(sqlite_path)
    stored: list[str] = []
    real = store.add_verdict

    def add_verdict(*args: Any, **kwargs: Any) -> Any:
        stored.append((verdict := real(*args, **kwargs)).id)
        return verdict

    monkeypatch.setattr(store, "add_verdict", add_verdict)  # undone with the death below
    report = _cut_session(store, monkeypatch, Debugger, "_record")
    assert len(stored) == 1 and report.hypotheses[0].fixes[0].verdict_id == stored[0]  # the one stored before


# -- a treatment replay cut off before its edited step ------------------------------------------------


def test_a_treatment_replay_cut_off_before_its_edit_keeps_the_edit_when_resumed(sqlite_path: str) -> None:
    from counterfact.agents import ScriptedChatModel
    from counterfact.graphs import ModelPool, WorkflowRunner, resume_run
    from counterfact.interventions import Replayer, parse_intervention
    from counterfact.store import StoreError, fork_run

    from ..graphs.scripted import arithmetic_brain

    store = TraceStore.open(sqlite_path)
    pool = ModelPool("test", {"test": ScriptedChatModel(arithmetic_brain, name="brain")})
    run_id = WorkflowRunner(trio_spec(), store, pool).run(load_suite(SUITE).task("wrong"), suite="tiny").run_id
    replayer = Replayer(store, run_id, pool=pool)
    plan = replayer.compile(parse_intervention({"kind": "message", "text": "RESULT: 999"}), "solver#0")
    intervention = store.add_intervention(run_id, plan.step, plan.intervention.dump()).id  # type: ignore[union-attr]
    parent = replayer.parent
    # what a treatment replay killed between its fork and its edited step leaves behind
    cut = RunRecord(id="cut", workflow=parent.workflow, workflow_hash=parent.workflow_hash, task_input=parent.task_input,
                    labels={**parent.labels, "arm": "treatment", "replay_seed": 0}, intervention_id=intervention)
    fork_run(store, run_id, plan.step, cut)
    with pytest.raises(StoreError, match="is a replay of run"):  # the workflow alone would lose the edit
        resume_run(store, "cut", pool=pool)
    result = replayer.resume("cut")
    assert (result.arm, result.applied, result.answer) == ("treatment", True, "999")
    assert store.get_run("cut").intervention_id == intervention
    assert store.get_run("cut").status == "succeeded"
    with pytest.raises(StoreError, match="already finished"):
        replayer.resume("cut")


def test_a_shared_control_made_before_its_charge_was_saved_is_charged_once_on_resume(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared control replayed, the session dead before its charge reached the store: on
    resuming the control is reused and charged once (it used to be reused for free)."""
    store = TraceStore.open(sqlite_path)
    died: list[bool] = []
    real = Debugger._save_spent

    def save_spent(self: Debugger, status: str = "running") -> None:
        if any(stage.startswith("shared-control") for stage in self.completed) and not died:  # the control's own save
            died.append(True)
            raise Died
        real(self, status)

    monkeypatch.setattr(Debugger, "_save_spent", save_spent)
    from .test_debug import _critic, _debugger, _record, ignores_the_note

    run_id, pool = _record(store, ignores_the_note)
    with pytest.raises(Died):
        _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                  hypothesis_model=_critic(1)).run()
    [session] = DebugLog(store).sessions(run_id)
    # the control and the first fix's treatment beside it: made, not charged
    assert session.spent.replays == 0 and len(_session_runs(store, session.id)) == 2
    monkeypatch.undo()
    report = _debugger(store, run_id, pool, strategies=["llm"], budget=Budget(replays=10), samples=1,
                       hypothesis_model=_critic(1)).run()
    replays = _session_runs(store, session.id)
    assert report.status == "done" and report.spent.replays == len(replays) == 3
    assert len([r for r in replays if r.labels.get("debug_role") == "shared-control"]) == 1


def test_probes_of_a_resampling_cut_off_are_made_again_not_doubled(
    sqlite_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resampling's probes of one step finished, the session dead before the stage ended: on
    resuming the stage runs again whole, and its earlier probes are gone rather than left beside
    the new ones with the same seeds, uncharged."""
    from .test_debug import Flaky, _debugger, _record

    store = TraceStore.open(sqlite_path)
    run_id, pool = _record(store, Flaky(), task="sum")
    real = Debugger.sample_from

    def dies_after_probing(self: Debugger, step: int, count: int) -> list[tuple[str, bool]]:
        real(self, step, count)
        raise Died

    monkeypatch.setattr(Debugger, "sample_from", dies_after_probing)
    with pytest.raises(Died):
        _debugger(store, run_id, pool, strategies=["resample"], budget=Budget(replays=30), pairs=2).run()
    monkeypatch.undo()
    [session] = DebugLog(store).sessions(run_id)
    assert len([r for r in _session_runs(store, session.id) if r.labels.get("arm") == "resample"]) > 0
    report = _debugger(store, run_id, pool, strategies=["resample"], budget=Budget(replays=30), pairs=2).run()
    replays = _session_runs(store, session.id)
    assert report.session_id == session.id and report.status == "done"
    assert report.spent.replays == len(replays)  # every replay in the store was charged, once
    seeds = Counter((r.fork_step, r.labels["replay_seed"]) for r in replays if r.labels.get("arm") == "resample")
    assert seeds and max(seeds.values()) == 1  # no probe made twice
    _assert_sound(store)
