"""Answers the engine has already given, so that a repeated request is not decoded again.

A debug session replays one run many times from one step, and its replays ask the model the
same prompts wherever their edits have not changed them yet: the control asks what the run
asked, and a fix whose edited step gave the run's answer asks the run's later prompts again.
A request's answer is a function of its prompt and settings when it is greedy, or sampled from
its own seeded generator, so the engine answers a repeat from here, and a repeat that arrives
while the first is still decoding joins that row instead of decoding beside it.

Only requests that ask to `share` are shared (a chat model's calls do; the raw requests that
tests and benchmarks of the engine send do not), and only where the result is the tokens alone:
a request that edits or reads activations, streams, or stops after the prompt pass is never
shared. Entries are small (token ids and text), and the oldest go first past `capacity`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


class ResultMemo(Generic[Answer]):
    """Least-recently-used answers by the key of the request they answer (the engine's
    `memo_key`); `capacity` 0 keeps nothing. Callers copy what they put and get, if they change it."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.hits = 0  # requests answered from here
        self.joined = 0  # requests that joined a row decoding the same request
        self._answers: OrderedDict[Hashable, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Answer | None:
        """The answer kept for `key`, counted as a hit."""
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                return None
            self._answers.move_to_end(key)
            self.hits += 1
        return answer

    def put(self, key: Hashable, answer: Answer) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.capacity:
                self._answers.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer (a benchmark that stands for a new process, say)."""
        with self._lock:
            self._answers.clear()
