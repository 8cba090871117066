"""The prompt-prefix cache: hits give the same tokens as misses, and it is bounded."""

from __future__ import annotations

from pathlib import Path

import torch

from counterfact.agents import ChatMessage, GenerationSettings, LocalModel, ModelRequest
from counterfact.agents._prefix_cache import PrefixCache

from .passes import CountingPasses

SYSTEM = "You answer questions about places. " * 20  # several blocks, shared by every prompt


def ask(model: LocalModel, name: str) -> list[int]:
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=f"Tell me about {name}.")]
    request = ModelRequest(messages=messages, settings=GenerationSettings(max_tokens=12))
    return model.engine.submit(model._request(request, None, None, ignore_eos=True)).result().token_ids


def test_cached_prefixes_give_the_same_tokens_as_a_cold_engine(tiny_dir: Path) -> None:
    warm = LocalModel(tiny_dir, name="warm", memo_size=0)  # every request reaches the prompt pass
    try:
        first = [ask(warm, name) for name in ("Ostend", "Brill", "Ostend")]
        hits = warm.engine.prefix.hits
        assert hits >= 2  # the shared system prompt came from the cache the second and third time
        cold = LocalModel(tiny_dir, name="cold", memo_size=0)
        try:
            assert [ask(cold, "Ostend"), ask(cold, "Brill")] == first[:2]
        finally:
            cold.close()
        assert first[0] == first[2]
    finally:
        warm.close()


def test_requests_that_edit_activations_neither_read_nor_fill_the_cache(tiny: LocalModel) -> None:
    edit = {"layer": 0, "positions": "all", "operation": "add", "vector": [0.5] * tiny.geometry.hidden_size}
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="Edited?")]
    settings = GenerationSettings(max_tokens=2)
    tiny.complete(ModelRequest(messages=messages, settings=settings))  # the prompt's blocks and tail are kept
    cache = tiny.engine.prefix
    before = (cache.hits, cache.misses, cache.tail_hits, len(cache))
    tiny.complete(ModelRequest(messages=messages, settings=settings, activation_edits=[edit]))
    assert (cache.hits, cache.misses, cache.tail_hits, len(cache)) == before


def test_least_recently_used_blocks_go_first() -> None:
    kv = [(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))]  # 16 bytes a block
    cache = PrefixCache(block=2, max_bytes=32)
    ids = [1, 2, 3, 4, 5, 6]
    cache.put(ids, 2, kv)
    cache.put(ids, 4, kv)
    assert cache.get(ids, 2) is kv  # now the most recent
    cache.put(ids, 6, kv)
    assert cache.get(ids, 4) is None
    assert cache.get(ids, 2) is kv and cache.get(ids, 6) is kv
    assert cache.get([9, 9, 3, 4], 4) is None  # keyed by the whole prefix, not the block alone


def test_the_bound_is_in_bytes_whatever_the_block_size() -> None:
    small = [(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))]  # 64 bytes
    large = [(torch.zeros(1, 1, 2, 16), torch.zeros(1, 1, 2, 16))]  # 256 bytes
    cache = PrefixCache(block=2, max_bytes=300)
    ids = [1, 2, 3, 4, 5, 6]
    cache.put(ids, 2, small)
    cache.put(ids, 4, small)
    assert len(cache) == 2 and cache.nbytes == 128
    cache.put(ids, 6, large)  # 384 bytes in all: both small blocks go, oldest first
    assert cache.get(ids, 2) is None and cache.get(ids, 4) is None
    assert cache.get(ids, 6) is large and cache.nbytes == 256
    cache.put(ids, 6, small)  # the same prefix again replaces its block, counted once
    assert len(cache) == 1 and cache.nbytes == 64
    cache.put([7, 8], 2, [(torch.zeros(1, 1, 2, 32), torch.zeros(1, 1, 2, 32))])  # 512 bytes: never kept
    assert cache.get([7, 8], 2) is None and cache.nbytes == 64


def test_the_default_bound_keeps_the_cache_small_on_the_embedded_model() -> None:
    """SmolLM2-135M: 30 layers of 3 KV heads of 64 in fp32, 64-token blocks (2.9 MB each)."""
    cache = PrefixCache()
    block = [(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)) for _ in range(30)]
    for end in range(64, 64 * 200, 64):
        cache.put(list(range(64 * 200)), end, block)
    assert cache.nbytes <= 64 * 2**20 and len(cache) == 64 * 2**20 // (30 * 2 * 3 * 64 * 64 * 4) == 22


def sampled(model: LocalModel, seed: int) -> list[int]:
    """The pairs of a sampled verification: one prompt, a seed each."""
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="Tell me about Ghent.")]
    settings = GenerationSettings(max_tokens=8, temperature=0.9, seed=seed)
    return model.engine.submit(model._request(ModelRequest(messages=messages, settings=settings), None, None,
                                              ignore_eos=True)).result().token_ids


def test_a_prompt_passed_again_takes_its_last_block_and_logits_from_the_cache(
    tiny: LocalModel, tiny_dir: Path, counted: CountingPasses
) -> None:
    tiny.engine.prefix = PrefixCache()  # nothing of earlier tests
    first = sampled(tiny, seed=1)
    passes = counted.prefills
    assert passes >= 2  # the system prompt's full blocks, then the partial last one
    again = [sampled(tiny, seed) for seed in (2, 3)]  # other seeds: not answers the memo holds
    assert counted.prefills == passes  # no prompt pass at all: every block and the tail were kept
    assert tiny.engine.prefix.tail_hits == 2
    cold = LocalModel(tiny_dir, name="cold", memo_size=0)
    try:
        assert [sampled(cold, seed) for seed in (1, 2, 3)] == [first, *again]  # a hit changes no token
    finally:
        cold.close()


def test_a_tail_is_kept_apart_from_the_block_of_the_same_prefix_and_counted_in_the_bound() -> None:
    kv = [(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))]  # 16 bytes
    logits = torch.zeros(4)  # 16 bytes
    cache = PrefixCache(block=2, max_bytes=64)
    ids = [1, 2, 3, 4]
    cache.put(ids, 4, kv)
    assert cache.get_tail(ids) is None  # a block ending where a prompt ends is not its tail
    cache.put_tail(ids, kv, logits)
    found = cache.get_tail(ids)
    assert found is not None and found[0] is kv and found[1] is logits
    assert cache.get(ids, 4) is kv and cache.nbytes == 48
    cache.put_tail([5, 6, 7, 8], kv, logits)  # 80 bytes in all: the least recently used entry goes
    assert cache.get_tail(ids) is None and cache.get(ids, 4) is kv and cache.nbytes == 48
    assert cache.get_tail([5, 6, 7]) is None  # keyed by the whole prompt
