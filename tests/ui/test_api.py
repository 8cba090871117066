"""The viewer's server over a real store: its JSON API, its pages, its token and host checks,
and an edit-and-replay job run to its verdict (fast: users' own graphs with no model)."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from counterfact.capture import ModelCallRecord
from counterfact.graphs import record
from counterfact.interventions import DebugLog, session_report
from counterfact.store import Outcome, RunRecord, StepRecord, TraceStore, utcnow
from counterfact.ui import TOKEN_HEADER, RunFilters, create_app, graph_view, runs_page

from ..interventions import apps

TOKEN = "test-token-123"
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def client(store: TraceStore, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(store, token=TOKEN, host=host), base_url="http://127.0.0.1")


def _pipeline_run(store: TraceStore) -> str:
    return record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id


def test_runs_list_filters_search_and_pages(store: TraceStore) -> None:
    rg = record(apps.pipeline, store, check=apps.answer_is_5)
    ids = [rg.invoke({"messages": [("user", f"go {i}")]}, labels={"batch": str(i % 2)}).run_id for i in range(7)]
    c = client(store)
    first = c.get("/api/runs", params={"limit": 3}).json()
    assert [r["id"] for r in first["rows"]] == ids[::-1][:3]
    second = c.get("/api/runs", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    third = c.get("/api/runs", params={"limit": 3, "cursor": second["next_cursor"]}).json()
    assert [r["id"] for r in second["rows"] + third["rows"]] == ids[::-1][3:]
    assert third["next_cursor"] is None
    assert {r["id"] for r in c.get("/api/runs", params={"label": "batch=1"}).json()["rows"]} == set(ids[1::2])
    assert [r["id"] for r in c.get("/api/runs", params={"text": "go 4"}).json()["rows"]] == [ids[4]]
    assert [r["id"] for r in c.get("/api/runs", params={"text": ids[2][:10].upper()}).json()["rows"]] == [ids[2]]
    assert c.get("/api/runs", params={"status": "succeeded"}).json()["rows"] == []
    assert len(c.get("/api/runs", params={"status": "failed", "agent": "worker"}).json()["rows"]) == 7
    page = c.get("/", params={"text": "go 4"})
    assert page.status_code == 200 and ids[4][:12] in page.text and ids[3][:12] not in page.text
    assert float(page.headers["server-timing"].split("dur=")[1]) > 0


def test_bad_filters_and_unknown_runs_are_clear_errors(store: TraceStore) -> None:
    c = client(store)
    assert c.get("/api/runs", params={"cursor": "nonsense"}).json() == {"error": "cursor 'nonsense' is not TIME|RUN_ID"}
    assert c.get("/api/runs", params={"label": "novalue"}).status_code == 400
    missing = c.get("/runs/feedbeef")
    assert missing.status_code == 404 and "no run with id &#39;feedbeef&#39;" in missing.text
    assert c.get("/api/runs/feedbeef/steps/0").json()["error"].startswith("no run with id 'feedbeef'")
    run_id = _pipeline_run(store)
    assert c.get(f"/api/runs/{run_id}/steps/99").json()["error"].startswith(f"run {run_id[:12]} has no step 99")


def test_run_page_has_graph_counts_timeline_and_audit(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    data = client(store).get(f"/api/runs/{run_id}").json()
    nodes = {n["name"]: n for n in data["graph"]["nodes"]}
    assert set(nodes) == {"__start__", "planner", "worker", "reviewer", "__end__"}
    assert (nodes["planner"]["runs"], nodes["worker"]["runs"], nodes["reviewer"]["runs"]) == (1, 1, 0)
    assert nodes["planner"]["y"] < nodes["worker"]["y"] < nodes["reviewer"]["y"]  # layered by depth
    assert {(e["source"], e["target"], e["conditional"]) for e in data["graph"]["edges"]} >= {
        ("planner", "worker", False), ("worker", "reviewer", True)}
    assert [[s["node"] for s in row["steps"]] for row in data["timeline"]] == [["__input__"], ["planner"], ["worker"]] or \
        [[s["node"] for s in row["steps"]] for row in data["timeline"]][-2:] == [["planner"], ["worker"]]
    assert data["chain"]["ok"] is True and data["row"]["success"] is False


def test_parallel_branches_are_one_timeline_row(store: TraceStore) -> None:
    run_id = record(apps.parallel, store).invoke({"messages": [("user", "go")]}).run_id
    rows = client(store).get(f"/api/runs/{run_id}").json()["timeline"]
    grouped = [sorted(s["node"] for s in row["steps"]) for row in rows if row["parallel"]]
    assert grouped == [["left", "right"]]


def test_loops_are_laid_out_with_back_edges() -> None:
    run = RunRecord(id="r", workflow="w", labels={"graph": {
        "digest": "d", "nodes": ["__start__", "a", "b", "__end__"],
        "edges": [["__start__", "a", False], ["a", "b", False], ["b", "a", True], ["b", "__end__", True]]}})
    view = graph_view(run, [])
    assert view is not None
    y = {n.name: n.y for n in view.nodes}
    assert y["__start__"] < y["a"] < y["b"] < y["__end__"]
    back = next(e for e in view.edges if (e.source, e.target) == ("b", "a"))
    assert back.path.startswith("M") and " C" in back.path


def test_step_view_shows_state_diff_calls_and_activation_plots(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    step = client(store).get(f"/api/runs/{run_id}/steps/1").json()
    assert step["step"]["node"] == "worker"
    added = [line for mark, line in step["state_diff"] if mark == "+"]
    assert any('"4"' in line for line in added)  # the worker wrote answer "4"
    assert "message" in step["edit_templates"] and "the sum is 4" in step["edit_templates"]["message"]

    # a step whose model call captured activations: one plot per hook point, norms per position
    acts = np.stack([np.full(4, v, dtype=np.float32) for v in (1.0, 2.0, 3.0)])
    buffer = save({"layers.0": acts, "layers.1": acts * 2})
    now = utcnow()
    run = RunRecord(id="act0" * 8, workflow="w", status="failed")
    call = ModelCallRecord(backend="local", model="tiny", request=[{"role": "user", "content": "hi"}],
                           response={"role": "assistant", "content": "yo"}, activations=buffer)
    store.write_run(run, [StepRecord(index=0, node="a", input=[{"role": "user", "content": "hi"}],
                                     output={"role": "assistant", "content": "yo"}, model_calls=[call],
                                     started_at=now, ended_at=now + timedelta(milliseconds=5))])
    plots = client(store).get(f"/api/runs/{run.id}/steps/0").json()["activations"]
    assert [(p["point"], p["positions"]) for p in plots] == [("layers.0", 3), ("layers.1", 3)]
    assert plots[0]["low"] == pytest.approx(2.0) and plots[0]["high"] == pytest.approx(6.0)  # L2 of (v,v,v,v)
    assert plots[1]["high"] == pytest.approx(12.0)


def test_trace_text_is_escaped_in_every_view(store: TraceStore) -> None:
    now = utcnow()
    run = RunRecord(id="evil" * 8, workflow=HOSTILE, status="failed", task_input={"question": HOSTILE},
                    outcome=Outcome(success=False, detail=HOSTILE), labels={"note": HOSTILE})
    store.write_run(run, [StepRecord(index=0, node="agent", agent=HOSTILE, input=[{"role": "user", "content": HOSTILE}],
                                     output={"role": "assistant", "content": HOSTILE},
                                     started_at=now, ended_at=now + timedelta(milliseconds=5))])
    c = client(store)
    for url in ["/", f"/runs/{run.id}", f"/runs/{run.id}/steps/0", f"/runs/{run.id}/steps/0?fragment=1",
                f"/runs/{run.id}/tree", f"/compare?a={run.id}&b={run.id}", "/?fragment=1"]:
        page = c.get(url)
        assert page.status_code == 200, url
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, url
        assert "&lt;script&gt;" in page.text or "\\u003cscript\\u003e" in page.text, url
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_state_changing_requests_need_the_token(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    c = client(store)
    body = {"at": "planner#0", "edit": {"kind": "message", "text": "compute 2+3"}}
    assert c.post(f"/api/runs/{run_id}/replays", json=body).status_code == 403
    assert c.post(f"/api/runs/{run_id}/replays", json=body, headers={TOKEN_HEADER: "wrong"}).status_code == 403
    # a cookie is not enough for a state-changing request: another site's form could send it
    c.cookies.set("counterfact_token", TOKEN)
    assert c.post(f"/api/runs/{run_id}/replays", json=body).status_code == 403
    assert store.list_runs(parent=run_id) == []  # nothing started
    # a rebound DNS name does not reach a loopback viewer
    assert c.get("/api/runs", headers={"host": "attacker.example"}).status_code == 400


def test_off_loopback_every_request_needs_the_token(store: TraceStore) -> None:
    c = client(store, host="0.0.0.0")
    assert c.get("/").status_code == 401 and c.get("/api/runs").status_code == 401
    assert c.get("/api/runs", headers={TOKEN_HEADER: TOKEN}).status_code == 200
    entered = c.get(f"/?token={TOKEN}", follow_redirects=False)
    assert entered.status_code == 303 and "token=" not in entered.headers["location"]
    assert c.get("/").status_code == 200  # the cookie the redirect set
    assert client(store, host="0.0.0.0").get("/?token=guess", follow_redirects=False).status_code == 401


def test_edit_and_replay_job_runs_to_a_verdict_and_grows_the_tree(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    c = client(store)
    headers = {TOKEN_HEADER: TOKEN}
    bad = c.post(f"/api/runs/{run_id}/replays", json={"at": "planner#0", "edit": "kind: [\n"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"].startswith("edit: does not parse as YAML")
    unknown = c.post(f"/api/runs/{run_id}/replays", json={"at": "nobody#0", "edit": {"kind": "message", "text": "x"}},
                     headers=headers)
    assert unknown.status_code == 400 and "nobody" in unknown.json()["error"]
    job = c.post(f"/api/runs/{run_id}/replays", json={"at": "planner#0", "edit": "kind: message\ntext: compute 2+3\n"},
                 headers=headers)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    with c.stream("GET", f"/api/jobs/{job_id}/events") as events:
        kinds = [line.split(": ", 1)[1] for line in events.iter_lines() if line.startswith("event: ")]
    assert kinds[-1] == "done" and "progress" in kinds
    final = c.get(f"/api/jobs/{job_id}").json()
    assert final["status"] == "done" and final["result"]["verdict"] == "validated"
    tree = c.get(f"/api/runs/{run_id}/tree").json()
    assert tree["groups"][0]["verdict"]["verdict"] == "validated"
    children = {child["run"]["arm"] for child in tree["groups"][0]["children"]}
    assert children == {"treatment", "control"}
    page = c.get(f"/runs/{run_id}/tree?fragment=1").text
    assert "validated" in page and all(ch["run"]["id"][:12] in page for ch in tree["groups"][0]["children"])
    treatment = next(ch["run"]["id"] for ch in tree["groups"][0]["children"] if ch["run"]["arm"] == "treatment")
    rows = c.get("/api/compare", params={"a": run_id, "b": treatment}).json()["steps"]
    changed = [r for r in rows if not r["same"]]
    assert any("2+3" in text for text, marked in changed[0]["b"] if marked)
    assert any("2+2" in text for text, marked in changed[0]["a"] if marked)


def test_debug_session_page_uses_the_report_renderer(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    log = DebugLog(store)
    session = log.create_session(run_id, ["grounded"], {})
    log.add_hypothesis(session.id, strategy="grounded", segment=0, step=0, agent="planner",
                       reason=f"planner wrote 2+2 {HOSTILE}", intervention={"edits": [{"kind": "message", "text": "compute 2+3"}]},
                       evidence={"fixes": [], "proposed_by": ["grounded"]})
    report = session_report(store, session.id[:8])
    assert report.hypotheses[0].reason.startswith("planner wrote 2+2")
    page = client(store).get(f"/debug/{session.id[:8]}")
    assert page.status_code == 200 and 'class="cf-report"' in page.text
    assert "planner wrote 2+2 &lt;script&gt;" in page.text and "<script>alert" not in page.text
    assert client(store).get(f"/api/debug/{session.id}").json()["session_id"] == session.id


def test_runs_page_filters_match_the_library(store: TraceStore) -> None:
    ok = record(apps.pipeline, store, check=apps.answer_is_5)
    ids = [ok.invoke({"messages": [("user", "go")]}).run_id for _ in range(3)]
    time.sleep(0.01)
    page = runs_page(store, RunFilters(status="failed"), limit=2)
    assert [r.id for r in page.rows] == ids[::-1][:2] and page.next_cursor


def test_imported_logs_show_annotation_and_marked_attributions(store: TraceStore) -> None:
    now = utcnow()
    for i, (agent, step) in enumerate([("WebSurfer", 1), ("Orchestrator", 0)]):
        run = RunRecord(id=f"ww-{i}", workflow="whowhen/hand-crafted", status="failed", source="whowhen",
                        labels={"mistake_agent": "WebSurfer", "mistake_step": 1, "mistake_reason": "wrong page",
                                "attribution": {"all_at_once": {"model": "embedded", "agent": agent, "step": step}}})
        store.write_run(run, [StepRecord(index=j, node=name, agent=name, output={"role": "assistant", "content": "x"},
                                         started_at=now, ended_at=now) for j, name in enumerate(["Orchestrator", "WebSurfer"])])
    store.write_run(RunRecord(id="recorded-run", workflow="demo", status="failed"), [])
    store.write_run(RunRecord(id="ww-later", workflow="whowhen/hand-crafted", status="failed", source="whowhen",
                              labels={"mistake_agent": "WebSurfer", "mistake_step": 0},
                              created_at=now - timedelta(days=1)), [])
    data = client(store).get("/api/imports").json()
    assert [r["run"]["id"] for r in data["rows"]] == ["ww-1", "ww-0", "ww-later"]
    marks = {r["run"]["id"]: [(a["agent_ok"], a["step_ok"]) for a in r["attributions"]] for r in data["rows"]}
    assert marks == {"ww-0": [(True, True)], "ww-1": [(False, False)], "ww-later": []}
    assert [(s["workflow"], s["score"]["method"], s["score"]["agent_correct"], s["score"]["runs"], s["not_attributed"])
            for s in data["scores"]] == [("whowhen/hand-crafted", "all_at_once", 1, 2, 1)]
    page = client(store).get("/imports").text
    assert "wrong page" in page and "1/2 (50%)" in page and "recorded-run" not in page
    run_page = client(store).get("/runs/ww-1").text
    assert "mistake_agent=WebSurfer" in run_page and "agent Orchestrator" in run_page


def test_pages_reference_nothing_outside_the_viewer(store: TraceStore) -> None:
    import re

    run_id = _pipeline_run(store)
    c = client(store)
    for url in ["/", f"/runs/{run_id}", f"/runs/{run_id}/steps/0", f"/runs/{run_id}/tree", "/imports",
                f"/compare?a={run_id}&b={run_id}"]:
        refs = re.findall(r'(?:src|href)="([^"]+)"', c.get(url).text)
        assert refs and all(r.startswith(("/", "#", "?")) for r in refs), (url, refs)
    assert c.get("/api/docs").status_code == 404  # FastAPI's docs page would load Swagger UI from a CDN
    assert c.get("/api/openapi.json").json()["paths"]["/api/runs/{run_id}/replays"]["post"]


def test_audit_page_shows_each_runs_chain(store: TraceStore) -> None:
    from sqlalchemy import update

    from counterfact.store import redact_run_text
    from counterfact.store.schema import Step

    intact, edited, redacted = (_pipeline_run(store) for _ in range(3))
    with store.begin() as conn:
        conn.execute(update(Step.__table__).where(Step.run_id == edited, Step.index == 1).values(node="forged"))
    assert redact_run_text(store, redacted, "the sum is 4", "test") >= 1
    c = client(store)
    chains = {r["run"]["id"]: r["chain"] for r in c.get("/api/audit").json()["rows"]}
    assert chains[intact]["ok"] and chains[intact]["redacted_blobs"] == 0
    assert not chains[edited]["ok"] and chains[edited]["first_bad_step"] == 1
    assert chains[redacted]["ok"] and chains[redacted]["redacted_blobs"] >= 1
    page = c.get("/audit").text
    assert "broken at step 1" in page and page.count(">verified<") == 2
    assert c.get(f"/runs/{edited}").text.count("chain broken at step 1") == 1


def test_jobs_are_listed_by_run(store: TraceStore) -> None:
    run_id = _pipeline_run(store)
    c = client(store)
    job = c.post(f"/api/runs/{run_id}/replays", json={"at": "planner#0", "edit": {"kind": "message", "text": "compute 2+3"}},
                 headers={TOKEN_HEADER: TOKEN}).json()
    listed = c.get("/api/jobs", params={"run": run_id}).json()
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["kind"] == "replay"
    assert c.get("/api/jobs", params={"run": "someone-else"}).json() == []
    assert c.get("/api/jobs/nope").status_code == 404
