"""The CLI over the trace store: listing, showing, verifying, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from counterfact.cli import app
from counterfact.graphs import record
from counterfact.store import Outcome, TraceStore
from tests.graphs.sample_graphs import loop_graph, loop_input

runner = CliRunner()


def _db_with_runs(path: str) -> tuple[str, str]:
    store = TraceStore.open(path)
    rg = record(loop_graph(), store, workflow="loop")
    ok = rg.invoke(loop_input(2), labels={"split": "dev"}).run_id
    bad = rg.invoke(loop_input(1)).run_id
    rg.finish(bad, Outcome(success=False, score=0.0))
    store.close()
    return ok, bad


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "counterfact.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_runs_list_json_and_filters(sqlite_path: str) -> None:
    ok, bad = _db_with_runs(sqlite_path)
    result = runner.invoke(app, ["runs", "list", "--db", sqlite_path, "--format", "json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)
    assert {r["id"] for r in runs} == {ok, bad}
    assert all({"id", "status", "workflow", "outcome", "labels"} <= r.keys() for r in runs)
    failed = json.loads(
        runner.invoke(app, ["runs", "list", "--db", sqlite_path, "--status", "failed", "--format", "json"]).output
    )
    assert [r["id"] for r in failed] == [bad]
    dev = json.loads(
        runner.invoke(app, ["runs", "list", "--db", sqlite_path, "--label", "split=dev", "--format", "json"]).output
    )
    assert [r["id"] for r in dev] == [ok]


def test_runs_show_tree_and_json(sqlite_path: str) -> None:
    ok, _ = _db_with_runs(sqlite_path)
    text = runner.invoke(app, ["runs", "show", ok[:8], "--db", sqlite_path])
    assert text.exit_code == 0, text.output
    assert "worker" in text.output and "turn 0" in text.output and "test-model" in text.output
    data = json.loads(runner.invoke(app, ["runs", "show", ok, "--db", sqlite_path, "--format", "json"]).output)
    assert [s["node"] for s in data["steps"]] == ["worker", "critic", "worker"]


def test_verify_reports_ok_and_broken(sqlite_path: str) -> None:
    ok, bad = _db_with_runs(sqlite_path)
    result = runner.invoke(app, ["verify", ok, bad, "--db", sqlite_path])
    assert result.exit_code == 0 and result.output.count("ok") >= 2
    store = TraceStore.open(sqlite_path)
    with store.begin() as conn:
        conn.exec_driver_sql("UPDATE steps SET node = 'x' WHERE run_id = ? AND \"index\" = 1", (ok,))
    result = runner.invoke(app, ["verify", ok, "--db", sqlite_path])
    assert result.exit_code == 1 and "at step 1" in result.output


def test_user_errors_are_one_line_without_traceback(tmp_path: Path, sqlite_path: str) -> None:
    _db_with_runs(sqlite_path)
    cases = [
        (["runs", "show", "nosuchrun", "--db", sqlite_path], "no run with id 'nosuchrun'"),
        (["runs", "list", "--db", "postgresql://nobody@127.0.0.1:9/none"], "cannot open database"),
        (["runs", "list", "--db", sqlite_path, "--label", "oops"], "--label takes KEY=VALUE"),
        (["runs", "list", "--db", sqlite_path, "--status", "weird"], "Invalid value for '--status': 'weird' is not one of 'running'"),
        (["runs", "list", "--db", sqlite_path, "--since", "yesterday"], "Invalid value for '--since': 'yesterday' does not match"),
        (["runs", "list", "--db", sqlite_path, "--format", "xml"], "Invalid value for '--format'"),
        (["replay", "--db", sqlite_path], "Missing argument 'run'"),
        (["debug", "x", "--parallel", "0", "--db", sqlite_path], "Invalid value for '--parallel'"),
        (["run", "demo", "--task", "hi", "--executor", "spark", "--db", sqlite_path], "'spark' is not one of 'local', 'ray'"),
        (["run", str(tmp_path / "nope.yaml"), "--task", "hi", "--db", sqlite_path], "nope.yaml does not exist"),
        (["run", "demo", "--db", sqlite_path], "give exactly one of --task TEXT or --suite FILE"),
        (["run", "demo", "--suite", str(tmp_path / "s.yaml"), "--db", sqlite_path], "s.yaml does not exist"),
        (["resume", "nosuchrun", "--db", sqlite_path], "no run with id 'nosuchrun'"),
        (["attribute", "--method", "guess", "--db", sqlite_path], "'guess' is not one of 'evidence', 'all_at_once'"),
        (["attribute", "--score", "--db", sqlite_path], "no runs to attribute"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_demo_runs_the_builtin_suite_on_the_embedded_model(sqlite_path: str) -> None:
    result = cli("demo", "--limit", "3", "--db", sqlite_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "success:" in result.stdout and "/3 (" in result.stdout
    runs = TraceStore.open(sqlite_path).list_runs()
    assert len(runs) == 3 and all(r.status in ("succeeded", "failed") for r in runs)
    assert all(r.labels["model"] == "embedded" for r in runs)
    # The repair, on a task the embedded model cannot answer: the fact it needs is in no lookup,
    # so the run fails whatever the model is, and the edit supplies the answer at the reporter.
    unknowable = Path(sqlite_path).with_name("unknowable.yaml")
    unknowable.write_text(
        "name: unknowable\ntasks:\n- id: u01\n  question: What is the population of Varnholt?\n"
        "  answer: '9317'\n  checker: {kind: number}\n  facts: {population of Elstead: '690'}\n"
    )
    result = cli("run", "demo", "--suite", str(unknowable), "--model", "embedded", "--db", sqlite_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = TraceStore.open(sqlite_path).list_runs(labels={"suite": "unknowable"})
    assert run.status == "failed"
    edit = Path(sqlite_path).with_name("fix.yaml")
    edit.write_text(f"kind: message\ntext: 'FINAL ANSWER: {run.labels['task']['answer']}'\n")
    result = cli("replay", run.id, "--at", "reporter#0", "--edit", str(edit), "--pairs", "2",
                 "--format", "json", "--db", sqlite_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "validated" and verdict["applied"] is True
    assert verdict["comparison"]["treatment_successes"] == 2 and verdict["comparison"]["control_successes"] == 0


def test_replay_and_debug_errors_are_one_line(tmp_path: Path, sqlite_path: str) -> None:
    ok, bad = _db_with_runs(sqlite_path)  # recorded without `counterfact run`: no workflow spec
    edit = tmp_path / "edit.yaml"
    edit.write_text("kind: message\ntext: hello\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [\n")
    cases = [
        (["replay", bad, "--at", "0", "--edit", str(broken), "--db", sqlite_path], "broken.yaml: does not parse"),
        (["replay", bad, "--at", "0", "--edit", str(tmp_path / "none.yaml"), "--db", sqlite_path], "none.yaml does not exist"),
        (["replay", bad, "--at", "0", "--edit", str(edit), "--db", sqlite_path], "does not say where its graph comes from"),
        (["debug", bad, "--budget", "0", "--db", sqlite_path], "Invalid value for '--budget': Input should be greater than or equal to 1"),
        (["debug", bad, "--strategy", "magic", "--db", sqlite_path], "choose strategies among history, handoff, grounded, rerun, llm, resample, patch or all, not magic"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_replaying_a_user_graph_from_the_cli(tmp_path: Path, sqlite_path: str) -> None:
    from tests.interventions import apps

    store = TraceStore.open(sqlite_path)
    run_id = record(apps.pipeline, store).invoke({"messages": [("user", "go")]}).run_id
    store.close()
    edit = tmp_path / "edit.yaml"
    edit.write_text("kind: message\ntext: compute 2+3\n")
    result = cli("replay", run_id, "--at", "planner#0", "--edit", str(edit), "--pairs", "1",
                 "--expect", "5", "--answer", "answer", "--format", "json", "--db", sqlite_path)
    assert result.returncode == 0, result.stderr[-2000:]
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "validated" and verdict["deterministic"] is True
    # the check given on the command line was stored with the run (and scored it: 2+2 is not 5)
    stored = TraceStore.open(sqlite_path).get_run(run_id)
    assert stored.labels["check"] == {"expect": "5", "checker": "normalized", "answer": "answer"}
    assert stored.status == "failed"


def test_user_graph_errors_are_one_line_and_write_nothing(tmp_path: Path, sqlite_path: str) -> None:
    from tests.interventions import apps

    store = TraceStore.open(sqlite_path)
    run_id = record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    runs = len(store.list_runs(limit=None))
    store.close()
    patch = tmp_path / "patch.yaml"
    patch.write_text("kind: state\npatch: [{op: add, path: /ledger, value: 1}]\n")
    cases = [
        (["--graph", "tests.interventions.nowhere:graph"], "does not import"),
        (["--graph", "tests.interventions.apps:changed_pipeline"], "nodes removed: reviewer, worker"),
        (["--check", "tests.interventions.apps:missing"], "check 'tests.interventions.apps:missing' does not import"),
        (["--check", "tests.interventions.apps:answer_is_5", "--expect", "5"], "give --check or --expect, not both"),
        (["--edit", str(patch)], "no channel 'ledger'"),
    ]
    for extra, expected in cases:
        result = cli("replay", run_id, "--at", "worker#0", *extra, "--db", sqlite_path)
        assert result.returncode == 1, (extra, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(TraceStore.open(sqlite_path).list_runs(limit=None)) == runs
