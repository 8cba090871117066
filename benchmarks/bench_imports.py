"""Start-up cost of importing counterfact's packages, with and without torch.

Until the hardening round, `counterfact.agents` and `counterfact.interventions` imported torch
at module level, so every import below paid for torch (and transformers) even for a user of
remote models only. Now torch loads only with a local model. Each import is timed in a fresh
interpreter, alternating "as now" with "torch imported first" (what every one of these imports
cost before), `--reps` times, and the medians are compared side by side.

    .venv/bin/python benchmarks/bench_imports.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from rich.console import Console
from rich.table import Table

MODULES = (
    "counterfact.store",
    "counterfact.graphs",
    "counterfact.agents",
    "counterfact.interventions",
    "counterfact.cli",
)
OPENAI_BACKEND = "from counterfact.agents import OpenAIChatModel"


def _seconds(statement: str, *, torch_first: bool) -> tuple[float, bool]:
    """Wall time of `statement` in a new interpreter (torch's own import counted when asked),
    and whether torch ended up loaded."""
    code = (
        "import sys, time; t = time.perf_counter(); "
        + ("import torch, transformers; " if torch_first else "")
        + statement
        + "; print(time.perf_counter() - t, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    _seconds("import counterfact", torch_first=True)  # warm the file cache once
    statements = {m: f"import {m}" for m in MODULES} | {"OpenAI backend": OPENAI_BACKEND}
    table = Table(title=f"import time, median of {args.reps} fresh interpreters")
    for column in ("import", "now s", "torch loaded now", "with torch s (as before)", "before / now"):
        table.add_column(column, justify="left" if column == "import" else "right", no_wrap=column == "import")
    for name, statement in statements.items():
        now: list[float] = []
        before: list[float] = []
        loaded = False
        for _ in range(args.reps):
            seconds, loaded = _seconds(statement, torch_first=False)
            now.append(seconds)
            before.append(_seconds(statement, torch_first=True)[0])
        fast, slow = statistics.median(now), statistics.median(before)
        table.add_row(name, f"{fast:.2f}", "yes" if loaded else "no", f"{slow:.2f}", f"{slow / fast:.1f}x")
        console.print(f"{name}: {fast:.2f} s now, {slow:.2f} s with torch", highlight=False)
    console.print(table)


if __name__ == "__main__":
    main()
