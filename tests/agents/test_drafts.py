"""Drafts: a greedy request that carries the answer it is expected to give checks it in a few
passes instead of decoding it, and gives the tokens it gives without one, wherever the draft
goes wrong."""

from __future__ import annotations

import pytest

from counterfact.agents import ChatMessage, LocalModel
from counterfact.agents._engine import Request

from .passes import CountingPasses


def _prompt(tiny: LocalModel, text: str = "Draft me a reply.") -> list[int]:
    return tiny.prompt_ids([ChatMessage(role="user", content=text)])


def _run(tiny: LocalModel, prompt: list[int], new: int, draft: list[int]) -> list[int]:
    return tiny.engine.submit(Request(prompt, new, ignore_eos=True, draft=draft)).result(timeout=60).token_ids


def test_a_right_draft_is_taken_in_a_few_passes(tiny: LocalModel, counted: CountingPasses) -> None:
    prompt = _prompt(tiny)
    decoded = tiny.generate_ids(prompt, 100, ignore_eos=True)
    passes = counted.passes
    assert _run(tiny, prompt, 100, decoded) == decoded
    # the prompt pass (2 blocks at most), then chunks of 16 and 64 tokens: no decode step
    assert counted.passes - passes <= 2 + 3


@pytest.mark.parametrize("wrong_at", [0, 5, 16, 40, 99])
def test_a_draft_that_goes_wrong_gives_the_tokens_of_a_plain_decode(
    tiny: LocalModel, counted: CountingPasses, wrong_at: int
) -> None:
    prompt = _prompt(tiny)
    decoded = tiny.generate_ids(prompt, 100, ignore_eos=True)
    draft = [*decoded[:wrong_at], (decoded[wrong_at] + 1) % 1000, *decoded[wrong_at + 1 :]]
    passes = counted.passes
    assert _run(tiny, prompt, 100, draft) == decoded
    # the tokens after the wrong one are decoded one pass each, the ones before were not
    assert counted.passes - passes <= 2 + 3 + (100 - wrong_at)


def test_a_draft_longer_or_shorter_than_the_answer_changes_nothing(tiny: LocalModel) -> None:
    prompt = _prompt(tiny, "Another reply, please.")
    decoded = tiny.generate_ids(prompt, 40, ignore_eos=True)
    assert _run(tiny, prompt, 40, [*decoded, *decoded]) == decoded
    assert _run(tiny, prompt, 40, decoded[:10]) == decoded


def test_a_drafted_row_joins_the_batch_where_its_draft_ends(tiny: LocalModel) -> None:
    """Two drafted requests and a plain one, queued together, each give their plain tokens."""
    prompts = [_prompt(tiny, text) for text in ("One reply.", "A second, longer reply.", "Third.")]
    plain = [tiny.generate_ids(p, 30, ignore_eos=True) for p in prompts]
    requests = [
        Request(prompts[0], 30, ignore_eos=True, draft=plain[0][:12]),
        Request(prompts[1], 30, ignore_eos=True, draft=[*plain[1][:7], 3]),
        Request(prompts[2], 30, ignore_eos=True),
    ]
    futures = [tiny.engine.submit(r) for r in requests]
    assert [f.result(timeout=60).token_ids for f in futures] == plain


def test_sampled_requests_ignore_their_draft(tiny: LocalModel, counted: CountingPasses) -> None:
    prompt = _prompt(tiny)
    sampled = Request(prompt, 30, ignore_eos=True, temperature=1.0, seed=5)
    tokens = tiny.engine.submit(sampled).result(timeout=60).token_ids
    passes = counted.passes
    again = Request(prompt, 30, ignore_eos=True, temperature=1.0, seed=5, draft=tokens)
    assert tiny.engine.submit(again).result(timeout=60).token_ids == tokens
    # decoded token by token: a pass for each token after the first (the prompt, passed before,
    # comes from the prefix cache with its logits)
    assert counted.passes - passes >= 29
