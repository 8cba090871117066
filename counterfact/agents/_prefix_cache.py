"""Prompt prefixes already computed, as KV blocks, so a replay does not pay for them again.

On a CPU the prompt pass dominates an agent's call: its role and few-shot turns are hundreds of
tokens, the same in every call of that agent, in every run and every replay of a task. Prompts
are prefilled in fixed blocks of `block` tokens; the keys and values of each full block are
kept under the whole token prefix they end, so the next prompt that starts the same way takes
them from here. Because every prompt is prefilled in the same blocks whether or not a block
was cached, a cache hit gives bit-for-bit the same activations as a miss: greedy replays stay
deterministic. Least recently used blocks go first once `capacity` is reached.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, block, dim]


class PrefixCache:
    """Least-recently-used KV blocks keyed by the token prefix they complete."""

    def __init__(self, block: int = 64, capacity: int = 512) -> None:
        self.block = block
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._blocks: OrderedDict[bytes, KV] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(ids: list[int], end: int) -> bytes:
        return hashlib.blake2b(array("q", ids[:end]).tobytes(), digest_size=16).digest()

    def get(self, ids: list[int], end: int) -> KV | None:
        """The block of `ids` that ends at `end`, if it was computed before."""
        key = self._key(ids, end)
        with self._lock:
            found = self._blocks.get(key)
            if found is None:
                self.misses += 1
                return None
            self._blocks.move_to_end(key)
            self.hits += 1
            return found

    def put(self, ids: list[int], end: int, blocks: KV) -> None:
        with self._lock:
            self._blocks[self._key(ids, end)] = blocks
            while len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)
