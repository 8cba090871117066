"""Who may use the viewer: one middleware that every request passes through.

State-changing requests need the token in the `X-Counterfact-Token` header, which another
site's page cannot send (no CORS), even on loopback. Off loopback every request needs the
token (header, cookie, or `?token=` once, which sets the cookie). On loopback the Host header
must name loopback too, so a rebound DNS name cannot reach the API. Every response carries a
content security policy that allows no inline script and nothing from elsewhere.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

TOKEN_HEADER = "X-Counterfact-Token"
TOKEN_COOKIE = "counterfact_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
RESPONSE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_token(given: str | None, token: str) -> bool:
    """The whole token, compared in constant time (a prefix or an empty header is not it)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class ViewerGuard:
    """The viewer's access rules, as an HTTP middleware of the app served on `host`."""

    def __init__(self, token: str, host: str) -> None:
        self.token = token
        self.loopback = is_loopback(host)

    def refusal(self, request: Request) -> Response | None:
        """The response that ends `request` before it reaches the app, or None to let it in."""
        hostname = request.url.hostname
        if self.loopback and hostname is not None and not is_loopback(hostname):
            return JSONResponse({"error": f"host {hostname!r} is not loopback"}, status_code=400)
        if same_token(request.query_params.get("token"), self.token):
            response = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response
        given = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
        if not self.loopback and not same_token(given, self.token):
            return JSONResponse({"error": "this viewer needs its token: open the URL it printed"}, status_code=401)
        if request.method not in SAFE_METHODS and not same_token(request.headers.get(TOKEN_HEADER), self.token):
            return JSONResponse({"error": f"a state-changing request needs the {TOKEN_HEADER} header"}, status_code=403)
        return None

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = self.refusal(request)
        if response is None:
            response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers.update(RESPONSE_HEADERS)
        return response
