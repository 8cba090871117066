"""What JSON-schema constrained decoding costs per generated token on the embedded model.

Run: .venv/bin/python benchmarks/bench_constrained.py   # --max-tokens 48 --rounds 3

Eight hypothesis prompts ask for a JSON object with step/agent/reason fields, decoded greedily
in two ways: batched (all eight submitted at once from a thread pool, so the engine decodes them
together) and one at a time. Each way runs the prompts with the schema
(`GenerationSettings.json_schema`, masked token by token with xgrammar) and without it, cut to
the same number of tokens per prompt as the constrained reply: constrained replies stop as soon
as the object is closed, and the cut keeps the prompt passes and the batch's shape the same on
both sides, so the ratio of ms per token is the cost of the mask alone. A free batched run up
to --max-tokens shows how many replies are valid JSON for the schema without the constraint
(checked by hand: jsonschema is not a dependency). Rounds are interleaved and the fastest of
each row is kept: the machine is shared, so single runs are noisy. The one-time costs are timed on a fresh `Grammars`: the first schema (xgrammar
reads the vocabulary, then compiles), another schema (compile only), and a cached one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from counterfact.agents import (
    ChatMessage,
    Completion,
    GenerationSettings,
    LocalModel,
    ModelRequest,
    load_embedded,
)
from counterfact.agents._constrained import Grammars

AGENTS = ["planner", "researcher", "coder", "reviewer"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "step": {"type": "integer", "minimum": 1, "maximum": 9},
        "agent": {"type": "string", "enum": AGENTS},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["step", "agent", "reason"],
    "additionalProperties": False,
}
ASK = " Answer with a JSON object with the fields step, agent and reason."
PROMPTS = [
    "The planner split the ticket at step 1, the coder wrote the wrong migration at step 2.",
    "The researcher cited a retracted paper at step 3 and the reviewer approved it at step 4.",
    "The deploy failed at step 5 because a column was missing after the coder's change.",
    "The reviewer asked for tests at step 2 but the coder skipped them at step 3.",
    "The planner forgot the customer's deadline at step 1; everything after was late.",
    "At step 4 the researcher summarised the wrong document for the coder.",
    "The coder's loop never ended at step 6 and the run timed out.",
    "The reviewer merged a diff at step 7 that deleted the config file.",
]


def valid(text: str) -> bool:
    """Whether `text` is JSON matching SCHEMA."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and set(value) == {"step", "agent", "reason"}
        and type(value["step"]) is int
        and 1 <= value["step"] <= 9
        and value["agent"] in AGENTS
        and isinstance(value["reason"], str)
        and len(value["reason"]) <= 80
    )


def ask(prompt: str, settings: GenerationSettings) -> ModelRequest:
    return ModelRequest(messages=[ChatMessage(role="user", content=prompt + ASK)], settings=settings)


@dataclass
class Run:
    replies: list[Completion]
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(c.usage.completion_tokens for c in self.replies)

    @property
    def valid(self) -> int:
        return sum(valid(c.text) for c in self.replies)

    @property
    def ms_per_token(self) -> float:
        return self.seconds * 1000 / max(self.tokens, 1)


Way = Callable[[LocalModel, list[GenerationSettings]], Run]


def batched(model: LocalModel, settings: list[GenerationSettings]) -> Run:
    """All prompts submitted at once from a thread pool: the engine decodes them together."""
    jobs = list(zip(PROMPTS, settings, strict=True))
    started = time.perf_counter()
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda job: model.complete(ask(*job)), jobs))
    return Run(replies, time.perf_counter() - started)


def one_at_a_time(model: LocalModel, settings: list[GenerationSettings]) -> Run:
    started = time.perf_counter()
    replies = [
        model.complete(ask(p, s)) for p, s in zip(PROMPTS, settings, strict=True)
    ]
    return Run(replies, time.perf_counter() - started)


def compile_times(model: LocalModel) -> list[tuple[str, float]]:
    """Milliseconds of the one-time costs, on a fresh cache for the model's tokenizer."""
    config = model.model.config
    grammars = Grammars(model.tokenizer, config.vocab_size, model.engine.eos_ids)
    free_reason = {**SCHEMA["properties"], "reason": {"type": "string"}}
    out = []
    for label, schema in [
        ("first schema: vocabulary tables + compile", SCHEMA),
        ("another schema: compile", {**SCHEMA, "properties": free_reason}),
        ("same schema again: cached", SCHEMA),
    ]:
        started = time.perf_counter()
        grammars.compile(schema)
        out.append((label, (time.perf_counter() - started) * 1000))
    return out


def keep_best(best: dict[tuple[str, str], Run], key: tuple[str, str], run: Run) -> None:
    if key not in best or run.ms_per_token < best[key].ms_per_token:
        best[key] = run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    model = load_embedded()
    model.engine.memo.capacity = 0  # every round decodes: repeats are not answered from the memo
    costs = compile_times(model)
    free = GenerationSettings(max_tokens=args.max_tokens)
    constrained = free.model_copy(update={"json_schema": SCHEMA})
    for settings in (free, constrained):  # warm up both paths, alone and batched
        short = settings.model_copy(update={"max_tokens": 4})
        one_at_a_time(model, [short] * len(PROMPTS))
        batched(model, [short] * len(PROMPTS))

    ways: dict[str, Way] = {"batched": batched, "one at a time": one_at_a_time}
    full, paired, schema = "none", "none, cut to JSON's lengths", "json_schema"
    best: dict[tuple[str, str], Run] = {}
    for _ in range(args.rounds):
        keep_best(best, ("batched", full), batched(model, [free] * len(PROMPTS)))
        for way, run in ways.items():
            keep_best(best, (way, schema), run(model, [constrained] * len(PROMPTS)))
            lengths = [c.usage.completion_tokens for c in best[(way, schema)].replies]
            cut = [free.model_copy(update={"max_tokens": n}) for n in lengths]
            keep_best(best, (way, paired), run(model, cut))

    title = (
        f"Constrained decoding on {model.name}: {len(PROMPTS)} prompts, greedy, "
        f"max {args.max_tokens} tokens, CPU, best of {args.rounds}"
    )
    table = Table(title=title)
    for name in (
        "way",
        "schema",
        "valid JSON",
        "tokens",
        "seconds",
        "ms/token",
        "ratio",
    ):
        table.add_column(name, justify="left" if name in ("way", "schema") else "right")
    for way, label in [
        ("batched", full),
        *((w, s) for w in ways for s in (paired, schema)),
    ]:
        run = best[(way, label)]
        ratio = run.ms_per_token / best[(way, paired)].ms_per_token
        table.add_row(
            way,
            label,
            f"{run.valid}/{len(PROMPTS)}",
            str(run.tokens),
            f"{run.seconds:.2f}",
            f"{run.ms_per_token:.1f}",
            f"{ratio:.2f}x" if label != full else "",
        )
    console = Console(width=110)
    console.print(table)
    console.print("ratio: ms/token against free decoding of the same number of tokens")
    for label, ms in costs:
        console.print(f"{label}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
