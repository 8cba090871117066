"""One prompt sampled again with other seeds, as a sampled verification's pairs and the resample
strategy ask it: the prompt's partial last block recomputed each time (the prefix cache's tails
off) against taken from the prefix cache with its logits (on), on the embedded model.

Run: .venv/bin/python benchmarks/bench_prompt_repeats.py [--prompt 700] [--samples 8] [--tokens 16] [--rounds 3]

Each round runs both arms, in alternating order, on a fresh prefix cache; each arm sends the
same prompt `--samples` times, one after another, each with its own seed. The table gives the
median seconds per request after the first, the prompt passes, and the ratio on/off; the
tokens of both arms are compared, so the time is not bought with another answer.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from counterfact.agents import load_embedded
from counterfact.agents._engine import Request
from counterfact.agents._prefix_cache import PrefixCache


def arm(model: object, prompt: list[int], samples: int, tokens: int, tails: bool
        ) -> tuple[list[float], int, list[list[int]]]:
    """Seconds of each request after the first, prompt passes, and the tokens."""
    engine = model.engine  # type: ignore[attr-defined]
    engine.prefix = PrefixCache()
    if not tails:
        engine.prefix.get_tail = lambda ids: None  # type: ignore[method-assign]
    passes = 0
    forward = engine._forward

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal passes
        passes += 1
        return forward(*args, **kwargs)

    engine._forward = counted
    seconds, picked = [], []
    try:
        for seed in range(samples):
            started = time.perf_counter()
            request = Request(prompt, tokens, ignore_eos=True, temperature=0.9, seed=seed)
            picked.append(engine.submit(request).result().token_ids)
            seconds.append(time.perf_counter() - started)
    finally:
        del engine._forward  # the class's own again
    return seconds[1:], passes, picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", type=int, default=700, help="prompt tokens")
    parser.add_argument("--samples", type=int, default=8, help="requests of the prompt per arm")
    parser.add_argument("--tokens", type=int, default=16, help="tokens each request samples")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    model = load_embedded()
    model.forget_answers()
    text = "The town council met to discuss the new bridge, the market and the harbour. " * 60
    prompt = model.tokenizer(text)["input_ids"][: args.prompt]
    times: dict[bool, list[float]] = {False: [], True: []}
    passes: dict[bool, int] = {False: 0, True: 0}
    for round_ in range(args.rounds):
        answers = {}
        for tails in ((False, True) if round_ % 2 == 0 else (True, False)):
            seconds, count, answers[tails] = arm(model, prompt, args.samples, args.tokens, tails)
            times[tails] += seconds
            passes[tails] = count
        if answers[False] != answers[True]:
            raise SystemExit("the arms sampled different tokens")
        console.print(f"round {round_ + 1} of {args.rounds}: the same tokens in both arms")
    table = Table(title=f"{args.samples} samples of one {len(prompt)}-token prompt, {args.tokens} tokens each")
    for column in ("prefix cache", "median s / request after the first", "prompt passes per arm"):
        table.add_column(column)
    for tails in (False, True):
        table.add_row("blocks and tails" if tails else "blocks only", f"{statistics.median(times[tails]):.3f}",
                      str(passes[tails]))
    console.print(table)
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    console.print(f"ratio with tails / blocks only: {ratio:.2f}")


if __name__ == "__main__":
    main()
