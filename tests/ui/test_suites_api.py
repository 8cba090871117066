"""Suite runs in the viewer: the list and two compared per task, as JSON and as pages, with the
same numbers `counterfact compare` gives, each task's runs linked, and unknown ids as 404s.

The suite runs are the calculator of tests/test_suite_compare.py before and after a change that
fixes multiplication and breaks subtraction: one task fixed, one broken, one still passing.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from counterfact.graphs import (
    SUITE_RUN_LABEL,
    Suite,
    Task,
    compare_suite_runs,
    new_suite_run_id,
    run_graph_suite,
)
from counterfact.store import RunRecord, TraceStore
from counterfact.ui import create_app

TOKEN = "test-token-123"
SUITE = Suite(name="calc", tasks=[
    Task(id="add", question="What is 2+3?", answer="5", answer_path="answer"),
    Task(id="mul", question="What is 4*5?", answer="20", answer_path="answer"),
    Task(id="sub", question="What is 9-4?", answer="5", answer_path="answer"),
])


def make_suite_runs(store: TraceStore) -> tuple[str, str]:
    """The suite run on the calculator as it was (A), then as changed (B), as `counterfact run
    --suite --graph` runs them."""
    ids = []
    for app in ("calculator", "calculator_fixed"):
        suite_run = new_suite_run_id()
        run_graph_suite(f"tests.test_suite_compare:{app}", SUITE, store, labels={SUITE_RUN_LABEL: suite_run}, concurrency=1)
        ids.append(suite_run)
    return ids[0], ids[1]


def client(store: TraceStore, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(store, token=TOKEN, host=host), base_url="http://127.0.0.1")


def test_suite_runs_are_listed_newest_first(store: TraceStore) -> None:
    a, b = make_suite_runs(store)
    listed = client(store).get("/api/suite-runs").json()
    assert [(s["id"], s["suite"], s["workflow"], s["tasks"], s["passed"], s["runs"]) for s in listed] == [
        (b, "calc", "calculator_fixed", 3, 2, 3), (a, "calc", "calculator", 3, 2, 3)]
    page = client(store).get("/suites")
    assert page.status_code == 200 and '<a href="/suites">Suite runs</a>' in page.text
    assert f'name="a" value="{a}"' in page.text and f'name="b" value="{b}"' in page.text
    assert 'action="/suites/compare"' in page.text
    runs_of_a = client(store).get(f"/?label={SUITE_RUN_LABEL}={a}")  # where a suite run's id links to
    assert f'href="/?label={SUITE_RUN_LABEL}%3D{a}"' in page.text and runs_of_a.status_code == 200
    assert {r.id[:12] in runs_of_a.text for r in store.list_runs(labels={SUITE_RUN_LABEL: a})} == {True}
    assert not any(r.id[:12] in runs_of_a.text for r in store.list_runs(labels={SUITE_RUN_LABEL: b}))


def test_two_suite_runs_compared_per_task_with_their_runs(store: TraceStore) -> None:
    a, b = make_suite_runs(store)
    data = client(store).get("/api/suite-runs/compare", params={"a": a[:6], "b": b}).json()
    assert data == compare_suite_runs(store, a, b).model_dump(mode="json")  # the CLI's JSON, key for key
    runs = {t["task_id"]: {"a": t["a_runs"], "b": t["b_runs"]} for t in data["tasks"]}
    assert {t["task_id"]: t["change"] for t in data["tasks"]} == {"add": "still passing", "mul": "fixed", "sub": "broken"}
    assert (data["fixed"], data["broken"], data["still_passing"], data["p_value"]) == (1, 1, 1, 1.0)
    for side, suite_run in (("a", a), ("b", b)):
        stored = {r.labels["task_id"]: r for r in store.list_runs(labels={SUITE_RUN_LABEL: suite_run})}
        assert {task: links[side] for task, links in runs.items()} == {
            task: [{"id": run.id, "status": run.status}] for task, run in stored.items()}
    assert runs["mul"]["a"][0]["status"] == "failed" and runs["mul"]["b"][0]["status"] == "succeeded"

    page = client(store).get("/suites/compare", params={"a": a, "b": b})
    assert page.status_code == 200
    assert '<tr class="change-fixed" data-task="mul">' in page.text and '<tr class="change-broken" data-task="sub">' in page.text
    assert "p = 1</strong>" in page.text and "fixed <strong class=\"ok\">1</strong>" in page.text
    for links in runs.values():
        assert f'href="/runs/{links["a"][0]["id"]}"' in page.text and f'href="/runs/{links["b"][0]["id"]}"' in page.text


def test_a_replay_of_a_suite_run_is_not_one_of_its_runs(store: TraceStore) -> None:
    a, b = make_suite_runs(store)
    (sub,) = store.list_runs(labels={SUITE_RUN_LABEL: b, "task_id": "sub"})
    store.create_run(RunRecord(id="replay-of-sub", workflow=sub.workflow, status="succeeded", labels=sub.labels,
                               parent_run_id=sub.id, fork_step=0))
    tasks = client(store).get("/api/suite-runs/compare", params={"a": a, "b": b}).json()["tasks"]
    assert next(t for t in tasks if t["task_id"] == "sub")["b_runs"] == [{"id": sub.id, "status": "failed"}]


def test_an_unknown_suite_run_is_a_404_with_one_line(store: TraceStore) -> None:
    a, _ = make_suite_runs(store)
    c = client(store)
    missing = c.get("/api/suite-runs/compare", params={"a": a, "b": "nosuch"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "no suite run with id 'nosuch' (see `counterfact suite runs`)"}
    page = c.get("/suites/compare", params={"a": "nosuch", "b": a})
    assert page.status_code == 404 and "no suite run with id &#39;nosuch&#39;" in page.text
    assert c.get("/api/suite-runs/compare", params={"a": a}).status_code == 422


def test_the_suite_routes_pass_the_viewers_guard(store: TraceStore) -> None:
    make_suite_runs(store)
    for path in ("/api/suite-runs", "/suites"):
        assert client(store, host="0.0.0.0").get(path).status_code == 401  # off loopback: the token first
        assert "script-src 'self'" in client(store).get(path).headers["content-security-policy"]
    assert client(store).get("/api/suite-runs", headers={"host": "evil.example"}).status_code == 400
