"""`counterfact bench faults`: the debugger scored against faults put into live runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from counterfact.cli._common import DbOption, _bar, _open, console


def bench_faults_command(
    runs: Annotated[int, typer.Option(min=1, help="faulted runs per shape and fault kind")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the fault choices and the random baseline")] = 0,
    shapes: Annotated[list[str] | None, typer.Option("--shape", help="app shape (repeat); default: every shape that runs on --model")] = None,
    kinds: Annotated[list[str] | None, typer.Option("--kind", help="fault kind (repeat); default: all")] = None,
    model: Annotated[str, typer.Option(help="scripted, embedded or module:factory for the example apps (embedded is served over HTTP here); embedded, local:PATH or openai:MODEL for the built-in workflows")] = "scripted",
    strategies: Annotated[str, typer.Option("--strategy", help="debugger strategies, comma-separated")] = "history,handoff,grounded,rerun",
    replays: Annotated[int, typer.Option(min=1, help="replay budget of each debug session")] = 12,
    judge: Annotated[str | None, typer.Option(help="model spec for `attribute` (all at once) as one more baseline, e.g. embedded")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the rows and the overall scores here")] = None,
    truth_file: Annotated[Path | None, typer.Option("--truth", help="write the truth of each faulted run here (JSON lines)")] = None,
    db: DbOption = None,
) -> None:
    """Put known faults into live runs of app shapes, debug each faulted run that fails, and
    score where the debugger looked against the truth and against log-only baselines."""
    from counterfact.bench import (
        BASELINES,
        JUDGE_BASELINE,
        SHAPES,
        fault_named,
        fault_names,
        run_fault_bench,
        shape_named,
    )
    from counterfact.interventions import Budget

    chosen = [shape_named(s) for s in shapes] if shapes else [s for s in SHAPES.values() if s.runs_on(model)]
    chosen_kinds = [fault_named(k).name for k in kinds or fault_names()]
    store = _open(db)
    with _bar("faulted runs") as on_progress:
        bench = run_fault_bench(store, shapes=chosen, kinds=chosen_kinds, runs=runs, model=model, seed=seed,
                                strategies=strategies.split(","), budget=Budget(replays=replays), judge=judge,
                                on_progress=on_progress)
    table = Table(title=f"fault benchmark: {len(bench.cases)} faulted runs, model {model}, seed {seed}")
    baselines = [*BASELINES, *([JUDGE_BASELINE] if judge else [])]
    for column in ("shape", "kind", "runs", "top-1 step", "top-3 step", "agent", "repaired", "replays", "seconds",
                   *(f"{b} top-1" for b in baselines)):
        table.add_column(column, justify="left" if column in ("shape", "kind") else "right")
    for row in [*bench.rows, *([bench.overall] if bench.overall else [])]:
        table.add_row(row.shape, row.kind, str(row.runs), f"{row.top1_step:.0%}", f"{row.top3_step:.0%}",
                      f"{row.agent:.0%}", f"{row.repaired:.0%}", f"{row.median_replays:g}", f"{row.median_seconds:.1f}",
                      *(f"{row.baselines.get(b, 0.0):.0%}" for b in baselines))
    (console if console.is_terminal else Console(width=200)).print(table)
    for reason, count in bench.skipped.items():
        console.print(f"{count} tries made no faulted run: {reason}", highlight=False)
    keys = ("shape", "kind", "runs", "top1_step", "top3_step", "agent", "repaired", "median_replays", "median_seconds")
    if json_file is not None:
        rows = [r.model_dump(include=set(keys)) for r in bench.rows]
        overall = bench.overall.model_dump(include=set(keys)) if bench.overall else None
        json_file.write_text(json.dumps({"rows": rows, "overall": overall}, indent=2))
    if truth_file is not None:
        truth_file.write_text("".join(c.truth.model_dump_json() + "\n" for c in bench.cases))
