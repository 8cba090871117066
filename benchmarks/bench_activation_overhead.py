"""What an activation edit costs per forward pass on the embedded model, against pyvene.

Run: .venv/bin/python benchmarks/bench_activation_overhead.py   # --prefill-rounds 40 --decode-rounds 300

One model object (SmolLM2-135M, fp32, CPU), one input: a prefill pass over a 200-token prompt,
and single decode steps at position 200 over that prompt's KV cache. Each forward is called as
the engine calls it (`cache=`, `use_cache=True`; prefill with `logits_to_keep=1`) under
inference mode, in four ways:

  HF, no hooks             the bare model (no hook registered anywhere)
  counterfact, no edit     counterfact's HookSet registered, idle (what every request pays)
  counterfact, add         HookSet with one `add` at layer LAYER, positions "all"
  pyvene, add              pyvene AdditionIntervention, same layer/vector, every position

Rounds are interleaved (each round times each variant once, in a shuffled order), after warm-up.
The table gives the median time, the 10th-90th percentile, and the median over rounds of the
ratio to "HF, no hooks" in the same round (paired, so slow drift of the shared machine cancels).
Targets: counterfact add <= 1.05x, and no more overhead than pyvene.

pyvene removes every forward and pre-forward hook of the model it wraps on each call, counterfact's
included, so hooks are cleared and a fresh HookSet registered before each variant (untimed).
Before timing, the counterfact and pyvene edits are checked to give the same logits.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyvene as pv
import torch
from rich.console import Console
from rich.table import Table
from transformers import DynamicCache

from counterfact.agents import ActivationEdit, ChatMessage, LocalModel, load_embedded
from counterfact.agents._activations import HookSet, RowPass, resolve_edits

PROMPT_TOKENS = 200
LAYER = 15
VARIANTS = ["HF, no hooks", "counterfact, no edit", "counterfact, add", "pyvene, add"]
TEXT = (
    "Three agents work on one ticket. The planner reads the customer's report, splits it into "
    "steps and hands each step to the coder, who edits the files and runs the tests; the "
    "reviewer reads every diff, asks for changes when a test is missing, and closes the ticket "
    "once the build is green. Yesterday the run failed: the planner asked for a database "
    "migration, the coder wrote it against the wrong schema version, the reviewer approved it "
    "because the tests did not cover migrations, and the deploy stopped on a missing column. "
) * 4


def strip_hooks(model: torch.nn.Module) -> None:
    """Remove every forward and pre-forward hook (what pyvene does to its model on each call)."""
    for module in model.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()


def fresh_hooks(model: LocalModel) -> HookSet:
    """Clear the model's hooks and register a new HookSet, as LocalModel does when it loads."""
    strip_hooks(model.model)
    layers = list(model.model.model.layers)
    return HookSet(layers, model.geometry)


@dataclass
class Inputs:
    """One forward pass's arguments: a prefill or a decode step over a fixed cache."""

    ids: torch.Tensor  # [1, tokens]
    start: int  # absolute position of the first token
    prompt_len: int
    cache_of: Callable[[], DynamicCache]  # the cache to pass (fresh for prefill)
    after: Callable[[DynamicCache], None]  # undo the pass's cache growth (untimed)
    extra: dict[str, Any]


def forward(model: LocalModel, inputs: Inputs, cache: DynamicCache) -> torch.Tensor:
    out = model.model(input_ids=inputs.ids, cache=cache, use_cache=True, **inputs.extra)
    return out.logits[0, -1]


def run_variant(
    name: str, model: LocalModel, inputs: Inputs, vector: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """Set up `name` (untimed), time one forward pass, and return (seconds, last logits)."""
    edit = ActivationEdit(layer=LAYER, positions="all", vector=vector.tolist())
    cache = inputs.cache_of()
    positions = list(range(inputs.ids.shape[1]))
    if name.startswith("counterfact"):
        hooks = fresh_hooks(model)
        edits = resolve_edits([edit], model.geometry) if name.endswith("add") else []
        started = time.perf_counter()
        hooks.begin_pass([RowPass(inputs.start, inputs.prompt_len, edits)])
        try:
            logits = forward(model, inputs, cache)
        finally:
            hooks.end_pass()
        elapsed = time.perf_counter() - started
    elif name.startswith("pyvene"):
        strip_hooks(model.model)
        config = {"layer": LAYER, "component": "block_output",
                  "intervention_type": pv.AdditionIntervention}
        wrapped = pv.IntervenableModel(pv.IntervenableConfig([config]), model.model)
        base = {"input_ids": inputs.ids, "cache": cache, "use_cache": True, **inputs.extra}
        started = time.perf_counter()
        _, out = wrapped(base, unit_locations={"base": [[positions]]}, source_representations=vector)
        elapsed = time.perf_counter() - started
        logits = out.logits[0, -1]
    else:
        strip_hooks(model.model)
        started = time.perf_counter()
        logits = forward(model, inputs, cache)
        elapsed = time.perf_counter() - started
    inputs.after(cache)
    return elapsed, logits


def check_agreement(model: LocalModel, inputs: Inputs, vector: torch.Tensor) -> str:
    """counterfact's and pyvene's edited logits agree, and differ from the unedited ones."""
    _, bare = run_variant(VARIANTS[0], model, inputs, vector)
    _, ours = run_variant(VARIANTS[2], model, inputs, vector)
    _, theirs = run_variant(VARIANTS[3], model, inputs, vector)
    same = (ours - theirs).abs().max().item()
    moved = (ours - bare).abs().max().item()
    if same > 1e-4 or moved < 1e-2:
        raise SystemExit(f"edits disagree: |ours - pyvene| = {same}, |ours - bare| = {moved}")
    return f"|counterfact - pyvene| = {same:.1e}, |edit effect| = {moved:.2f}"


def measure(
    model: LocalModel, inputs: Inputs, vector: torch.Tensor, rounds: int, warmup: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per variant: the times of each round, and each round's ratio to the bare model."""
    rng = random.Random(0)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(warmup + rounds):
        order = VARIANTS[:]
        rng.shuffle(order)
        gc.collect()
        gc.disable()  # a collection inside one variant's timing would be charged to it
        try:
            took = {v: run_variant(v, model, inputs, vector)[0] for v in order}
        finally:
            gc.enable()
        if i < warmup:
            continue
        for v in VARIANTS:
            times[v].append(took[v])
            ratios[v].append(took[v] / took[VARIANTS[0]])
    return {v: (times[v], ratios[v]) for v in VARIANTS}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefill-rounds", type=int, default=40)
    parser.add_argument("--decode-rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    model = load_embedded()
    torch.manual_seed(0)
    vector = torch.randn(model.geometry.hidden_size) * 0.5
    ids = model.prompt_ids([ChatMessage(role="user", content=TEXT)])[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS, "the text must tokenize to at least PROMPT_TOKENS tokens"

    with torch.inference_mode():
        prefill = Inputs(
            torch.tensor([ids]), 0, PROMPT_TOKENS,
            lambda: DynamicCache(config=model.model.config), lambda _c: None,
            {"logits_to_keep": 1},
        )
        strip_hooks(model.model)
        shared = DynamicCache(config=model.model.config)
        model.model(input_ids=torch.tensor([ids]), cache=shared, use_cache=True, logits_to_keep=1)

        def trim(cache: DynamicCache) -> None:
            """Drop the decode step's key/value so every step runs at the same position."""
            extra = cache.get_seq_length() - PROMPT_TOKENS
            if extra:
                cache.crop(-extra)

        decode = Inputs(
            torch.tensor([[ids[-1]]]), PROMPT_TOKENS, PROMPT_TOKENS,
            lambda: shared, trim,
            {"position_ids": torch.tensor([[PROMPT_TOKENS]])},
        )
        notes = {
            "prefill": check_agreement(model, prefill, vector),
            "decode": check_agreement(model, decode, vector),
        }
        results = {
            "prefill": measure(model, prefill, vector, args.prefill_rounds, args.warmup),
            "decode": measure(model, decode, vector, args.decode_rounds, args.warmup * 4),
        }
        model.engine.hooks = fresh_hooks(model)  # leave the engine with working hooks

    rounds = {"prefill": args.prefill_rounds, "decode": args.decode_rounds}
    table = Table(
        title=f"Activation edit overhead per forward, {model.name}, fp32 CPU, "
        f"{torch.get_num_threads()} threads, add at layer {LAYER}, all positions"
    )
    for column in ("pass", "variant", "median ms", "p10-p90 ms", "vs no hooks", "over ms"):
        table.add_column(column, justify="left" if column in ("pass", "variant") else "right")
    for phase, per_variant in results.items():
        label = f"{phase} ({PROMPT_TOKENS} tok)" if phase == "prefill" else f"decode @{PROMPT_TOKENS}"
        base_ms = statistics.median(per_variant[VARIANTS[0]][0]) * 1000
        for v in VARIANTS:
            times, ratios = per_variant[v]
            median_ms = statistics.median(times) * 1000
            table.add_row(
                f"{label}, n={rounds[phase]}" if v == VARIANTS[0] else "",
                v,
                f"{median_ms:.2f}",
                f"{percentile(times, 0.1) * 1000:.2f}-{percentile(times, 0.9) * 1000:.2f}",
                f"{statistics.median(ratios):.3f}x",
                f"{median_ms - base_ms:+.2f}",
            )
        table.add_section()
    console = Console(width=110)
    console.print(table)
    for phase, note in notes.items():
        console.print(f"{phase}: {note}")
    # Other processes on the machine show up as wide p10-p90 ranges; the load says whether.
    console.print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    for phase, per_variant in results.items():
        ours = statistics.median(per_variant["counterfact, add"][1])
        theirs = statistics.median(per_variant["pyvene, add"][1])
        verdict = "ok" if ours <= 1.05 and ours <= theirs else "MISSED"
        console.print(
            f"{phase}: counterfact add {ours:.3f}x (target <= 1.05x), pyvene {theirs:.3f}x: {verdict}"
        )


if __name__ == "__main__":
    main()
