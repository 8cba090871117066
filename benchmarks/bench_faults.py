"""The debugger against known faults: `counterfact bench faults` run twice on the same seed, once
with the log-reading strategies alone (handoff, grounded) and once with re-execution added
(rerun), side by side with the log-only baselines, per fault kind over every app shape.

    .venv/bin/python benchmarks/bench_faults.py [--runs 9] [--seed 0] [--model scripted] [--json FILE]

Run from the repository root (the example app shapes are the examples' multi-agent apps; the
`pipeline` shape is the built-in demo workflow on its suite, on counterfact's own models). Exits non-zero
on errors only, not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.bench import (  # noqa: E402
    BASELINES,
    SHAPES,
    FaultBench,
    fault_names,
    rates,
    run_fault_bench,
    shape_named,
)
from counterfact.store import TraceStore  # noqa: E402

ARMS = {"log only": ("handoff", "grounded"), "with rerun": ("handoff", "grounded", "rerun")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="faulted runs per shape and kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="scripted", help="scripted, embedded, ... (see `counterfact bench faults --help`)")
    parser.add_argument("--shape", action="append", help="app shape (repeat); default: every shape that runs on --model")
    parser.add_argument("--json", type=Path, help="write both arms' rows and overall scores here")
    args = parser.parse_args()
    console = Console() if Console().is_terminal else Console(width=200)
    results: dict[str, FaultBench] = {}
    shapes = [shape_named(s) for s in args.shape] if args.shape else [s for s in SHAPES.values() if s.runs_on(args.model)]
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console) as progress:
        for arm, strategies in ARMS.items():
            task = progress.add_task(arm, total=None)
            store = TraceStore.open(str(Path(tmp) / f"{arm.replace(' ', '_')}.db"))
            results[arm] = run_fault_bench(
                store, shapes=shapes, kinds=fault_names(), runs=args.runs, model=args.model, seed=args.seed,
                strategies=strategies, on_progress=lambda done, total, t=task: progress.update(t, completed=done, total=total),
            )
            store.close()
    kinds = [k for k in fault_names() if any(r.kind == k for r in results["with rerun"].rows)]
    table = Table(title=f"faulted runs by kind over {len(shapes)} app shapes (model {args.model}, seed {args.seed})")
    for column in ("kind", "runs", "top-1 log only", "top-1 with rerun", "top-3 with rerun", "agent with rerun",
                   "repaired log only", "repaired with rerun", "replays with rerun", *(f"{b}" for b in BASELINES)):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in [*kinds, "all"]:
        rows = {arm: _merged(bench, kind) for arm, bench in results.items()}
        log, rerun = rows["log only"], rows["with rerun"]
        table.add_row(kind, str(rerun["runs"]), f"{log['top1_step']:.0%}", f"{rerun['top1_step']:.0%}",
                      f"{rerun['top3_step']:.0%}", f"{rerun['agent']:.0%}", f"{log['repaired']:.0%}",
                      f"{rerun['repaired']:.0%}", f"{rerun['median_replays']:g}",
                      *(f"{rerun['baselines'][b]:.0%}" for b in BASELINES))
    console.print(table)
    skipped = results["with rerun"].skipped
    console.print("tries that made no faulted run: " + ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    if args.json:
        args.json.write_text(json.dumps({arm: bench.model_dump(exclude={"cases"}) for arm, bench in results.items()}, indent=2))


def _merged(bench: FaultBench, kind: str) -> dict:
    """One kind's scores over every shape (or all of them), from the cases."""
    cases = [c for c in bench.cases if kind == "all" or c.truth.kind == kind]
    return rates("all", kind, cases).model_dump()


if __name__ == "__main__":
    main()
