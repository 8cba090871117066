"""The decode batch's cache layer against the plain concatenation it replaces: the same keys
and values through growth past its headroom, rows joining and rows leaving."""

from __future__ import annotations

import torch

from counterfact.agents._kv import LEFT, ROOM, RoomyLayer


def _kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, length, 8, generator=g), torch.randn(batch, 3, length, 8, generator=g)


def _left_padded(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    length = max(top.shape[-2], bottom.shape[-2])
    pad = [torch.nn.functional.pad(t, (0, 0, length - t.shape[-2], 0)) for t in (top, bottom)]
    return torch.cat(pad)


def test_steps_past_the_headroom_keep_every_token() -> None:
    keys, values = _kv(2, 5, seed=0)
    layer = RoomyLayer(keys, values)
    expected_k, expected_v = keys, values
    for step in range(ROOM * 2 + 3):  # two reallocations
        k, v = _kv(2, 1, seed=step + 1)
        got_k, got_v = layer.update(k, v)
        expected_k, expected_v = torch.cat([expected_k, k], dim=-2), torch.cat([expected_v, v], dim=-2)
        assert torch.equal(got_k, expected_k) and torch.equal(got_v, expected_v)
    assert layer.get_seq_length() == 5 + ROOM * 2 + 3


def test_a_joining_row_is_right_aligned_and_a_leaving_row_takes_its_columns() -> None:
    keys, values = _kv(1, 7, seed=0)
    layer = RoomyLayer(keys, values)
    longer_k, longer_v = _kv(1, 12, seed=1)
    layer.stack_below(longer_k, longer_v)
    assert torch.equal(layer.keys, _left_padded(keys, longer_k))
    assert torch.equal(layer.values, _left_padded(values, longer_v))
    k, v = _kv(2, 1, seed=2)
    layer.update(k, v)
    # the longer row leaves: only the first row's 7 + 1 columns remain
    layer.select(torch.tensor([0]), first=12 - 7)
    assert torch.equal(layer.keys, torch.cat([keys, k[:1]], dim=-2))
    assert torch.equal(layer.values, torch.cat([values, v[:1]], dim=-2))
    layer.update(*_kv(1, 1, seed=3))
    assert layer.get_seq_length() == 9


def test_rows_join_in_place_until_a_prompt_outgrows_the_room_before_them() -> None:
    first_k, first_v = _kv(1, 5, seed=0)
    layer = RoomyLayer(first_k, first_v, rows=4)
    buffer = layer._keys
    expected_k, expected_v = first_k, first_v
    for seed, length in ((1, 9), (2, 3)):  # fits in the room: the same buffers
        k, v = _kv(1, length, seed=seed)
        layer.stack_below(k, v)
        expected_k, expected_v = _left_padded(expected_k, k), _left_padded(expected_v, v)
        assert layer._keys is buffer
    assert torch.equal(layer.keys, expected_k) and torch.equal(layer.values, expected_v)
    k, v = _kv(1, 9 + LEFT + 1, seed=3)  # longer than the room before the batch: new buffers
    layer.stack_below(k, v)
    assert layer._keys is not buffer
    assert torch.equal(layer.keys, _left_padded(expected_k, k)) and torch.equal(layer.values, _left_padded(expected_v, v))
    assert layer.get_seq_length() == 9 + LEFT + 1
    # the second and fourth rows stay: they move up in place
    kept = layer.keys[[1, 3]].clone()
    layer.select(torch.tensor([1, 3]), first=0)
    assert torch.equal(layer.keys, kept)
