"""The viewer's guard on an app of its own: every rule of who may do what, with the request
that must be let in next to the one, nearly the same, that must be refused. Its mutants are
measured by scripts/mutation.py (target `viewer-security`)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from counterfact.ui import TOKEN_HEADER, ViewerGuard, is_loopback
from counterfact.ui._security import CONTENT_SECURITY_POLICY, TOKEN_COOKIE, same_token

TOKEN = "s3cret-token-of-the-viewer"


def _client(host: str, served_as: str | None = None) -> TestClient:
    app = FastAPI()
    app.middleware("http")(ViewerGuard(TOKEN, host))

    @app.get("/api/thing")
    def read() -> dict[str, str]:
        return {"read": "ok"}

    @app.post("/api/thing")
    def write() -> dict[str, str]:
        return {"written": "ok"}

    return TestClient(app, base_url=f"http://{served_as or host}:8000", follow_redirects=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "evil.example", "localhost.evil.example", "", "::"])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_only_the_whole_token_is_the_token() -> None:
    assert same_token(TOKEN, TOKEN)
    for given in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert not same_token(given, TOKEN), given


def test_on_loopback_reads_need_no_token_and_writes_need_the_header() -> None:
    c = _client("127.0.0.1")
    assert c.get("/api/thing").json() == {"read": "ok"}
    refused = c.post("/api/thing")
    assert refused.status_code == 403 and TOKEN_HEADER in refused.json()["error"]
    assert c.post("/api/thing", headers={TOKEN_HEADER: TOKEN}).json() == {"written": "ok"}
    for wrong in ("", TOKEN[:5], "nope"):
        assert c.post("/api/thing", headers={TOKEN_HEADER: wrong}).status_code == 403
    # the cookie a page gets is not enough to write: another site's form would send it too
    c.cookies.set(TOKEN_COOKIE, TOKEN)
    assert c.post("/api/thing").status_code == 403


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_every_state_changing_method_needs_the_header(method: str) -> None:
    assert getattr(_client("127.0.0.1"), method)("/api/thing").status_code == 403


def test_a_head_or_options_request_is_a_read() -> None:
    c = _client("127.0.0.1")
    assert c.head("/api/thing").status_code != 403
    assert c.options("/api/thing").status_code != 403


def test_on_loopback_a_request_naming_another_host_is_refused() -> None:
    c = _client("127.0.0.1", served_as="rebound.example")
    refused = c.get("/api/thing", headers={TOKEN_HEADER: TOKEN})
    assert refused.status_code == 400 and refused.json() == {"error": "host 'rebound.example' is not loopback"}
    assert _client("127.0.0.1", served_as="localhost").get("/api/thing").status_code == 200


def test_off_loopback_every_request_needs_the_token() -> None:
    c = _client("0.0.0.0", served_as="viewer.example")  # a name off loopback is fine there
    refused = c.get("/api/thing")
    assert refused.status_code == 401
    assert refused.json() == {"error": "this viewer needs its token: open the URL it printed"}
    for wrong in ("", TOKEN[:5]):
        assert c.get("/api/thing", headers={TOKEN_HEADER: wrong}).status_code == 401
    assert c.get("/api/thing", headers={TOKEN_HEADER: TOKEN}).json() == {"read": "ok"}
    c.cookies.set(TOKEN_COOKIE, TOKEN)
    assert c.get("/api/thing").json() == {"read": "ok"}
    assert c.post("/api/thing").status_code == 403  # the cookie still does not write
    assert c.post("/api/thing", headers={TOKEN_HEADER: TOKEN}).status_code == 200


def test_the_token_in_the_url_sets_the_cookie_once_and_leaves_the_url() -> None:
    c = _client("0.0.0.0", served_as="viewer.example")
    given = c.get("/api/thing?token=" + TOKEN + "&page=2")
    assert given.status_code == 303
    assert given.headers["location"] == "http://viewer.example:8000/api/thing?page=2"
    cookie = given.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    # a wrong token in the URL sets nothing and lets nothing in
    wrong = _client("0.0.0.0", served_as="viewer.example").get("/api/thing?token=" + TOKEN[:-1])
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_every_response_carries_the_security_headers_refusals_included() -> None:
    c = _client("127.0.0.1")
    for response in (c.get("/api/thing"), c.post("/api/thing")):
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        timing = response.headers["Server-Timing"]
        assert timing.startswith("app;dur=") and 0.0 <= float(timing.removeprefix("app;dur=")) < 60_000
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY.split(
        "script-src", 1)[1].split(";", 1)[0]
