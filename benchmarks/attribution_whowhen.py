"""Log-only failure attribution on the Who&When Algorithm-Generated logs, per method.

Run from the repository root:
    .venv/bin/python benchmarks/attribution_whowhen.py                    # all logs, all methods
    .venv/bin/python benchmarks/attribution_whowhen.py --subset 8 --max-prompt-tokens 1024

Imports the logs into a temporary SQLite store, attributes every run with each method on the
model (the embedded SmolLM2-135M by default; runs are worked on concurrently so the local
engine batches them), and prints agent accuracy and exact-step accuracy (integer equality, not
the benchmark's substring match) with the time taken and how many runs had a prompt cut to fit.
`--subset N` runs step_by_step and binary_search (many prompts per run) on the first N logs
only; all_at_once always sees every log, and its row on the subset is printed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from counterfact.agents import resolve_model
from counterfact.formats import import_whowhen
from counterfact.interventions import (
    METHODS,
    Attribution,
    AttributionScore,
    attribute,
    score_attributions,
)
from counterfact.store import TraceStore

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "whowhen"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "Algorithm-Generated")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--subset", type=int, default=None, help="logs for the multi-prompt methods")
    parser.add_argument("--max-prompt-tokens", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    console = Console()
    if not args.data.is_dir():
        console.print(f"[red]no Who&When logs at {args.data.resolve()}[/red]")
        raise SystemExit(1)

    model = resolve_model(args.model)
    rows: list[tuple[str, AttributionScore, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp, TraceStore.open(str(Path(tmp) / "ww.db")) as store:
        run_ids = import_whowhen(store, [args.data]).run_ids
        subset = run_ids[: args.subset] if args.subset else run_ids
        columns = (
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            for method in args.methods:
                ids = run_ids if method == "all_at_once" else subset
                task = progress.add_task(method, total=len(ids))

                def done(_result: Attribution, task_id: int = task) -> None:
                    progress.advance(task_id)

                started = time.perf_counter()
                attribute(
                    store,
                    ids,
                    model,
                    method,
                    max_prompt_tokens=args.max_prompt_tokens,
                    concurrency=args.concurrency,
                    on_done=done,
                )
                elapsed = time.perf_counter() - started
                rows.append((method, score_attributions(store, ids, method), elapsed))
                if method == "all_at_once" and len(subset) < len(ids):
                    on_subset = score_attributions(store, subset, method)
                    rows.append((f"{method} (subset)", on_subset, None))
        console.print(_table(rows, model.name, len(run_ids), args.max_prompt_tokens))


def _table(
    rows: list[tuple[str, AttributionScore, float | None]], model: str, logs: int, cap: int | None
) -> Table:
    budget = f"prompts up to {cap} tokens" if cap else "prompts up to the context window"
    table = Table(title=f"Who&When Algorithm-Generated ({logs} logs), {model}, {budget}")
    for name in ("method", "runs", "agent acc.", "step acc. (exact)", "no prediction",
                 "errors", "runs truncated", "time"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for method, score, seconds in rows:
        table.add_row(
            method,
            str(score.runs),
            f"{score.agent_accuracy:.1%} ({score.agent_correct})",
            f"{score.step_accuracy:.1%} ({score.step_correct}/{score.step_runs})",
            str(len(score.unpredicted)),
            str(score.errors),
            str(score.truncated),
            "" if seconds is None else f"{seconds:.0f} s",
        )
    return table


if __name__ == "__main__":
    main()
