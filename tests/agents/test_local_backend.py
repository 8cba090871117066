"""LocalModel on a tiny random Llama: decoding, batching, stop rules, records and errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from counterfact.agents import (
    ChatMessage,
    GenerationSettings,
    LocalModel,
    ModelError,
    ModelRequest,
)
from counterfact.agents._engine import Request
from counterfact.capture import collect_calls

PROMPTS = [
    "Hello there",
    "Write a long story about a dragon who learns to cook pasta in a small village",
    "2+2?",
    "List three colours and explain why each of them is pretty",
]


def msgs(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def ask(text: str, settings: GenerationSettings | None = None, **fields: Any) -> ModelRequest:
    """A request of the one user message `text`."""
    return ModelRequest(messages=msgs(text), settings=settings or GenerationSettings(), **fields)


def run_concurrently(model: LocalModel, jobs: list[tuple[str, GenerationSettings]]) -> list[str]:
    """Submit all jobs from threads at once, so the engine batches them."""
    results: list[str] = [""] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        barrier.wait()
        results[i] = model.complete(ask(jobs[i][0], jobs[i][1])).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_greedy_is_deterministic_and_reports_usage(tiny: LocalModel) -> None:
    settings = GenerationSettings(max_tokens=12)
    first = tiny.complete(ask("Hello", settings))
    tiny.engine.memo.clear()  # decoded anew, not answered from the memo
    second = tiny.complete(ask("Hello", settings))
    assert first.text == second.text
    assert first.finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens == len(tiny.prompt_ids(msgs("Hello")))
    assert 1 <= first.usage.completion_tokens <= 12
    assert first.latency_ms > 0
    assert first.model == "tiny"


def test_batched_greedy_equals_alone_token_exact(tiny: LocalModel) -> None:
    """Rows with different prompt lengths, joining one decode loop, give their solo tokens."""
    alone = [tiny.generate_ids(tiny.prompt_ids(msgs(p)), 20, ignore_eos=True) for p in PROMPTS]
    requests = [
        Request(tiny.prompt_ids(msgs(p)), 20 + 3 * i, ignore_eos=True) for i, p in enumerate(PROMPTS)
    ]
    futures = [tiny.engine.submit(r) for r in requests]  # queued together: one batch
    batched = [f.result().token_ids for f in futures]
    assert [b[:20] for b in batched] == alone
    assert [len(b) for b in batched] == [20, 23, 26, 29]


def test_requests_join_a_running_batch(tiny: LocalModel) -> None:
    """A request queued while another decodes gives the same tokens as alone."""
    ids = [tiny.prompt_ids(msgs(p)) for p in PROMPTS[:2]]
    alone = tiny.generate_ids(ids[1], 15, ignore_eos=True)
    long_run = tiny.engine.submit(Request(ids[0], 80, ignore_eos=True))
    late = tiny.engine.submit(Request(ids[1], 15, ignore_eos=True))
    assert late.result().token_ids == alone
    assert not long_run.done()  # it really was running when the late one joined and left
    assert len(long_run.result().token_ids) == 80


def test_seeded_sampling_reproducible_alone_and_batched(tiny: LocalModel) -> None:
    sampled = GenerationSettings(max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    alone = tiny.complete(ask("Tell me a joke", sampled)).text
    tiny.engine.memo.clear()  # the batch decodes it anew
    jobs = [("Tell me a joke", sampled)] + [(p, GenerationSettings(max_tokens=16)) for p in PROMPTS]
    batched = run_concurrently(tiny, jobs)
    assert batched[0] == alone
    other_seed = tiny.complete(ask("Tell me a joke", sampled.model_copy(update={"seed": 8})))
    assert other_seed.text != alone


def test_unseeded_sampling_records_its_seed(tiny: LocalModel) -> None:
    settings = GenerationSettings(max_tokens=8, temperature=0.8)
    with collect_calls() as calls:
        first = tiny.complete(ask("Hi", settings))
    seed = calls.model_calls[0].params["seed"]
    assert isinstance(seed, int)
    replay = tiny.complete(ask("Hi", settings.model_copy(update={"seed": seed})))
    assert replay.text == first.text


def test_stop_strings_and_length(tiny: LocalModel) -> None:
    free = tiny.complete(ask("Hello", GenerationSettings(max_tokens=30, stop=[])))
    assert len(free.text) > 4
    stop = free.text[3:5]
    stopped = tiny.complete(ask("Hello", GenerationSettings(max_tokens=30, stop=[stop])))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    short = tiny.complete(ask("Hello", GenerationSettings(max_tokens=2)))
    assert short.usage.completion_tokens <= 2
    if short.usage.completion_tokens == 2:
        assert short.finish_reason == "length"


def test_acomplete_batches_and_matches_complete(tiny: LocalModel) -> None:
    settings = GenerationSettings(max_tokens=10)
    expected = [tiny.complete(ask(p, settings)).text for p in PROMPTS]

    async def main() -> list[str]:
        done = await asyncio.gather(*(tiny.acomplete(ask(p, settings)) for p in PROMPTS))
        return [c.text for c in done]

    assert asyncio.run(main()) == expected


def test_call_is_reported_to_the_trace(tiny: LocalModel) -> None:
    edit = {"layer": 0, "operation": "scale", "strength": 1.0}
    with collect_calls() as calls:
        done = tiny.complete(
            ask("Hi", GenerationSettings(max_tokens=5, seed=3), activation_edits=[edit])
        )
    (record,) = calls.model_calls
    assert record.backend == "local" and record.model == "tiny"
    assert record.params["seed"] == 3 and record.params["max_tokens"] == 5
    assert record.params["activation_edits"][0]["operation"] == "scale"
    assert record.request == [{"role": "user", "content": "Hi", "tool_calls": []}]
    assert record.response == {"role": "assistant", "content": done.text}
    assert record.finish_reason == done.finish_reason
    assert record.completion_tokens == done.usage.completion_tokens
    assert record.prompt_tokens == done.usage.prompt_tokens
    assert record.activations is None


def test_missing_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        LocalModel(tmp_path / "nope")


def test_unsupported_architecture_is_named(tmp_path: Path, tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(
        tmp_path
    )
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="unsupported architecture GPT2LMHeadModel"):
        LocalModel(tmp_path)


def test_prompt_longer_than_context_says_both_lengths(tiny: LocalModel) -> None:
    with pytest.raises(ModelError, match=r"prompt has \d+ tokens; the context window is 512"):
        tiny.complete(ask("word " * 600))


def test_generation_is_capped_by_the_context_window(tiny: LocalModel) -> None:
    prompt = msgs("word " * 470)
    room = 512 - len(tiny.prompt_ids(prompt))
    assert 0 < room < 60
    done = tiny.complete(ModelRequest(messages=prompt, settings=GenerationSettings(max_tokens=10_000)))
    assert done.usage.completion_tokens <= room
    assert done.finish_reason == "stop" or done.usage.completion_tokens == room


def test_a_failing_request_does_not_stop_the_engine(tiny: LocalModel) -> None:
    bad = tiny.engine.submit(Request([10**7], 4))  # no such token id
    with pytest.raises(IndexError):
        bad.result()
    assert len(tiny.generate_ids(tiny.prompt_ids(msgs("Hi")), 3, ignore_eos=True)) == 3
