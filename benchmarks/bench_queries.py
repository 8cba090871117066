"""`TraceStore.list_runs` over 100,000 runs and 1,000,000 steps, on SQLite and PostgreSQL.

The data is generated straight into the tables (Core executemany on SQLite, COPY on
PostgreSQL), with skewed distributions: 20 workflows (Zipf-like), statuses 72% succeeded,
16% failed, 8% error, 4% running, each run using 2-5 of 50 agents (Zipf-like popularity),
4-16 steps per run, labels {"env": prod|staging|dev, "team": team-0..9, "seed": n}, created_at
uniform over 90 days. The SQLite file is cached in /tmp (delete it, or pass --regen, to
rebuild); the PostgreSQL database `cf_bench_q` is created and dropped by each run.

Each filter is timed as `store.list_runs(..., limit=100)` (newest first): one warm-up call,
then the median of --calls calls. Queries slower than 100 ms get their plan printed
(EXPLAIN QUERY PLAN / EXPLAIN ANALYZE). --try-fixes then adds candidate indexes and times
every query again, so the table shows before/after.

    .venv/bin/python benchmarks/bench_queries.py [--backends sqlite,pg] [--try-fixes]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, insert, select

from counterfact.store import TraceStore
from counterfact.store.schema import Run, Step

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql://postgres@127.0.0.1:5432/cf_bench_q"
SQLITE_CACHE = Path("/tmp/cf_bench_queries_v1.db")
N_RUNS = 100_000
N_STEPS = 1_000_000
NOW = datetime(2026, 11, 1, 12, 0, 0)
THRESHOLD_MS = 100.0

WORKFLOWS = [f"wf_{i:02d}" for i in range(20)]
AGENTS = [f"agent_{i:02d}" for i in range(50)]
STATUSES = ["succeeded", "failed", "error", "running"]
STATUS_W = [72, 16, 8, 4]


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def generate(seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs and steps as row dicts (exactly N_RUNS runs and N_STEPS steps)."""
    rnd = random.Random(seed)
    wf_w, ag_w = zipf_weights(len(WORKFLOWS)), zipf_weights(len(AGENTS))
    span = 90 * 24 * 3600
    runs: list[dict[str, Any]] = []
    counts = [rnd.randint(4, 16) for _ in range(N_RUNS)]
    diff = N_STEPS - sum(counts)  # nudge the counts so the total is exact
    i = 0
    while diff:
        j = i % N_RUNS
        if diff > 0 and counts[j] < 16:
            counts[j] += 1
            diff -= 1
        elif diff < 0 and counts[j] > 4:
            counts[j] -= 1
            diff += 1
        i += 1
    steps: list[dict[str, Any]] = []
    digest = os.urandom(32).hex()
    for n in counts:
        run_id = uuid.UUID(int=rnd.getrandbits(128)).hex
        created = NOW - timedelta(seconds=rnd.random() * span)
        status = rnd.choices(STATUSES, STATUS_W)[0]
        runs.append(
            {
                "id": run_id,
                "workflow": rnd.choices(WORKFLOWS, wf_w)[0],
                "workflow_hash": digest,
                "task_input": {"question": f"q{rnd.randint(0, 999)}"},
                "status": status,
                "outcome": None,
                "labels": {
                    "env": rnd.choices(["prod", "staging", "dev"], [70, 20, 10])[0],
                    "team": f"team-{rnd.randint(0, 9)}",
                    "seed": str(rnd.randint(0, 4)),
                },
                "total_tokens": rnd.randint(100, 20_000),
                "total_latency_ms": rnd.random() * 60_000,
                "source": "recorded",
                "created_at": created,
                "ended_at": None if status == "running" else created + timedelta(seconds=30),
                "parent_run_id": None,
                "fork_step": None,
                "intervention_id": None,
                "error": "RuntimeError: boom" if status == "error" else None,
                "step_count": n,
                "head_digest": digest,
            }
        )
        team = rnd.choices(AGENTS, ag_w, k=rnd.randint(2, 5))
        for k in range(n):
            agent = team[k % len(team)]
            t = created + timedelta(seconds=k)
            steps.append(
                {
                    "run_id": run_id,
                    "index": k,
                    "node": agent,
                    "agent": agent,
                    "invocation": k // len(team),
                    "kind": "agent",
                    "input_digest": digest,
                    "output_digest": digest,
                    "delta_digest": digest,
                    "checkpoint_before": None,
                    "checkpoint_after": None,
                    "task_id": None,
                    "started_at": t,
                    "ended_at": t,
                    "error": None,
                    "digest": digest,
                }
            )
    return runs, steps


def load_sqlite(store: TraceStore, runs: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    with store.begin() as conn:
        for start in range(0, len(runs), 20_000):
            conn.execute(insert(Run.__table__), runs[start : start + 20_000])
        for start in range(0, len(steps), 50_000):
            conn.execute(insert(Step.__table__), steps[start : start + 50_000])


def load_pg(runs: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    import json

    run_cols = list(runs[0])
    step_cols = list(steps[0])
    with psycopg.connect(PG_URL) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY runs ({', '.join(run_cols)}) FROM STDIN") as copy:
            for r in runs:
                copy.write_row(
                    [json.dumps(r[c]) if c in ("task_input", "labels") else r[c] for c in run_cols]
                )
        quoted = ", ".join(f'"{c}"' for c in step_cols)
        with cur.copy(f"COPY steps ({quoted}) FROM STDIN") as copy:
            for s in steps:
                copy.write_row([s[c] for c in step_cols])
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE runs")
        cur.execute("VACUUM ANALYZE steps")


def open_store(backend: str, regen: bool, console: Console) -> TraceStore:
    if backend == "sqlite":
        if regen and SQLITE_CACHE.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{SQLITE_CACHE}{suffix}").unlink(missing_ok=True)
        fresh = not SQLITE_CACHE.exists()
        if fresh:  # build under a temporary name so an interrupted build is never cached
            tmp = SQLITE_CACHE.with_suffix(".building")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
            t0 = time.perf_counter()
            runs, steps = generate()
            t1 = time.perf_counter()
            store = TraceStore.open(str(tmp))
            load_sqlite(store, runs, steps)
            with store.engine.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            store.close()
            tmp.rename(SQLITE_CACHE)
            console.print(
                f"sqlite: generated in {t1 - t0:.1f}s, loaded in {time.perf_counter() - t1:.1f}s"
                f" -> {SQLITE_CACHE} ({SQLITE_CACHE.stat().st_size / 1e6:.0f} MB)"
            )
        else:
            console.print(f"sqlite: using cached {SQLITE_CACHE} (--regen to rebuild)")
        return TraceStore.open(str(SQLITE_CACHE))
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS cf_bench_q WITH (FORCE)")
        admin.execute("CREATE DATABASE cf_bench_q")
    store = TraceStore.open(PG_URL)  # runs the migrations: the store's own schema and indexes
    t0 = time.perf_counter()
    runs, steps = generate()
    t1 = time.perf_counter()
    load_pg(runs, steps)
    console.print(f"pg: generated in {t1 - t0:.1f}s, COPY + ANALYZE in {time.perf_counter() - t1:.1f}s")
    return store


def queries() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("no filter", {}),
        ("status=failed", {"status": "failed"}),
        ("status=running (4%)", {"status": "running"}),
        ("workflow=wf_00 (top)", {"workflow": "wf_00"}),
        ("workflow=wf_19 (rare)", {"workflow": "wf_19"}),
        ("agent=agent_00 (top)", {"agent": "agent_00"}),
        ("agent=agent_49 (rare)", {"agent": "agent_49"}),
        ("label env=prod", {"labels": {"env": "prod"}}),
        ("label team=team-3", {"labels": {"team": "team-3"}}),
        ("since 7 days", {"since": NOW - timedelta(days=7)}),
        (
            "combo: failed+wf_01+agent_02+env=prod+30d",
            {
                "status": "failed",
                "workflow": "wf_01",
                "agent": "agent_02",
                "labels": {"env": "prod"},
                "since": NOW - timedelta(days=30),
            },
        ),
        (
            "combo rare: error+wf_15+agent_40+team-3",
            {"status": "error", "workflow": "wf_15", "agent": "agent_40", "labels": {"team": "team-3"}},
        ),
    ]


class Capture:
    """The last SELECT the engine ran (to EXPLAIN it with the same parameters)."""

    def __init__(self, store: TraceStore) -> None:
        self.statement: str = ""
        self.params: Any = None
        event.listen(store.engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.statement, self.params = statement, params


def time_query(store: TraceStore, kwargs: dict[str, Any], calls: int) -> tuple[float, int]:
    rows = store.list_runs(limit=100, **kwargs)  # warm-up
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        store.list_runs(limit=100, **kwargs)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), len(rows)


def explain(store: TraceStore, capture: Capture, kwargs: dict[str, Any]) -> str:
    store.list_runs(limit=100, **kwargs)
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        if store.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + capture.statement, capture.params)
            return "\n".join(f"  {'  ' * (r[1] > 0)}{r[3]}" for r in cur.fetchall())
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + capture.statement, capture.params)
        return "\n".join("  " + r[0] for r in cur.fetchall())


# Candidate indexes, applied by --try-fixes (name -> DDL per dialect).
FIXES: dict[str, dict[str, str]] = {
    "sqlite": {
        "ix_steps_agent_run (exists)": "",  # already there; listed for the record
        "ANALYZE": "ANALYZE",
    },
    "postgresql": {
        "gin labels jsonb_path_ops": "CREATE INDEX ix_runs_labels_gin ON runs USING gin (labels jsonb_path_ops)",
    },
}


def run_backend(
    backend: str, args: argparse.Namespace, console: Console
) -> list[tuple[str, float, int, float | None]]:
    store = open_store(backend, args.regen, console)
    capture = Capture(store)
    with store.engine.connect() as c:
        counts = (
            c.execute(select(func.count()).select_from(Run.__table__)).scalar_one(),
            c.execute(select(func.count()).select_from(Step.__table__)).scalar_one(),
        )
    if counts != (N_RUNS, N_STEPS):
        raise SystemExit(f"{backend}: expected {N_RUNS} runs / {N_STEPS} steps, found {counts}")
    results: dict[str, list[Any]] = {}
    for name, kwargs in queries():
        ms, n = time_query(store, kwargs, args.calls)
        results[name] = [ms, n, None]
        if ms > THRESHOLD_MS or args.explain:
            console.print(f"[bold]{backend}: {name}: {ms:.1f} ms[/]\n{explain(store, capture, kwargs)}")
    if args.try_fixes:
        with store.engine.connect() as c:
            for label, ddl in FIXES[store.dialect].items():
                if ddl:
                    t0 = time.perf_counter()
                    c.exec_driver_sql(ddl)
                    c.commit()
                    console.print(f"{backend}: applied {label} in {time.perf_counter() - t0:.1f}s")
            if store.dialect == "postgresql":
                c.exec_driver_sql("ANALYZE runs")
                c.commit()
        for name, kwargs in queries():
            ms, _ = time_query(store, kwargs, args.calls)
            results[name][2] = ms
            if results[name][0] > THRESHOLD_MS:
                console.print(f"[bold]{backend} after fixes: {name}: {ms:.1f} ms[/]\n{explain(store, capture, kwargs)}")
        if backend == "sqlite":  # do not leave the cached file changed
            with store.engine.connect() as c:
                c.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat1")
                c.exec_driver_sql("DROP TABLE IF EXISTS sqlite_stat4")
                c.commit()
    store.close()
    if backend == "pg" and not args.keep:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS cf_bench_q WITH (FORCE)")
    return [(name, *vals) for name, vals in results.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="sqlite,pg")
    ap.add_argument("--calls", type=int, default=7, help="timed calls per query (median)")
    ap.add_argument("--regen", action="store_true", help="rebuild the cached SQLite file")
    ap.add_argument("--explain", action="store_true", help="print every plan, not only slow ones")
    ap.add_argument("--try-fixes", action="store_true", help="add candidate indexes, time again")
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    args = ap.parse_args()
    console = Console(width=160)
    all_results = {b: run_backend(b, args, console) for b in args.backends.split(",")}
    table = Table(title=f"list_runs(limit=100), newest first: median of {args.calls} calls, "
                  f"{N_RUNS:,} runs / {N_STEPS:,} steps")
    table.add_column("filter")
    for b in all_results:
        table.add_column(f"{b} ms", justify="right")
        table.add_column(f"{b} rows", justify="right")
        if args.try_fixes:
            table.add_column(f"{b} ms after", justify="right")
        table.add_column(f"{b} <{THRESHOLD_MS:.0f}ms", justify="center")
    verdict: Callable[[float], str] = lambda ms: "[green]pass[/]" if ms < THRESHOLD_MS else "[red]FAIL[/]"
    for i, (name, _) in enumerate(queries()):
        row = [name]
        for b, res in all_results.items():
            _, ms, n, after = res[i]
            row += [f"{ms:.1f}", str(n)]
            if args.try_fixes:
                row.append(f"{after:.1f}" if after is not None else "-")
            row.append(verdict(ms if after is None else min(ms, after)) if not args.try_fixes else verdict(ms))
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
