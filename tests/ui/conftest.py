"""A live viewer (uvicorn on a free loopback port, in a thread) and Debian's Chromium driven by
Playwright, for the browser tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from counterfact.store import TraceStore
from counterfact.ui import create_app

CHROMIUM = os.environ.get("COUNTERFACT_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveViewer:
    url: str
    token: str
    store: TraceStore


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1:port in a thread until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the viewer did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def viewer(sqlite_path: str) -> Iterator[LiveViewer]:
    store = TraceStore.open(sqlite_path)
    with serving(create_app(store, token=TOKEN), free_port()) as url:
        yield LiveViewer(url=url, token=TOKEN, store=store)
    store.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium (Playwright's own browser download does not work here)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
