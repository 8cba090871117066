"""Prompt prefixes already computed, as KV blocks, so a replay does not pay for them again.

On a CPU the prompt pass dominates an agent's call: its role and few-shot turns are hundreds of
tokens, the same in every call of that agent, in every run and every replay of a task. Prompts
are prefilled in fixed blocks of `block` tokens; the keys and values of each full block are
kept under the whole token prefix they end, so the next prompt that starts the same way takes
them from here. Because every prompt is prefilled in the same blocks whether or not a block
was cached, a cache hit gives bit-for-bit the same activations as a miss: greedy replays stay
deterministic. Least recently used blocks go first once they take more than `max_bytes`.

The bound is in bytes, not blocks, because a block's size depends on the model: for
SmolLM2-135M one block is 2.9 MB (30 layers, 3 KV heads of 64 in fp32), so the old bound of 512
blocks let the cache grow to 1.5 GB, most of it blocks that end in one task's own text and are
never asked for again. What pays is the shared head of each agent's prompt (its role and
few-shot turns) and the blocks of a run's next call to the same agent: the default bound
holds 22 blocks of that model.
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

    def __init__(self, block: int = 64, max_bytes: int = 64 * 2**20) -> None:
        self.block = block
        self.max_bytes = max_bytes
        self.nbytes = 0  # held now
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
        """Keep `blocks` as the block of `ids` that ends at `end` (unless one block alone is
        over the bound), dropping the least recently used ones beyond `max_bytes`."""
        size = _size(blocks)
        if size > self.max_bytes:
            return
        key = self._key(ids, end)
        with self._lock:
            replaced = self._blocks.pop(key, None)
            if replaced is not None:
                self.nbytes -= _size(replaced)
            self._blocks[key] = blocks
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._blocks.popitem(last=False)
                self.nbytes -= _size(dropped)

    def __len__(self) -> int:
        return len(self._blocks)


def _size(blocks: KV) -> int:
    return sum(keys.nbytes + values.nbytes for keys, values in blocks)
