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
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from counterfact.agents._engine import Request, Result

Key = tuple[object, ...]


def memo_key(req: Request) -> Key | None:
    """What a request's answer depends on, or None when its answer is more than its tokens."""
    if not req.share or req.edits or req.capture or req.logits_only or req.on_token is not None:
        return None
    grammar = req.constraint.key if req.constraint is not None else None
    sampling = (req.temperature, req.top_p, req.seed) if req.temperature > 0.0 else ()
    return (tuple(req.prompt_ids), req.max_new_tokens, tuple(req.stop), req.ignore_eos, grammar, sampling)


class ResultMemo:
    """Least-recently-used finished results by `memo_key`; `capacity` 0 keeps nothing."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.hits = 0  # requests answered from here
        self.joined = 0  # requests that joined a row decoding the same request
        self._results: OrderedDict[Key, Result] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key) -> Result | None:
        """A copy of the result kept for `key` (the caller may change its lists), counted as a hit."""
        with self._lock:
            result = self._results.get(key)
            if result is None:
                return None
            self._results.move_to_end(key)
            self.hits += 1
        return copied(result)

    def put(self, key: Key, result: Result) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._results[key] = copied(result)
            self._results.move_to_end(key)
            while len(self._results) > self.capacity:
                self._results.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer (a benchmark that stands for a new process, say)."""
        with self._lock:
            self._results.clear()


def copied(result: Result) -> Result:
    """A result that shares no list with `result`."""
    return replace(result, token_ids=list(result.token_ids), activations=dict(result.activations))
