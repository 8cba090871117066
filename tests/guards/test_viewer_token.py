"""The viewer's token is compared whole: an empty token, a prefix of it or the token with more
after it are refused, on a loopback viewer's state-changing requests (the header alone counts
there) and on every request of a viewer served off loopback (header, cookie, `?token=`); and
starting a debug session is a state-changing request like starting a replay."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from counterfact.graphs import record
from counterfact.store import TraceStore
from counterfact.ui import TOKEN_HEADER, create_app

from ..interventions import apps

TOKEN = "guard-token-0123456789abcdef"
NEAR_MISSES = ["", TOKEN[:1], TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X"]


def _client(store: TraceStore, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(store, token=TOKEN, host=host), base_url="http://127.0.0.1")


def _failed_run(store: TraceStore) -> str:
    return record(apps.pipeline, store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id


@pytest.fixture
def local_store(sqlite_path: str) -> TraceStore:
    store = TraceStore.open(sqlite_path)
    yield store
    store.close()


@pytest.mark.parametrize("given", NEAR_MISSES, ids=["empty", "first-char", "all-but-last", "longer", "last-char-changed"])
def test_a_replay_with_an_empty_or_partial_token_is_refused(local_store: TraceStore, given: str) -> None:
    run_id = _failed_run(local_store)
    c = _client(local_store)
    body = {"at": "planner#0", "edit": {"kind": "message", "text": "compute 2+3"}}
    refused = c.post(f"/api/runs/{run_id}/replays", json=body, headers={TOKEN_HEADER: given})
    assert refused.status_code == 403, refused.text
    assert c.get("/api/jobs").json() == [] and local_store.list_runs(parent=run_id) == []
    accepted = c.post(f"/api/runs/{run_id}/replays", json=body, headers={TOKEN_HEADER: TOKEN})
    assert accepted.status_code == 202, accepted.text  # the same request with the token goes through
    job = accepted.json()["id"]
    deadline = time.monotonic() + 30
    while c.get(f"/api/jobs/{job}").json()["status"] == "running":  # let it finish before the store closes
        assert time.monotonic() < deadline, "the replay job did not finish"
        time.sleep(0.05)


@pytest.mark.parametrize("given", [None, *NEAR_MISSES], ids=["none", "empty", "first-char", "all-but-last", "longer", "last-char-changed"])
def test_starting_a_debug_session_needs_the_whole_token(local_store: TraceStore, given: str | None) -> None:
    run_id = _failed_run(local_store)
    c = _client(local_store)
    c.cookies.set("counterfact_token", TOKEN)  # a cookie another site's form could send: not enough
    headers = {} if given is None else {TOKEN_HEADER: given}
    refused = c.post(f"/api/runs/{run_id}/debug", json={"budget": 1, "pairs": 1}, headers=headers)
    assert refused.status_code == 403, refused.text
    assert TOKEN_HEADER in refused.json()["error"]
    assert c.get("/api/jobs").json() == []  # no session was started
    assert local_store.list_runs(parent=run_id) == []


@pytest.mark.parametrize("given", NEAR_MISSES, ids=["empty", "first-char", "all-but-last", "longer", "last-char-changed"])
def test_off_loopback_an_empty_or_partial_token_opens_nothing(local_store: TraceStore, given: str) -> None:
    c = _client(local_store, host="0.0.0.0")
    if given:  # an empty header is no header
        assert c.get("/api/runs", headers={TOKEN_HEADER: given}).status_code == 401
    entered = c.get("/", params={"token": given}, follow_redirects=False)
    assert entered.status_code == 401 and "set-cookie" not in entered.headers
    assert c.get("/api/runs").status_code == 401
    fresh = _client(local_store, host="0.0.0.0")
    fresh.cookies.set("counterfact_token", given)
    assert fresh.get("/api/runs").status_code == 401
    assert _client(local_store, host="0.0.0.0").get("/api/runs", headers={TOKEN_HEADER: TOKEN}).status_code == 200
