"""Many writers on one PostgreSQL database: recording against LangGraph's PostgresSaver alone.

WRITERS processes (multiprocessing, fork) each run the graph of bench_recording.py (a NODES-node
loop over a `messages` channel, STEPS node executions per run, durability "sync") RUNS times,
each run its own thread/run, all into one database:

  pg-lg    LangGraph's PostgresSaver (one connection per process)
  pg-ours  record(graph, TraceStore(postgresql://...)): the whole trace + checkpoints

Each writer does one untimed warm-up run, then waits at a start barrier, so that the timed runs
of all writers overlap (the table shows how much: the span in which all of them were running,
as a share of the whole). Aggregate steps/s = all timed steps / (last writer's end - first
writer's start). The two configurations alternate over REPS repetitions, each in a fresh
database; the median is reported. Afterwards every run is checked: for pg-ours each run is
`succeeded` with exactly STEPS dense step rows and a checkpoint per super-step, for pg-lg each
thread holds a checkpoint per super-step, so a fast figure cannot come from lost work.

    .venv/bin/python benchmarks/bench_pg_writers.py [--writers 8 --steps 300 --runs 2 --reps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from bench_recording import (  # this script's directory is on sys.path
    _input,
    build_graph,
    pg_database,
)
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from counterfact.graphs import record
from counterfact.store import TraceStore
from counterfact.store.schema import Checkpoint, Run, Step

CONFIGS = ("pg-lg", "pg-ours")


@dataclass
class WriterResult:
    runs: list[str]  # run ids (pg-ours) or thread ids (pg-lg)
    start: float  # time.monotonic() (system-wide on Linux) when the timed runs began
    end: float


def writer(config: str, url: str, nodes: int, steps: int, runs: int, barrier: Any, out: Any) -> None:
    """One writer process: warm up, wait for the others, then time `runs` runs."""
    graph = build_graph(nodes, steps)
    limit = {"recursion_limit": steps + 10}
    with contextlib.ExitStack() as stack:
        if config == "pg-ours":
            store = stack.enter_context(TraceStore.open(url, migrate=False))
            recorded = record(graph, store, workflow="bench")

            def run() -> str:
                return recorded.invoke(_input(), config=limit).run_id
        else:
            from langgraph.checkpoint.postgres import PostgresSaver

            saver = stack.enter_context(PostgresSaver.from_conn_string(url))
            compiled = graph.compile(checkpointer=saver)

            def run() -> str:
                thread = uuid.uuid4().hex
                compiled.invoke(_input(), {"configurable": {"thread_id": thread}, **limit}, durability="sync")
                return thread

        run()  # warm-up, untimed and not checked
        barrier.wait()
        start = time.monotonic()
        ids = [run() for _ in range(runs)]
        out.put(WriterResult(ids, start, time.monotonic()))


def check(config: str, url: str, ids: list[str], steps: int) -> None:
    """Every timed run stored all its steps (and checkpoints); SystemExit otherwise."""
    problems = []
    if config == "pg-ours":
        with TraceStore.open(url, migrate=False) as store, store.engine.connect() as conn:
            for run_id in ids:
                status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar_one()
                n, lo, hi = conn.execute(
                    select(func.count(), func.min(Step.index), func.max(Step.index)).where(Step.run_id == run_id)
                ).one()
                cps = conn.execute(select(func.count()).where(Checkpoint.thread_id == run_id)).scalar_one()
                if status != "succeeded" or (n, lo, hi) != (steps, 0, steps - 1) or cps < steps + 1:
                    problems.append(f"run {run_id}: {status}, {n} steps ({lo}..{hi}), {cps} checkpoints")
    else:
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            for thread in ids:
                (cps,) = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread,)).fetchone()
                if cps < steps + 1:
                    problems.append(f"thread {thread}: {cps} checkpoints")
    if problems:
        raise SystemExit(f"{config}: badly recorded runs:\n  " + "\n  ".join(problems[:10]))


def one_repetition(config: str, args: argparse.Namespace, rep: int) -> dict[str, float]:
    with pg_database(f"cf_bench_writers_{config.replace('-', '_')}_{rep}") as url:
        if config == "pg-ours":
            TraceStore.open(url).close()  # migrate once, before the writers start
        else:
            from langgraph.checkpoint.postgres import PostgresSaver

            with PostgresSaver.from_conn_string(url) as saver:
                saver.setup()
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(args.writers)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=writer, args=(config, url, args.nodes, args.steps, args.runs, barrier, out))
            for _ in range(args.writers)
        ]
        for p in procs:
            p.start()
        results: list[WriterResult] = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"{config}: a writer exited with {p.exitcode}")
        ids = [i for r in results for i in r.runs]
        check(config, url, ids, args.steps)
    first, last = min(r.start for r in results), max(r.end for r in results)
    together = max(0.0, min(r.end for r in results) - max(r.start for r in results))
    total = len(ids) * args.steps
    return {
        "steps": total,
        "wall": last - first,
        "steps_per_s": total / (last - first),
        "writer_steps_per_s": statistics.median(len(r.runs) * args.steps / (r.end - r.start) for r in results),
        "overlap": together / (last - first),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--writers", type=int, default=8, help="writer processes")
    ap.add_argument("--steps", type=int, default=300, help="node executions per run")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per writer")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each configuration")
    ap.add_argument("--nodes", type=int, default=3, help="nodes in the loop")
    args = ap.parse_args()
    args.steps = -(-args.steps // args.nodes) * args.nodes  # whole rounds of the loop
    console = Console(width=160)
    console.print(
        f"{args.writers} writers x {args.runs} runs x {args.steps} steps into one PostgreSQL database, "
        f"{args.reps} reps per configuration (alternating), durability=sync"
    )
    results: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for rep in range(args.reps):
        for config in CONFIGS:
            results[config].append(one_repetition(config, args, rep))
            r = results[config][-1]
            console.print(f"  rep {rep} {config}: {r['steps_per_s']:,.0f} steps/s, overlap {r['overlap']:.0%}")

    median = {c: statistics.median(r["steps_per_s"] for r in results[c]) for c in CONFIGS}
    table = Table(title=f"{args.writers} concurrent writers, one PostgreSQL database (median of {args.reps} reps)")
    for col in ("configuration", "steps/s (all writers)", "min..max", "steps/s per writer",
                "µs/step (aggregate)", "all writers running", "vs pg-lg", "runs checked"):
        table.add_column(col, justify="left" if col in ("configuration", "runs checked") else "right")
    for config in CONFIGS:
        rs = results[config]
        rate = median[config]
        table.add_row(
            config,
            f"{rate:,.0f}",
            f"{min(r['steps_per_s'] for r in rs):,.0f}..{max(r['steps_per_s'] for r in rs):,.0f}",
            f"{statistics.median(r['writer_steps_per_s'] for r in rs):,.0f}",
            f"{1e6 / rate:,.0f}",
            f"{min(r['overlap'] for r in rs):.0%}..{max(r['overlap'] for r in rs):.0%}",
            "" if config == "pg-lg" else f"{median['pg-lg'] / rate:.2f}x cost ({rate / median['pg-lg']:.2f}x throughput)",
            f"OK {args.writers * args.runs} runs x{len(rs)} reps",
        )
    console.print(table)


if __name__ == "__main__":
    main()
