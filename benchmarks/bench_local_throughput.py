"""Local engine throughput on the embedded model, against HF `generate`, alone and batched.

Run: .venv/bin/python benchmarks/bench_local_throughput.py
Targets: single-stream >= 1.0x HF generate; 8 concurrent requests >= 3x single-stream.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

import torch
from rich.console import Console
from rich.table import Table

from counterfact.agents import ChatMessage, LocalModel, load_embedded
from counterfact.agents._engine import Request, Result

NEW_TOKENS = 64
CONCURRENT = 8
ROUNDS = 3  # interleaved, best of: this machine is shared, so single runs are noisy


def hf_generate(model: LocalModel, ids: list[int]) -> tuple[float, list[int]]:
    """Tokens/s of HF greedy `generate`, forced to produce NEW_TOKENS tokens."""
    inputs = torch.tensor([ids])
    with torch.inference_mode():
        started = time.perf_counter()
        out = model.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
        elapsed = time.perf_counter() - started
    return NEW_TOKENS / elapsed, out[0, len(ids) :].tolist()


def engine_single(model: LocalModel, ids: list[int]) -> tuple[float, list[int]]:
    started = time.perf_counter()
    tokens = model.generate_ids(ids, NEW_TOKENS, ignore_eos=True)
    return len(tokens) / (time.perf_counter() - started), tokens


def engine_concurrent(model: LocalModel, prompts: list[list[int]]) -> float:
    """Aggregate tokens/s with all requests queued at once."""
    started = time.perf_counter()
    futures: list[Future[Result]] = [
        model.engine.submit(Request(ids, NEW_TOKENS, ignore_eos=True)) for ids in prompts
    ]
    total = sum(len(f.result().token_ids) for f in futures)
    return total / (time.perf_counter() - started)

# open-ended questions, so replies run to max_tokens (also the server load benchmark's)
QUESTIONS = [
    "Explain why the sky is blue.",
    "Write a short poem about autumn leaves.",
    "What are the benefits of regular exercise?",
    "Describe how a bicycle works.",
    "Give three tips for learning a new language.",
    "What is photosynthesis?",
    "Tell me a story about a brave mouse.",
    "How do airplanes stay in the air?",
]


def main() -> None:
    model = load_embedded()
    prompts = [model.prompt_ids([ChatMessage(role="user", content=q)]) for q in QUESTIONS]
    model.generate_ids(prompts[0], 4)  # warm up both paths
    hf_generate(model, prompts[0])

    hf_rate = single_rate = batch_rate = 0.0
    for _ in range(ROUNDS):
        rate, hf_tokens = hf_generate(model, prompts[0])
        hf_rate = max(hf_rate, rate)
        rate, our_tokens = engine_single(model, prompts[0])
        single_rate = max(single_rate, rate)
        batch_rate = max(batch_rate, engine_concurrent(model, prompts[:CONCURRENT]))

    title = f"Local engine on {model.name}, {NEW_TOKENS} new tokens, greedy, CPU, best of {ROUNDS}"
    table = Table(title=title)
    table.add_column("run")
    table.add_column("tokens/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("HF model.generate, 1 stream", f"{hf_rate:.1f}", "1.00x")
    table.add_row("engine, 1 stream", f"{single_rate:.1f}", f"{single_rate / hf_rate:.2f}x vs HF")
    table.add_row(
        f"engine, {CONCURRENT} concurrent (aggregate)",
        f"{batch_rate:.1f}",
        f"{batch_rate / single_rate:.2f}x vs 1 stream",
    )
    console = Console()
    console.print(table)
    console.print(f"same tokens as HF generate: {our_tokens == hf_tokens}")


if __name__ == "__main__":
    main()
