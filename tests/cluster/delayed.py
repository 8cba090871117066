"""A model behind an OpenAI-compatible server on loopback that answers after a fixed delay, as
a remote API does (for the cluster tests and benchmarks/bench_executors.py).

The wait is an asyncio sleep, so any number of calls wait at once, and the server counts how
many were in flight at most: the figure the endpoint limit must hold to.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from counterfact.agents import (
    ChatMessage,
    ChatModel,
    Completion,
    ModelRequest,
    ScriptedChatModel,
    create_app,
    running_server,
)

Brain = Callable[[list[ChatMessage]], str]


class DelayedModel(ChatModel):
    backend = "scripted"

    def __init__(self, brain: Brain, delay: float, name: str = "brain") -> None:
        self.inner = ScriptedChatModel(brain, name=name)
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def use(self, brain: Brain) -> None:
        """Answer with another brain from now on, and count afresh."""
        self.inner = ScriptedChatModel(brain, name=self.inner.name)
        with self._lock:
            self.calls = self.peak = 0

    def complete(self, request: ModelRequest) -> Completion:
        time.sleep(self.delay)
        return self.inner.complete(request)

    async def acomplete(self, request: ModelRequest) -> Completion:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self.inner.complete(request)
        finally:
            with self._lock:
                self.in_flight -= 1


@contextmanager
def delayed_server(brain: Brain, delay: float, name: str = "brain") -> Iterator[tuple[str, DelayedModel]]:
    """Serve `brain` as model `name` behind `delay` seconds per call; yields (base URL, model)."""
    model = DelayedModel(brain, delay, name)
    with running_server(create_app(model)) as url:
        yield url, model
