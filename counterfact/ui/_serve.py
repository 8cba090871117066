"""Serving the viewer with uvicorn, after checking that the address can be bound (a port in
use is a user's error with one line, not a server's log)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from counterfact._errors import CounterfactError
from counterfact.store import TraceStore
from counterfact.ui._app import create_app


def check_bindable(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CounterfactError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port or --host") from None


def serve(
    store: TraceStore, *, host: str, port: int, token: str, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve the viewer until interrupted; `on_ready` runs once the address is known to be
    free (the CLI says where to open it), before the server starts."""
    check_bindable(host, port)
    if on_ready is not None:
        on_ready()
    uvicorn.run(create_app(store, token=token, host=host), host=host, port=port, log_level="warning")
