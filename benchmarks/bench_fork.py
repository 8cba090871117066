"""Time to fork a recorded 100-step run just before a late step (target: under 50 ms).

Forking creates the child run, copies the steps before the fork with their calls, and copies
the step's checkpoint and sibling writes into the child's thread, all in SQL. Measured on a
SQLite file and on PostgreSQL, median of repetitions, forking at several depths.

    .venv/bin/python benchmarks/bench_fork.py [--steps 100 --reps 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.graphs import record  # noqa: E402
from counterfact.store import (  # noqa: E402
    RunRecord,
    TraceStore,
    fork_run,  # noqa: E402
)
from tests.graphs.sample_graphs import loop_graph, loop_input  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def measure(store: TraceStore, steps: int, reps: int) -> dict[int, float]:
    """Median milliseconds to fork the run at a few depths."""
    limit = (steps + 1) // 2  # the loop graph takes 2*limit-1 steps
    run_id = record(loop_graph(), store, workflow="bench").invoke(loop_input(limit)).run_id
    recorded = len(store.steps(run_id, payloads=False))
    out: dict[int, float] = {}
    for at in (recorded // 4, recorded // 2, recorded - 1):
        times = []
        for _ in range(reps):
            child = RunRecord(id=uuid.uuid4().hex, workflow="bench")
            started = time.perf_counter()
            fork_run(store, run_id, at, child)
            times.append((time.perf_counter() - started) * 1000)
        copied = len(store.steps(child.id, payloads=False))
        assert copied == at, f"fork at {at} copied {copied} steps"
        out[at] = statistics.median(times[1:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(TraceStore.open(str(Path(tmp) / "fork.db")), args.steps, args.reps)
    name = f"cf_bench_fork_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        store = TraceStore.open(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
        results["postgresql"] = measure(store, args.steps, args.reps)
        store.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    table = Table(title=f"Fork a recorded run of about {args.steps} steps (median of {args.reps - 1} reps)")
    table.add_column("store")
    table.add_column("fork at step")
    table.add_column("ms", justify="right")
    table.add_column("target < 50 ms")
    for store_name, by_step in results.items():
        for at, ms in by_step.items():
            table.add_row(store_name, str(at), f"{ms:.1f}", "[green]ok[/green]" if ms < 50 else "[red]FAIL[/red]")
    Console().print(table)


if __name__ == "__main__":
    main()
