"""Faults around the cluster: the driver of a debug session killed (`debug --resume` finishes
it on either executor), and PostgreSQL restarted under a suite run (`resume --interrupted`
finishes the runs it cut off, no step lost or doubled)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from counterfact.agents import ChatMessage
from counterfact.graphs import Suite, load_suite, run_suite
from counterfact.interventions import DebugLog
from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import Run, Step

from ..conftest import _truncate
from ..graphs.scripted import PIPELINE_YAML, trio_spec
from ..interventions.test_debug import ignores_the_note
from .delayed import DelayedModel

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
COUNTERFACT = str(Path(sys.executable).parent / "counterfact")
SUITE = load_suite("tests/graphs/suite.yaml")


def critic_and_agents(messages: list[ChatMessage]) -> str:
    """The agents never heed a note (every fix is refuted, so the session tries them all), and
    asked for a hypothesis the same model names the solver's step."""
    if "Find the step where the run went wrong" in messages[-1].content:
        return json.dumps({"step": 1, "reason": "the solver kept the looked-up value"})
    return ignores_the_note(messages)


BRAIN = critic_and_agents  # the delayed server's brain in this module (see conftest)


@pytest.fixture
def pg_store(pg_url: str, brain: DelayedModel) -> Iterator[TraceStore]:
    store = TraceStore.open(pg_url)
    _truncate(store)
    yield store
    store.close()


def _cli(*args: str, db: str) -> list[str]:
    return [COUNTERFACT, *args, "--db", db]


def _children(store: TraceStore, parent: str) -> list[Run]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(Run.id, Run.status, Run.labels).where(Run.parent_run_id == parent)).all())


def test_a_debug_session_whose_driver_is_killed_is_finished_by_resume(
    pg_store: TraceStore, pg_url: str, ray_address: str
) -> None:
    [failed] = run_suite(trio_spec(), Suite(name="tiny", tasks=[SUITE.task("wrong")]), pg_store, model="openai:brain")
    debug = ["debug", failed.run_id, "--strategy", "llm", "--hypothesis-model", "openai:brain", "--parallel", "1"]
    driver = subprocess.Popen(
        _cli(*debug, "--executor", "ray", "--address", ray_address, db=pg_url),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
    while len(_children(pg_store, failed.run_id)) < 3:  # the control and two fixes' replays
        assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
        assert time.monotonic() < deadline, "the session made no replays"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    [session] = DebugLog(pg_store).sessions(failed.run_id)
    assert session.status == "running"

    resumed = subprocess.run(_cli(*debug, "--resume", "--format", "json", db=pg_url), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    [again] = DebugLog(pg_store).sessions(failed.run_id)
    assert again.id == session.id and again.status == "done"
    [hypothesis] = [h for h in report["hypotheses"] if h["step"] is not None]
    fixes = hypothesis["fixes"]
    assert [f["verdict"] for f in fixes] == ["refuted"] * len(fixes) and len(fixes) >= 2
    assert len({f["verdict_id"] for f in fixes}) == len(fixes)  # one verdict per fix, none twice
    children = _children(pg_store, failed.run_id)
    assert all(c.status in ("succeeded", "failed") for c in children)  # cut-off replays discarded
    # what the session spent is what the verdicts it kept rest on: the shared control and one
    # treatment replay per fix (greedy run)
    assert report["spent"]["replays"] == 1 + len(fixes)
    assert all(verify_run(pg_store, c.id).ok for c in children)


def test_a_debug_session_resumed_with_nothing_to_resume_is_an_error(pg_store: TraceStore, pg_url: str) -> None:
    [failed] = run_suite(trio_spec(), Suite(name="tiny", tasks=[SUITE.task("wrong")]), pg_store, model="openai:brain")
    result = subprocess.run(_cli("debug", failed.run_id, "--resume", db=pg_url), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: run {failed.run_id[:12]} has no interrupted debug session")


def _restart_postgres() -> None:
    version = next(iter(os.listdir("/etc/postgresql")))
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "--", "-m", "fast"], check=True, timeout=120)


@pytest.mark.skipif(not Path("/etc/postgresql").is_dir() or os.geteuid() != 0, reason="restarting PostgreSQL needs root and pg_ctlcluster")
def test_postgres_restarted_under_a_suite_run_loses_and_doubles_no_step(
    pg_store: TraceStore, pg_url: str, tmp_path: Path, brain: DelayedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brain, "delay", 1.5)  # runs of about 8 s: the restart lands mid-run
    suite = tmp_path / "suite.jsonl"
    tasks = [t.model_copy(update={"id": f"{t.id}-{k}"}) for k in range(4) for t in SUITE.tasks]
    suite.write_text("\n".join(json.dumps(t.model_dump(mode="json")) for t in tasks) + "\n")
    spec = tmp_path / "trio.yaml"
    spec.write_text(json.dumps({**PIPELINE_YAML, "model": "openai:brain"}))
    run = subprocess.Popen(_cli("run", str(spec), "--suite", str(suite), "--concurrency", "8", db=pg_url),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while True:  # every run started and some steps written: the restart cuts them mid-way
        with pg_store.engine.connect() as conn:
            started = conn.execute(select(func.count()).select_from(Run)).scalar_one()
            steps = conn.execute(select(func.count()).select_from(Step)).scalar_one()
        if started == 8 and steps >= 4:
            break
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read() if run.stdout else ""
        time.sleep(0.05)
    _restart_postgres()
    output, _ = run.communicate(timeout=300)
    assert "Traceback" not in output
    said = " ".join(output.split())  # as printed, wrapped to the terminal's width
    assert "runs were cut off" in said and "counterfact resume --interrupted" in said
    pg_store.engine.dispose()
    resumed = subprocess.run(_cli("resume", "--interrupted", db=pg_url), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, (resumed.stderr, output, [(r.status, r.error) for r in pg_store.list_runs(limit=None)])
    runs = pg_store.list_runs(limit=None)
    assert len(runs) == 8 and {r.status for r in runs} <= {"succeeded", "failed"}
    brain.delay = 0.3  # the reference runs need not be slow
    expected = {t.id: [s.node for s in _steps_of_clean_run(pg_store, t)] for t in SUITE.tasks}
    for r in runs:
        steps = pg_store.steps(r.id, payloads=False)
        assert [s.index for s in steps] == list(range(len(steps)))
        assert [s.node for s in steps] == expected[r.labels["task_id"].rsplit("-", 1)[0]], r.id  # none lost, none doubled
        assert all(s.checkpoint_after for s in steps)
        assert verify_run(pg_store, r.id).ok


def _steps_of_clean_run(store: TraceStore, task) -> list:  # type: ignore[no-untyped-def]
    [clean] = run_suite(trio_spec(), Suite(name="clean", tasks=[task]), store, model="openai:brain")
    steps = store.steps(clean.run_id, payloads=False)
    from counterfact.store import discard_run

    discard_run(store, clean.run_id)
    return steps
