"""How well the debugger does on the failed runs of the built-in demo, per strategy.

For each strategy on its own (llm, resample, patch), debug sessions run on the same failed demo
runs (embedded model, greedy agents, so one replay per arm decides a hypothesis exactly), and
the table shows: the share of failed runs repaired by a validated intervention, the share of
hypotheses decided (validated or refuted) rather than inconclusive or skipped, and replays and
wall time per decided hypothesis. For reference, DoVer repaired 17.6 to 27.5 percent of failed
trials with GPT-4o and left 29 to 67 percent of its hypotheses inconclusive.

    .venv/bin/python benchmarks/bench_debugger.py --db demo.db [--runs 6 --budget 20 --samples 4]

With no --db, the demo suite is run first into a temporary store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.graphs import (  # noqa: E402
    DEMO_SUITE,
    DEMO_WORKFLOW,
    ModelPool,
    load_suite,
    load_workflow,
    run_suite,
)
from counterfact.interventions import Budget, Debugger, DebugReport, Replayer  # noqa: E402
from counterfact.traces import TraceStore  # noqa: E402


def session(
    store: TraceStore, pool: ModelPool, run_id: str, strategy: str, budget: int, samples: int
) -> tuple[DebugReport, float]:
    started = time.perf_counter()
    debugger = Debugger(
        Replayer(store, run_id, pool=pool), strategies=[strategy], budget=Budget(replays=budget),  # type: ignore[list-item]
        trials=1, samples=samples,
    )
    return debugger.run(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a store with demo runs (else the demo is run first)")
    parser.add_argument("--runs", type=int, default=6, help="failed runs to debug")
    parser.add_argument("--budget", type=int, default=20, help="replays per debug session")
    parser.add_argument("--samples", type=int, default=4, help="fresh samples per resampled step")
    parser.add_argument("--concurrency", type=int, default=3, help="sessions at once (the engine batches)")
    args = parser.parse_args()
    console = Console(width=150)
    tmp = tempfile.TemporaryDirectory()
    store = TraceStore.open(args.db or str(Path(tmp.name) / "demo.db"))
    pool = ModelPool("embedded")
    if not args.db:
        run_suite(load_workflow(DEMO_WORKFLOW), load_suite(DEMO_SUITE), store, pool=pool)
    failed = [
        r.id for r in store.list_runs(status="failed", workflow="demo", limit=None)
        if r.parent_run_id is None and r.labels.get("suite") == "demo"
    ][: args.runs]
    console.print(f"debugging {len(failed)} failed demo runs, budget {args.budget} replays per session")
    table = Table(title="Debugger on failed demo runs (embedded model)")
    for column in ("strategy", "runs", "repaired", "hypotheses", "decided", "validated", "refuted",
                   "replays / decided", "seconds / decided"):
        table.add_column(column, justify="right")
    for strategy in ("resample", "patch", "llm"):
        with ThreadPoolExecutor(max_workers=args.concurrency) as executor:
            outcomes = list(
                executor.map(lambda r: session(store, pool, r, strategy, args.budget, args.samples), failed)
            )
        hypotheses = [h for report, _ in outcomes for h in report.hypotheses]
        decided = [h for h in hypotheses if h.verdict in ("validated", "refuted")]
        repaired = sum(any(h.verdict == "validated" for h in report.hypotheses) for report, _ in outcomes)
        replays = sum(report.spent["replays"] for report, _ in outcomes)
        seconds = sum(s for _, s in outcomes)
        per = (lambda x: f"{x / len(decided):.1f}") if decided else (lambda x: "-")
        table.add_row(
            strategy, str(len(outcomes)), f"{repaired}/{len(outcomes)} ({100 * repaired / max(1, len(outcomes)):.0f}%)",
            str(len(hypotheses)),
            f"{len(decided)}/{len(hypotheses)} ({100 * len(decided) / max(1, len(hypotheses)):.0f}%)",
            str(sum(h.verdict == "validated" for h in hypotheses)),
            str(sum(h.verdict == "refuted" for h in hypotheses)),
            per(replays), per(seconds),
        )
    console.print(table)


if __name__ == "__main__":
    main()
