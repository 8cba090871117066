"""The prompt-prefix cache: hits give the same tokens as misses, and it is bounded."""

from __future__ import annotations

from pathlib import Path

import torch

from counterfact.agents import ChatMessage, GenerationSettings, LocalModel, ModelRequest
from counterfact.agents._prefix_cache import PrefixCache

SYSTEM = "You answer questions about places. " * 20  # several blocks, shared by every prompt


def ask(model: LocalModel, name: str) -> list[int]:
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=f"Tell me about {name}.")]
    request = ModelRequest(messages=messages, settings=GenerationSettings(max_tokens=12))
    return model.engine.submit(model._request(request, None, None, ignore_eos=True)).result().token_ids


def test_cached_prefixes_give_the_same_tokens_as_a_cold_engine(tiny_dir: Path) -> None:
    warm = LocalModel(tiny_dir, name="warm")
    try:
        first = [ask(warm, name) for name in ("Ostend", "Brill", "Ostend")]
        hits = warm.engine.prefix.hits
        assert hits >= 2  # the shared system prompt came from the cache the second and third time
        cold = LocalModel(tiny_dir, name="cold")
        try:
            assert [ask(cold, "Ostend"), ask(cold, "Brill")] == first[:2]
        finally:
            cold.close()
        assert first[0] == first[2]
    finally:
        warm.close()


def test_requests_that_edit_activations_neither_read_nor_fill_the_cache(tiny: LocalModel) -> None:
    edit = {"layer": 0, "positions": "all", "operation": "add", "vector": [0.5] * tiny.geometry.hidden_size}
    before = (tiny.engine.prefix.hits, tiny.engine.prefix.misses)
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="Edited?")]
    settings = GenerationSettings(max_tokens=2)
    tiny.complete(ModelRequest(messages=messages, settings=settings, activation_edits=[edit]))
    assert (tiny.engine.prefix.hits, tiny.engine.prefix.misses) == before


def test_least_recently_used_blocks_go_first() -> None:
    cache = PrefixCache(block=2, capacity=2)
    kv = [(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))]
    ids = [1, 2, 3, 4, 5, 6]
    cache.put(ids, 2, kv)
    cache.put(ids, 4, kv)
    assert cache.get(ids, 2) is kv  # now the most recent
    cache.put(ids, 6, kv)
    assert cache.get(ids, 4) is None
    assert cache.get(ids, 2) is kv and cache.get(ids, 6) is kv
    assert cache.get([9, 9, 3, 4], 4) is None  # keyed by the whole prefix, not the block alone
