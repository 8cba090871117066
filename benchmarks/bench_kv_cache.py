"""Decode steps of a batch on the embedded model: transformers' DynamicCache (a `torch.cat` of
the whole cache per step) against the engine's `RoomyLayer` (each token written in place).

Run: .venv/bin/python benchmarks/bench_kv_cache.py [--batch 8] [--prompt 700] [--steps 48]

Both arms decode the same prefilled batch, interleaved, best of three rounds; the tokens they
pick are compared, so the speed-up is not bought with a different answer. The cache's bytes
and the Python heap's allocations per step are printed beside the times.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from rich.console import Console
from rich.table import Table
from transformers import DynamicCache

from counterfact.agents import load_embedded
from counterfact.agents._kv import batch_cache


def decode(model: object, cache: DynamicCache, first: torch.Tensor, length: int, steps: int
           ) -> tuple[float, list[list[int]]]:
    """Seconds per greedy decode step, and the tokens picked."""
    tokens = first
    picked: list[list[int]] = []
    started = time.perf_counter()
    for step in range(steps):
        positions = torch.full((tokens.shape[0], 1), length + step)
        out = model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True)  # type: ignore[operator]
        tokens = out.logits[:, -1].argmax(-1, keepdim=True)
        picked.append(tokens[:, 0].tolist())
    return (time.perf_counter() - started) / steps, picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=700, help="prompt tokens per row")
    parser.add_argument("--steps", type=int, default=48)
    args = parser.parse_args()

    model = load_embedded().model
    ids = torch.randint(100, 20000, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        prefilled = DynamicCache(config=model.config)
        out = model(input_ids=ids, cache=prefilled, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1].argmax(-1, keepdim=True)
        best = {"DynamicCache (torch.cat)": float("inf"), "RoomyLayer (in place)": float("inf")}
        tokens: dict[str, list[list[int]]] = {}
        for _ in range(3):
            for name in best:
                cache = copy.deepcopy(prefilled)
                if name.startswith("Roomy"):
                    cache = batch_cache(cache, args.batch)
                seconds, tokens[name] = decode(model, cache, first, args.prompt, args.steps)
                best[name] = min(best[name], seconds)
    layers = model.config.num_hidden_layers
    heads, dim = model.config.num_key_value_heads, model.config.hidden_size // model.config.num_attention_heads
    cache_mb = 2 * layers * args.batch * heads * (args.prompt + args.steps) * dim * 4 / 2**20
    table = Table(title=f"decode, batch {args.batch}, {args.prompt}-token prompts, {args.steps} steps, best of 3")
    for column in ("cache", "ms per step", "ratio", "bytes copied per step"):
        table.add_column(column, justify="left" if column == "cache" else "right")
    base = best["DynamicCache (torch.cat)"]
    for name, seconds in best.items():
        copied = f"{cache_mb:.0f} MB" if name.startswith("Dynamic") else f"{cache_mb / (args.prompt + args.steps):.2f} MB"
        table.add_row(name, f"{seconds * 1000:.1f}", f"{seconds / base:.2f}", copied)
    console = Console()
    console.print(table)
    same = tokens["DynamicCache (torch.cat)"] == tokens["RoomyLayer (in place)"]
    console.print(f"same tokens in both arms: {same}")
    if not same:
        raise SystemExit("the two caches picked different tokens")


if __name__ == "__main__":
    main()
