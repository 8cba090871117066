"""The viewer in real headless Chromium: open a run, open a step, edit a message and replay it
from the page until the verdict and the new branches show, compare two runs, and check that
another site's page cannot start a replay and that trace text never runs as markup."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from counterfact.graphs import record
from counterfact.interventions import DebugLog
from counterfact.store import Outcome, RunRecord, StepRecord, utcnow

from ..interventions import apps
from .conftest import LiveViewer, free_port

pytestmark = pytest.mark.browser

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _failed_pipeline_run(viewer: LiveViewer) -> str:
    return record(apps.pipeline, viewer.store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id


def test_open_a_run_and_a_step(viewer: LiveViewer, page: Any) -> None:
    run_id = _failed_pipeline_run(viewer)
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(viewer.url) else elsewhere.append(request.url))
    page.goto(viewer.url + "/")
    page.click(f"a[href='/runs/{run_id}']")
    page.wait_for_selector("#graph")
    assert page.locator("#graph g.node").count() == 5
    assert "ran 1×" in page.locator("#graph g.node[data-node='worker']").text_content()
    assert page.locator("#timeline tbody tr").count() == 2
    assert "hash chain verified" in page.inner_text("#audit")
    page.click("#timeline a[data-step='1']")
    page.wait_for_selector("#step-output")
    assert page.inner_text("#step h2").startswith("Step 1: worker")
    assert "the sum is 4" in page.inner_text("#step-output")
    assert "compute 2+2" in page.inner_text("#conversation")
    assert page.locator("#state-diff .dadd").count() >= 1
    assert elsewhere == []  # nothing fetched from outside: no CDN, fonts or scripts


def test_edit_replay_verdict_branches_and_compare(viewer: LiveViewer, page: Any) -> None:
    run_id = _failed_pipeline_run(viewer)
    page.goto(f"{viewer.url}/runs/{run_id}")
    page.click("#timeline a[data-step='0']")
    page.wait_for_selector("#replay-form")
    page.select_option("#edit-kind", "message")
    assert "compute 2+2" in page.input_value("#edit-text")  # the template starts from the step's message
    page.fill("#edit-text", "kind: message\ntext: compute 2+3\n")
    page.click("#replay-form button[type=submit]")
    page.wait_for_selector("#verdict", timeout=60_000)
    assert page.inner_text("#verdict") == "validated"
    page.wait_for_selector("#tree li.new")
    new = page.locator("#tree li.new")
    assert new.count() == 2  # the treatment and control replays appear as new branches
    assert "validated" in page.inner_text("#tree .verification")
    # pick the run and its treatment replay, and compare them
    treatment = next(r for r in viewer.store.list_runs(parent=run_id) if r.labels.get("arm") == "treatment")
    page.check(f"#tree input.pick[value='{run_id}']")
    page.check(f"#tree input.pick[value='{treatment.id}']")
    page.click("#compare-picked")
    page.wait_for_selector("#compare")
    changed = page.locator("#compare tr.changed")
    assert changed.count() >= 1
    assert "2+3" in page.locator("#compare mark.add").first.inner_text()
    assert "2+2" in page.locator("#compare mark.del").first.inner_text()


def test_a_bad_edit_is_shown_and_starts_nothing(viewer: LiveViewer, page: Any) -> None:
    run_id = _failed_pipeline_run(viewer)
    page.goto(f"{viewer.url}/runs/{run_id}#step-0")
    page.wait_for_selector("#replay-form")
    page.fill("#edit-text", "kind: message\nmode: regex\ntext: x\n")
    page.click("#replay-form button[type=submit]")
    page.wait_for_selector("#replay-job .error")
    assert "pattern" in page.inner_text("#replay-job .error")
    assert viewer.store.list_runs(parent=run_id) == []


def test_another_sites_page_cannot_start_a_replay(viewer: LiveViewer, page: Any, tmp_path: Path) -> None:
    run_id = _failed_pipeline_run(viewer)
    target = f"{viewer.url}/api/runs/{run_id}/replays"
    body = '{"at": "planner#0", "edit": {"kind": "message", "text": "compute 2+3"}}'
    (tmp_path / "evil.html").write_text(
        "<!doctype html><html><body><form id=f method=post action='" + target + "' enctype='text/plain'>"
        "<input name='x' value='y'></form><script>"
        f"fetch('{target}', {{method: 'POST', mode: 'no-cors', body: '{body}'}})"
        ".finally(() => document.title = 'sent');"
        f"fetch('{target}', {{method: 'POST', headers: {{'X-Counterfact-Token': 'guess', 'Content-Type': 'application/json'}}, body: '{body}'}})"
        ".catch(() => document.body.dataset.blocked = 'yes');"
        "</script></body></html>"
    )
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{other.server_address[1]}/evil.html")
        page.wait_for_function("document.title === 'sent' && document.body.dataset.blocked === 'yes'")
        page.evaluate("document.getElementById('f').submit()")
        page.wait_for_load_state()
    finally:
        other.shutdown()
    assert viewer.store.list_runs(parent=run_id) == []  # no replay was started
    # the viewer's own page, without the token header, is refused too
    page.goto(viewer.url + "/")
    status = page.evaluate(f"fetch('{target}', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{body}'}}).then(r => r.status)")
    assert status == 403


def test_trace_text_stays_text_in_the_browser(viewer: LiveViewer, page: Any) -> None:
    now = utcnow()
    run = RunRecord(id="evil" * 8, workflow="w", status="failed", task_input={"question": HOSTILE},
                    outcome=Outcome(success=False, detail=HOSTILE), labels={"note": HOSTILE})
    viewer.store.write_run(run, [StepRecord(index=0, node="agent", input=[{"role": "user", "content": HOSTILE}],
                                            output={"role": "assistant", "content": HOSTILE},
                                            started_at=now, ended_at=now + timedelta(milliseconds=5))])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(viewer.url + "/")
    assert HOSTILE[:30] in page.inner_text("#runs")
    page.goto(f"{viewer.url}/runs/{run.id}#step-0")
    page.wait_for_selector("#step-output")
    assert page.inner_text("#step-output .text") == HOSTILE
    assert HOSTILE in page.inner_text("#outcome-detail")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("img[src=x]").count() == 0 and page.locator("main script:not([type='application/json'])").count() == 0


@pytest.mark.slow
def test_edit_and_replay_a_demo_run_on_the_embedded_model(viewer: LiveViewer, page: Any) -> None:
    from counterfact.graphs import (
        DEMO_SUITE,
        DEMO_WORKFLOW,
        load_suite,
        load_workflow,
        run_suite,
    )

    results = run_suite(load_workflow(DEMO_WORKFLOW), load_suite(DEMO_SUITE), viewer.store, model="embedded", limit=1)
    run = viewer.store.get_run(results[0].run_id)
    expected = run.labels["task"]["answer"]
    page.goto(f"{viewer.url}/runs/{run.id}")
    page.click("#timeline a[data-step='2']")  # the reporter
    page.wait_for_selector("#replay-form")
    answer = f"FINAL ANSWER: {expected}" if not results[0].success else "FINAL ANSWER: 0"
    page.fill("#edit-text", f"kind: message\ntext: '{answer}'\n")
    page.click("#replay-form button[type=submit]")
    page.wait_for_selector("#verdict", timeout=600_000)
    assert page.inner_text("#verdict") == ("validated" if not results[0].success else "refuted")
    page.wait_for_selector("#tree li.new")
    assert page.locator("#tree li.new").count() == 2
    # an activation edit from the small form: the reporter's residual stream scaled to nothing
    page.click("#timeline a[data-step='1']")
    page.wait_for_selector("#step[data-step='1'] #replay-form")
    page.click("#timeline a[data-step='2']")
    page.wait_for_selector("#step[data-step='2'] #replay-form")
    page.select_option("#edit-kind", "activation")
    assert page.is_visible("#activation-form")
    page.fill("#activation-form input[name=layers]", "0, 1")
    page.fill("#activation-form input[name=strength]", "0")
    edit = json.loads(page.input_value("#edit-text"))
    assert edit == {"kind": "activation", "layers": [0, 1], "component": "residual", "positions": "all",
                    "operation": "scale", "strength": 0}
    page.click("#replay-form button[type=submit]")
    page.wait_for_selector("#verdict", timeout=600_000)
    verification = viewer.store.verdicts(run_id=run.id)[-1]
    assert page.inner_text("#verdict") == verification.verdict
    intervention = viewer.store.get_intervention(verification.intervention_id)
    assert intervention.fork_step == 2 and intervention.spec["edits"][0]["kind"] == "activation"


def test_start_a_debug_session_from_the_page(viewer: LiveViewer, page: Any) -> None:
    run_id = _failed_pipeline_run(viewer)
    page.goto(f"{viewer.url}/runs/{run_id}")
    page.fill("#debug-form input[name=strategies]", "grounded")
    page.fill("#debug-form input[name=budget]", "4")
    page.click("#debug-form button[type=submit]")
    link = page.wait_for_selector("#debug-job a[href^='/debug/']", timeout=60_000)
    session = DebugLog(viewer.store).sessions(run_id)[0]
    assert link.get_attribute("href") == f"/debug/{session.id}" and session.status == "done"
    link.click()
    page.wait_for_selector("#debug-report .cf-report")
    assert f"Why did run {run_id[:12]} fail?" in page.inner_text("#debug-report h1")
    assert "replays per decided hypothesis" in page.inner_text("#debug-report footer")


def test_the_runs_list_follows_new_runs(viewer: LiveViewer, page: Any) -> None:
    first = _failed_pipeline_run(viewer)
    page.goto(viewer.url + "/?status=failed")
    assert page.locator("#runs-body tr").count() == 1
    second = _failed_pipeline_run(viewer)
    page.wait_for_selector(f"#runs-body a[href='/runs/{second}']", timeout=10_000)
    assert [a.get_attribute("href") for a in page.locator("#runs-body td:first-child > a").all()] == [
        f"/runs/{second}", f"/runs/{first}"]
