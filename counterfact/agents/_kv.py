"""The decode batch's keys and values, in buffers with room to grow.

transformers' `DynamicLayer` appends a step's keys with `torch.cat`, which copies the whole
batch cache on every decode step: on 2 cores that copy cost as much as the model's own pass
for a batch of long prompts, and the freed copies left the heap fragmented (the demo's peak
memory). A `RoomyLayer` holds its keys and values in buffers longer than they are, writes each
step's token in place, and reallocates only once per `ROOM` tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM = 64  # tokens of headroom a buffer gets when it is (re)allocated


class RoomyLayer(DynamicLayer):
    """One attention layer's cache for a decode batch, [batch, heads, length, dim] as views of
    longer buffers. `keys` and `values` are read-only views; the engine changes the batch
    through `stack_below` and `select`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:  # noqa: D107 - see class
        self.device = keys.device
        self.is_initialized = True
        self._length = keys.shape[-2]
        self._keys = _with_room(keys, self._length)
        self._values = _with_room(values, self._length)

    @property
    def keys(self) -> torch.Tensor:  # type: ignore[override]
        return self._keys[:, :, : self._length]

    @property
    def values(self) -> torch.Tensor:  # type: ignore[override]
        return self._values[:, :, : self._length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._keys = _with_room(self.keys, end)
            self._values = _with_room(self.values, end)
        self._keys[:, :, self._length : end].copy_(key_states)
        self._values[:, :, self._length : end].copy_(value_states)
        self._length = end
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length

    def stack_below(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add rows under the batch, both sides right-aligned on the sequence axis, with zeros
        (masked padding) on the left of the shorter side."""
        length = max(self._length, keys.shape[-2])
        self._keys = _stacked(self.keys, keys, length)
        self._values = _stacked(self.values, values, length)
        self._length = length

    def select(self, rows: torch.Tensor, first: int) -> None:
        """Keep only `rows`, and the sequence from column `first` on."""
        length = self._length - first
        self._keys = _with_room(self.keys[rows, :, first:], length)
        self._values = _with_room(self.values[rows, :, first:], length)
        self._length = length


def batch_cache(cache: DynamicCache) -> DynamicCache:
    """A prefilled request's cache, as the first row of a decode batch whose layers grow in
    place."""
    cache.layers = [RoomyLayer(layer.keys, layer.values) for layer in cache.layers]
    return cache


def _with_room(part: torch.Tensor, length: int) -> torch.Tensor:
    """A buffer of `length + ROOM` tokens holding `part` (shorter or as long as `length`) at
    its start."""
    shape = list(part.shape)
    shape[-2] = length + ROOM
    out = part.new_empty(shape)
    out[:, :, : part.shape[-2]].copy_(part)
    return out


def _stacked(top: torch.Tensor, bottom: torch.Tensor, length: int) -> torch.Tensor:
    """`top` over `bottom` in one buffer of `length + ROOM` tokens, each right-aligned at
    `length` with zeros before it."""
    shape = list(top.shape)
    shape[0], shape[-2] = top.shape[0] + bottom.shape[0], length + ROOM
    out = top.new_empty(shape)
    for part, rows in ((top, out[: top.shape[0]]), (bottom, out[top.shape[0] :])):
        pad = length - part.shape[-2]
        rows[:, :, :pad].zero_()
        rows[:, :, pad:length].copy_(part)
    return out
