"""Limits on model calls: the calls in flight per endpoint a client makes (remote APIs
rate-limit by concurrency), and what the model server accepts in one request.

The OpenAI backend holds the process's `CallLimit` around every request. `LocalCallLimit`
counts in this process; a cluster executor installs one whose counts live in one place for
every worker (see `counterfact.executors`), so the cap holds across the cluster.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # served requests: a long conversation is some KB; a MiB refuses only abuse
DEFAULT_MAX_TOKENS_LIMIT = 2048  # served max_tokens: a quarter of the embedded model's context, minutes on a CPU


class CallLimit(ABC):
    """At most `per_endpoint` calls in flight to one endpoint (a base URL)."""

    per_endpoint: int

    @abstractmethod
    def acquire(self, endpoint: str) -> None: ...

    @abstractmethod
    def release(self, endpoint: str) -> None: ...

    @contextmanager
    def hold(self, endpoint: str) -> Iterator[None]:
        self.acquire(endpoint)
        try:
            yield
        finally:
            self.release(endpoint)


class LocalCallLimit(CallLimit):
    def __init__(self, per_endpoint: int) -> None:
        if per_endpoint < 1:
            raise ValueError(f"a call limit is at least 1, got {per_endpoint}")
        self.per_endpoint = per_endpoint
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _slot(self, endpoint: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._slots.setdefault(endpoint, threading.BoundedSemaphore(self.per_endpoint))

    def acquire(self, endpoint: str) -> None:
        self._slot(endpoint).acquire()

    def release(self, endpoint: str) -> None:
        self._slot(endpoint).release()


_limit: CallLimit | None = None


def set_call_limit(limit: CallLimit | None) -> None:
    """Install the cap every OpenAI-compatible call of this process holds (None: no cap)."""
    global _limit
    _limit = limit


def call_limit() -> CallLimit | None:
    return _limit
