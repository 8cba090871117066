"""The decode batch's keys and values, in buffers with room to grow.

transformers' `DynamicLayer` appends a step's keys with `torch.cat`, which copies the whole
batch cache on every decode step, and the engine used to rebuild the batch's tensors whenever a
request joined or left. A `RoomyLayer` holds its keys and values in buffers with room for
`rows` requests, `LEFT` columns before the longest prompt and `ROOM` tokens after it: a step
writes its token in place, a request joins into a free row, one that leaves has the rows below
it moved up, and leading padding is dropped by moving a start column. The buffers are
reallocated only when that room runs out. Room never written costs no memory: buffers this big
come from fresh anonymous pages (see `_allocator`), which the kernel backs only once touched.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM = 64  # tokens of headroom after the last token when a buffer is (re)allocated
LEFT = 256  # columns before the first one, for a longer prompt joining


class RoomyLayer(DynamicLayer):
    """One attention layer's cache for a decode batch, [batch, heads, length, dim] as views of
    larger buffers. `keys` and `values` are read-only views; the engine changes the batch
    through `stack_below` and `select`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: int = 1) -> None:  # noqa: D107 - see class
        self.device = keys.device
        self.is_initialized = True
        self._capacity = max(rows, keys.shape[0])
        size = [self._capacity, keys.shape[1], LEFT + keys.shape[-2] + ROOM, keys.shape[3]]
        self._keys, self._values = keys.new_empty(size), values.new_empty(size)
        self._rows, self._start, self._end = 0, LEFT, LEFT + keys.shape[-2]
        self._write_rows(keys, values)

    @property
    def keys(self) -> torch.Tensor:  # type: ignore[override]
        return self._keys[: self._rows, :, self._start : self._end]

    @property
    def values(self) -> torch.Tensor:  # type: ignore[override]
        return self._values[: self._rows, :, self._start : self._end]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        if self._end + n > self._keys.shape[-2]:
            self._reallocate(LEFT, n + ROOM)
        self._keys[: self._rows, :, self._end : self._end + n].copy_(key_states)
        self._values[: self._rows, :, self._end : self._end + n].copy_(value_states)
        self._end += n
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._end - self._start

    def stack_below(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add rows under the batch, all right-aligned on the sequence axis, with zeros (masked
        padding) on the left of the shorter side."""
        rows, width = self._rows + keys.shape[0], max(self._end - self._start, keys.shape[-2])
        if rows > self._capacity or width > self._end:
            self._capacity = max(rows, self._capacity)
            self._reallocate(LEFT + width - (self._end - self._start), ROOM)
        start = self._end - width
        if start < self._start:  # a longer prompt: the rows already here get padding before them
            self._keys[: self._rows, :, start : self._start].zero_()
            self._values[: self._rows, :, start : self._start].zero_()
            self._start = start
        self._write_rows(keys, values)

    def select(self, rows: torch.Tensor, first: int) -> None:
        """Keep only `rows` (in increasing order), and the sequence from column `first` on."""
        live = slice(self._start, self._end)
        for to, source in enumerate(rows.tolist()):
            if to != source:  # rows only move up, so a row is read before it is overwritten
                self._keys[to, :, live].copy_(self._keys[source, :, live])
                self._values[to, :, live].copy_(self._values[source, :, live])
        self._rows = len(rows)
        self._start += first

    def _write_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put rows after the batch's last one, right-aligned at its end."""
        rows = slice(self._rows, self._rows + keys.shape[0])
        pad = self._end - keys.shape[-2]
        self._keys[rows, :, self._start : pad].zero_()
        self._values[rows, :, self._start : pad].zero_()
        self._keys[rows, :, pad : self._end].copy_(keys)
        self._values[rows, :, pad : self._end].copy_(values)
        self._rows = rows.stop

    def _reallocate(self, left: int, right: int) -> None:
        """New buffers for `capacity` rows with `left` free columns before the live ones and
        `right` after them, the live ones copied in."""
        keys, values = self.keys, self.values
        size = [self._capacity, keys.shape[1], left + keys.shape[-2] + right, keys.shape[3]]
        self._keys, self._values = keys.new_empty(size), values.new_empty(size)
        self._start, self._end = left, left + keys.shape[-2]
        self._keys[: self._rows, :, self._start : self._end].copy_(keys)
        self._values[: self._rows, :, self._start : self._end].copy_(values)


def batch_cache(cache: DynamicCache, rows: int) -> DynamicCache:
    """A prefilled request's cache, as the first row of a decode batch of up to `rows` rows whose
    layers grow in place."""
    cache.layers = [RoomyLayer(layer.keys, layer.values, rows) for layer in cache.layers]
    return cache
