"""The debugger against known faults: `counterfact bench faults` run three times on the same
seed, side by side with the log-only baselines, per fault kind over every app shape:
- log only: the log-reading strategies alone (handoff, grounded);
- with rerun: re-execution added (rerun), and no earlier run of a task in the store;
- with history: tool results compared with the store's earlier runs of the task too (history),
  the clean runs the faults were aimed at being those earlier runs, as yesterday's are in a
  user's store.

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

ARMS = {"log only": ("handoff", "grounded"), "with rerun": ("handoff", "grounded", "rerun"),
        "with history": ("history", "handoff", "grounded", "rerun")}
APART = {"log only", "with rerun"}  # arms whose clean runs are kept in a store of their own


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
            clean = TraceStore.open(str(Path(tmp) / f"{arm.replace(' ', '_')}_clean.db")) if arm in APART else None
            results[arm] = run_fault_bench(
                store, shapes=shapes, kinds=fault_names(), runs=args.runs, model=args.model, seed=args.seed,
                strategies=strategies, clean_store=clean,
                on_progress=lambda done, total, t=task: progress.update(t, completed=done, total=total),
            )
            for opened in (store, clean):
                if opened is not None:
                    opened.close()
    kinds = [k for k in fault_names() if any(r.kind == k for r in results["with rerun"].rows)]
    table = Table(title=f"faulted runs by kind over {len(shapes)} app shapes (model {args.model}, seed {args.seed})")
    for column in ("kind", "runs", *(f"top-1 {arm}" for arm in ARMS), "top-3 with history", "agent with history",
                   *(f"repaired {arm}" for arm in ARMS), "replays with rerun", "replays with history",
                   *(f"{b}" for b in BASELINES)):
        table.add_column(column, justify="left" if column == "kind" else "right", no_wrap=column == "kind")
    for kind in [*kinds, "all"]:
        rows = {arm: _merged(bench, kind) for arm, bench in results.items()}
        full = rows["with history"]
        table.add_row(kind, str(full["runs"]), *(f"{rows[arm]['top1_step']:.0%}" for arm in ARMS),
                      f"{full['top3_step']:.0%}", f"{full['agent']:.0%}", *(f"{rows[arm]['repaired']:.0%}" for arm in ARMS),
                      f"{rows['with rerun']['median_replays']:g}", f"{full['median_replays']:g}",
                      *(f"{full['baselines'][b]:.0%}" for b in BASELINES))
    console.print(table)
    skipped = results["with history"].skipped
    console.print("tries that made no faulted run: " + ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    if args.json:
        args.json.write_text(json.dumps({arm: bench.model_dump(exclude={"cases"}) for arm, bench in results.items()}, indent=2))


def _merged(bench: FaultBench, kind: str) -> dict:
    """One kind's scores over every shape (or all of them), from the cases."""
    cases = [c for c in bench.cases if kind == "all" or c.truth.kind == kind]
    return rates("all", kind, cases).model_dump()


if __name__ == "__main__":
    main()
