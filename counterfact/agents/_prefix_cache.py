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

A prompt's last, partial block is kept too, with the logits of its last position (its
`Tail`), under the whole prompt: a debug session asks the same prompt again and again where
its replays fork (the pairs of a sampled verification differ in their seeds, not in their
prompts), and the partial block, up to a block of tokens, is most of what a prompt pass with
cached blocks computes. A tail is what that pass gave, so a hit changes no bit either.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, block, dim]
Tail = tuple[KV, torch.Tensor]  # a prompt's partial last block, and its last position's logits


class PrefixCache:
    """Least-recently-used KV blocks keyed by the token prefix they complete."""

    def __init__(self, block: int = 64, max_bytes: int = 64 * 2**20) -> None:
        self.block = block
        self.max_bytes = max_bytes
        self.nbytes = 0  # held now
        self.hits = 0
        self.misses = 0
        self.tail_hits = 0
        # blocks (logits None) and tails, least recently used first, under one bound
        self._entries: OrderedDict[bytes, tuple[KV, torch.Tensor | None]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(ids: list[int], end: int, kind: bytes = b"block") -> bytes:
        return hashlib.blake2b(array("q", ids[:end]).tobytes(), digest_size=16, person=kind).digest()

    def get(self, ids: list[int], end: int) -> KV | None:
        """The block of `ids` that ends at `end`, if it was computed before."""
        found = self._get(self._key(ids, end))
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return found[0]

    def put(self, ids: list[int], end: int, blocks: KV) -> None:
        """Keep `blocks` as the block of `ids` that ends at `end` (unless one block alone is
        over the bound), dropping the least recently used entries beyond `max_bytes`."""
        self._keep(self._key(ids, end), (blocks, None))

    def get_tail(self, ids: list[int]) -> Tail | None:
        """The partial last block of the prompt `ids` and its logits, if it was computed before."""
        found = self._get(self._key(ids, len(ids), b"tail"))
        if found is None or found[1] is None:
            return None
        self.tail_hits += 1
        return found[0], found[1]

    def put_tail(self, ids: list[int], blocks: KV, logits: torch.Tensor) -> None:
        """Keep the partial last block of the prompt `ids` (`blocks`) and its last logits."""
        self._keep(self._key(ids, len(ids), b"tail"), (blocks, logits))

    def _get(self, key: bytes) -> tuple[KV, torch.Tensor | None] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def _keep(self, key: bytes, entry: tuple[KV, torch.Tensor | None]) -> None:
        size = _size(entry)
        if size > self.max_bytes:
            return
        with self._lock:
            replaced = self._entries.pop(key, None)
            if replaced is not None:
                self.nbytes -= _size(replaced)
            self._entries[key] = entry
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.nbytes -= _size(dropped)

    def __len__(self) -> int:
        return len(self._entries)


def _size(entry: tuple[KV, torch.Tensor | None]) -> int:
    blocks, logits = entry
    return sum(keys.nbytes + values.nbytes for keys, values in blocks) + (0 if logits is None else logits.nbytes)
