"""Per-step cost of recording a LangGraph run into the trace store, against LangGraph's savers.

One graph (a loop of NODES nodes over a `messages` channel with `add_messages`, plus a counter)
runs STEPS node executions per run, RUNS runs per repetition, durability "sync". In the
realistic case (the default) each step calls a LangChain chat model on the system prompt and
the last 11 messages, then the lookup tool it asks for, and adds both messages to the state; in
the trivial case a step adds one short message. Under:

  none             no checkpointer (the graph's own cost)
  sqlite-lg        LangGraph SqliteSaver (its setup turns WAL on; synchronous left at FULL)
  sqlite-lg-norm   the same with synchronous=NORMAL (the durability our store uses)
  sqlite-ours      record(graph, TraceStore(sqlite file))  -- whole trace + checkpoints
  pg-lg            LangGraph PostgresSaver on loopback
  pg-ours          record(graph, TraceStore(postgresql://...))
  *-ours+otlp      the same as sqlite-ours / pg-ours with live OpenTelemetry export on
                   (COUNTERFACT_OTLP_ENDPOINT set when the store is opened), sending to a real
                   OTLP/HTTP receiver on 127.0.0.1 in a process of its own
                   (`otlp_receiver.py`), as a collector is

Configurations are interleaved inside each repetition so that machine noise hits all of them
alike; one warm-up repetition is discarded; the median over repetitions is reported. After
every recorded repetition the store is checked: each run must be `succeeded` with exactly
STEPS step rows (dense indices), `step_count` = STEPS, and one checkpoint per super-step, so
a fast number cannot come from a recorder that dropped work. During the warm-up repetition the
SQL statements and commits of each recorded configuration are counted (SQLAlchemy events) and
printed per step. Disk per step is what each database grew by over all repetitions (SQLite: the
file once its WAL is checkpointed; PostgreSQL: pg_database_size), over the steps recorded. Target (the recording-cost issue): `*-ours` at most 1.1x its LangGraph saver
(sqlite-ours vs sqlite-lg, and vs sqlite-lg-norm, the same durability; pg-ours vs pg-lg). For the +otlp configurations the
live exporter is flushed at the end of each repetition, inside the timed window (so all the
export work is charged: the spans made in the recording thread and the batch processor's
encoding and POSTs), and the receiver must have got every span of every run: one per step plus
the run's root, no more, no fewer. Target (the export issue): live export adds at most 2% to
the per-step cost of recording, `*-ours+otlp` against `*-ours`.

    .venv/bin/python benchmarks/bench_recording.py [--steps 300 --runs 3 --reps 5] [--no-pg] [--no-otlp]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import operator
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from otlp_receiver import OtlpReceiver  # this script's directory is on sys.path
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, select

from counterfact.formats._otel import ENDPOINT_ENV, STANDARD_ENDPOINT_ENV, trace_id_of
from counterfact.graphs import record
from counterfact.store import TraceStore
from counterfact.store._steps import checkpoint_after
from counterfact.store.schema import Checkpoint, ModelCall, Run, Step, ToolCall

EXPORT_TARGET = 1.02  # live export: at most 2% on the per-step cost of recording
TARGET = 1.10  # recording: at most 1.1x LangGraph's own saver on the same database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    count: Annotated[int, operator.add]


SYSTEM_PROMPT = (
    "You are a research agent in a team of three. Answer the user's question from facts you look "
    "up with the lookup tool; cite each fact you use, keep the answer short, and hand the work on "
    "to the next agent when your part is done. Never guess a number you have not looked up."
)
WINDOW = 12  # request messages a model call sends: the system prompt and the last 11 of the history


class BenchChatModel(BaseChatModel):
    """A chat model answering at once with a sentence and a lookup call: LangChain's callbacks
    run as for a real model, so recording captures its request and response."""

    @property
    def _llm_type(self) -> str:
        return "bench"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        n = len(messages)
        reply = AIMessage(
            f"Reading the {n} messages so far, the next fact to check is the population of city {n % 97}; "
            "I will look it up before answering.",
            tool_calls=[{"id": f"call_{uuid.uuid4().hex[:12]}", "name": "lookup", "args": {"query": f"city {n % 97}"}}],
            response_metadata={"finish_reason": "tool_calls", "model_name": "bench-model"},
            usage_metadata={"input_tokens": 40 * n, "output_tokens": 32, "total_tokens": 40 * n + 32},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def lookup(query: str) -> str:
    """Look a fact up."""
    return f"{query}: population 1,234,567 (2021 census); area 812 km2; founded 1251; mayor elected 2020."


def _trivial(name: str) -> Callable[[State], dict[str, Any]]:
    def node(state: State) -> dict[str, Any]:
        return {"messages": [AIMessage(f"{name} says {state['count']}")], "count": 1}

    return node


def _realistic(name: str) -> Callable[[State], dict[str, Any]]:
    """A step as an agent takes it: a model call on a window of the history, the tool it asks
    for, and both messages added to the state."""
    model = BenchChatModel()

    def node(state: State) -> dict[str, Any]:
        reply = model.invoke([SystemMessage(SYSTEM_PROMPT), *state["messages"][-(WINDOW - 1):]])
        call = reply.tool_calls[0]
        result = lookup.invoke(call["args"])
        return {"messages": [reply, ToolMessage(result, tool_call_id=call["id"], name=name)], "count": 1}

    return node


CASES = {"trivial": _trivial, "realistic": _realistic}


def build_graph(nodes: int, steps: int, case: str = "realistic") -> StateGraph:
    names = [f"agent_{i}" for i in range(nodes)]
    graph = StateGraph(State)
    make = CASES[case]

    for name in names:
        graph.add_node(name, make(name))
    graph.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        graph.add_edge(a, b)
    graph.add_conditional_edges(
        names[-1], lambda s: END if s["count"] >= steps else names[0], [names[0], END]
    )
    return graph


# -- configurations: each yields a function that performs one run and returns nothing ---------


def _input() -> dict[str, Any]:
    return {"messages": [HumanMessage("start the loop")], "count": 0}


@contextlib.contextmanager
def pg_database(name: str) -> Iterator[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_BASE + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Config:
    """One way of running the graph; `run()` executes one full run."""

    name: str
    store: TraceStore | None = None

    def __init__(self, name: str, disk: Callable[[], int] | None = None) -> None:
        self.name = name
        self.run_ids: list[str] = []
        self.disk = disk  # bytes its database takes now (None: keeps nothing)

    def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Plain(Config):
    def __init__(self, name: str, graph: StateGraph, steps: int, checkpointer: Any,
                 disk: Callable[[], int] | None = None) -> None:
        super().__init__(name, disk)
        self.compiled = graph.compile(checkpointer=checkpointer)
        self.limit = steps + 10
        # without a checkpointer LangGraph 1.2 warns about, then crashes on, `durability`
        self.kwargs = {"durability": "sync"} if checkpointer is not None else {}

    def run(self) -> None:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": self.limit}
        self.compiled.invoke(_input(), config, **self.kwargs)


class Ours(Config):
    def __init__(self, name: str, graph: StateGraph, steps: int, store: TraceStore,
                 receiver: OtlpReceiver | None = None) -> None:
        super().__init__(name, partial(store_bytes, store))
        self.store = store
        self.receiver = receiver  # set: live export on, spans go to this receiver
        if (store.live is not None) != (receiver is not None):
            raise SystemExit(f"{name}: live export is {'on' if store.live else 'off'}, expected the opposite")
        self.recorded = record(graph, store, workflow="bench")
        self.limit = steps + 10

    def run(self) -> None:
        result = self.recorded.invoke(_input(), config={"recursion_limit": self.limit})
        self.run_ids.append(result.run_id)

    def finish(self) -> float:
        """End of a repetition: flush the live exporter (timed by the caller); its seconds."""
        if self.store is None or self.store.live is None:
            return 0.0
        start = time.perf_counter()
        if not self.store.live.flush(timeout_millis=60_000):
            raise SystemExit(f"{self.name}: the live exporter did not flush within 60 s")
        return time.perf_counter() - start


def sqlite_bytes(conn: sqlite3.Connection, path: Path) -> int:
    """The database file's size once its WAL is checkpointed into it and truncated."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def pg_bytes(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def store_bytes(store: TraceStore) -> int:
    """What our store's database takes: its SQLite file (WAL checkpointed) or PostgreSQL database."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return Path(str(store.engine.url.database)).stat().st_size
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())


@contextlib.contextmanager
def live_export_to(url: str) -> Iterator[None]:
    """COUNTERFACT_OTLP_ENDPOINT set while a store is opened (the store reads it then)."""
    os.environ[ENDPOINT_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(ENDPOINT_ENV, None)


def verify_export(cfg: Ours) -> str:
    """Check that the receiver got every span of the runs of `cfg` since the last check: the
    run's root plus one per step, model call and tool call, as the store holds them."""
    assert cfg.store is not None and cfg.receiver is not None
    receiver = cfg.receiver.received()
    if receiver.bad:
        raise SystemExit(f"{cfg.name}: the OTLP receiver got bad requests: {receiver.bad[:3]}")
    expected = 0
    problems = []
    with cfg.store.engine.connect() as conn:
        for run_id in cfg.run_ids:
            want = 1 + sum(
                conn.execute(select(func.count()).select_from(table).join(Step, Step.id == table.step_id)
                             .where(Step.run_id == run_id)).scalar_one()
                for table in (ModelCall, ToolCall)
            ) + conn.execute(select(func.count()).where(Step.run_id == run_id)).scalar_one()
            got, roots = receiver.take(trace_id_of(run_id))
            expected += want
            if (got, roots) != (want, 1):
                problems.append(f"run {run_id}: {got} spans ({roots} roots) received, expected {want} (1 root)")
    if receiver.per_trace:
        problems.append(f"spans of {len(receiver.per_trace)} traces of no run of this repetition")
    if receiver.spans != expected:
        problems.append(f"{receiver.spans} spans received in all, expected {expected}")
    if problems:
        raise SystemExit(f"{cfg.name}: live export lost or duplicated spans:\n  " + "\n  ".join(problems[:10]))
    requests = receiver.requests
    cfg.receiver.reset()
    return f"{expected} spans in {requests} POSTs"


def verify(cfg: Config, steps: int) -> str:
    """Check that every run of `cfg` since the last check is fully recorded; forget them."""
    assert cfg.store is not None
    unlinked = 0
    with cfg.store.engine.connect() as conn:
        for run_id in cfg.run_ids:
            status, step_count = conn.execute(
                select(Run.status, Run.step_count).where(Run.id == run_id)
            ).one()
            n, lo, hi, nodes = conn.execute(
                select(
                    func.count(), func.min(Step.index), func.max(Step.index),
                    func.count(func.distinct(Step.node)),
                ).where(Step.run_id == run_id)
            ).one()
            missing_after = conn.execute(  # a step's after-checkpoint is derived on read
                select(func.count()).where(
                    Step.run_id == run_id, checkpoint_after(Step).is_(None)
                )
            ).scalar_one()
            cps = conn.execute(
                select(func.count()).where(Checkpoint.thread_id == run_id)
            ).scalar_one()
            problems = []
            if status != "succeeded":
                problems.append(f"status {status}")
            if (n, lo, hi, step_count) != (steps, 0, steps - 1, steps):
                problems.append(f"{n} step rows (index {lo}..{hi}, step_count {step_count})")
            if missing_after:  # a step the next checkpoint failed to link: reported, not fatal
                unlinked += missing_after
            if cps < steps + 1:  # input checkpoint + one per node step (sequential loop)
                problems.append(f"only {cps} checkpoints")
            if problems:
                raise SystemExit(f"{cfg.name}: run {run_id} badly recorded: {', '.join(problems)}")
    checked = len(cfg.run_ids)
    cfg.run_ids.clear()
    if unlinked:
        return f"{checked}x{steps} rows; {unlinked}/{checked * steps} lack checkpoint_after"
    return f"OK {checked}x{steps} rows"


@contextlib.contextmanager
def counting_sql(store: TraceStore | None) -> Iterator[list[int]]:
    """[statements, commits] on `store`'s engine while inside (nothing without a store)."""
    if store is None:
        yield []
        return
    counts = [0, 0]

    def statement(*_: Any) -> None:
        counts[0] += 1

    def commit(*_: Any) -> None:
        counts[1] += 1

    event.listen(store.engine, "before_cursor_execute", statement)
    event.listen(store.engine, "commit", commit)
    try:
        yield counts
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)
        event.remove(store.engine, "commit", commit)


def summarize(notes: list[str]) -> str:
    """One line for a configuration's checks over all repetitions."""
    if not notes:
        return "-"
    lacking = [int(n.split("; ")[1].split("/")[0]) for n in notes if "lack" in n]
    head = f"{notes[0].removeprefix('OK ').split(';')[0]} x{len(notes)} reps"
    if not lacking:
        return "OK " + head
    total = notes[-1].split("/")[1].split()[0]
    return f"{head}; {min(lacking)}..{max(lacking)}/{total} lack checkpoint_after"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="node executions per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per repetition")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (after 1 warm-up)")
    ap.add_argument("--nodes", type=int, default=3, help="nodes in the loop")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL configurations")
    ap.add_argument("--no-otlp", action="store_true", help="skip the live-export (+otlp) configurations")
    ap.add_argument("--case", choices=sorted(CASES), default="realistic",
                    help="realistic: each step a model call, a tool call and chat payloads; trivial: one message")
    args = ap.parse_args()
    # live export only where this script turns it on (the store reads these when it is opened)
    for name in (ENDPOINT_ENV, STANDARD_ENDPOINT_ENV):
        os.environ.pop(name, None)
    # the loop only exits after its last node: a run executes a whole number of rounds
    args.steps = -(-args.steps // args.nodes) * args.nodes
    console = Console(width=160)
    graph = build_graph(args.nodes, args.steps, args.case)
    tmp = Path(tempfile.mkdtemp(prefix="cf_bench_rec_"))
    configs: list[Config] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        configs.append(Plain("none", graph, args.steps, None))

        lg_conn = sqlite3.connect(tmp / "lg.db", check_same_thread=False)
        stack.callback(lg_conn.close)
        lg = SqliteSaver(lg_conn)
        lg.setup()  # executes PRAGMA journal_mode=WAL
        configs.append(Plain("sqlite-lg", graph, args.steps, lg, partial(sqlite_bytes, lg_conn, tmp / "lg.db")))

        lgn_conn = sqlite3.connect(tmp / "lg_normal.db", check_same_thread=False)
        stack.callback(lgn_conn.close)
        lgn = SqliteSaver(lgn_conn)
        lgn.setup()
        lgn_conn.execute("PRAGMA synchronous=NORMAL")
        configs.append(Plain("sqlite-lg-norm", graph, args.steps, lgn,
                             partial(sqlite_bytes, lgn_conn, tmp / "lg_normal.db")))

        ours_sqlite = TraceStore.open(str(tmp / "ours.db"))
        stack.callback(ours_sqlite.close)
        configs.append(Ours("sqlite-ours", graph, args.steps, ours_sqlite))

        receiver: OtlpReceiver | None = None
        if not args.no_otlp:
            receiver = stack.enter_context(OtlpReceiver())
            with live_export_to(receiver.url):
                otlp_sqlite = TraceStore.open(str(tmp / "ours_otlp.db"))
            stack.callback(otlp_sqlite.close)
            configs.append(Ours("sqlite-ours+otlp", graph, args.steps, otlp_sqlite, receiver))

        if not args.no_pg:
            lg_url = stack.enter_context(pg_database("cf_bench_rec_lg"))
            pg_lg = stack.enter_context(PostgresSaver.from_conn_string(lg_url))
            pg_lg.setup()
            configs.append(Plain("pg-lg", graph, args.steps, pg_lg, partial(pg_bytes, lg_url)))
            ours_url = stack.enter_context(pg_database("cf_bench_rec_ours"))
            ours_pg = TraceStore.open(ours_url)
            stack.callback(ours_pg.close)
            configs.append(Ours("pg-ours", graph, args.steps, ours_pg))
            if receiver is not None:
                otlp_url = stack.enter_context(pg_database("cf_bench_rec_ours_otlp"))
                with live_export_to(receiver.url):
                    otlp_pg = TraceStore.open(otlp_url)
                stack.callback(otlp_pg.close)
                configs.append(Ours("pg-ours+otlp", graph, args.steps, otlp_pg, receiver))

        journal = lg_conn.execute("PRAGMA journal_mode").fetchone()[0]
        with ours_sqlite.engine.connect() as c:
            ours_journal = c.exec_driver_sql("PRAGMA journal_mode").scalar()
        console.print(
            f"graph: {args.nodes}-node loop, {args.steps} steps/run, {args.runs} runs/rep, "
            f"{args.reps} reps + 1 warm-up; journal: SqliteSaver={journal}, ours={ours_journal}"
        )
        if receiver is not None:
            console.print(f"live export (+otlp): OTLP/HTTP to {receiver.url}/v1/traces, flushed inside the "
                          "timed window at the end of each repetition")

        flushes: dict[str, list[float]] = {}
        exported: dict[str, list[str]] = {}

        times: dict[str, list[float]] = {c.name: [] for c in configs}
        checks: dict[str, list[str]] = {}
        disk_before = {c.name: c.disk() for c in configs if c.disk is not None}
        for rep in range(args.reps + 1):
            for cfg in configs:
                gc.collect()
                counting = counting_sql(cfg.store) if rep == 0 else contextlib.nullcontext([])
                start = time.perf_counter()
                with counting as counts:
                    for _ in range(args.runs):
                        cfg.run()
                flushed = cfg.finish() if isinstance(cfg, Ours) else 0.0
                elapsed = time.perf_counter() - start
                if counts:
                    n = args.runs * args.steps
                    console.print(f"  {cfg.name}: {counts[0] / n:.2f} SQL statements and {counts[1] / n:.2f} "
                                  "commits per step (warm-up rep, runs' own start and finish included)")
                if isinstance(cfg, Ours) and cfg.receiver is not None:
                    exported.setdefault(cfg.name, []).append(verify_export(cfg))
                if cfg.store is not None:
                    checks.setdefault(cfg.name, []).append(verify(cfg, args.steps))
                if rep > 0:
                    times[cfg.name].append(elapsed / (args.runs * args.steps))
                    flushes.setdefault(cfg.name, []).append(flushed / (args.runs * args.steps))
            console.print(f"  rep {rep}{' (warm-up)' if rep == 0 else ''} done")
        recorded = args.runs * args.steps * (args.reps + 1)
        disk = {c.name: (c.disk() - disk_before[c.name]) / recorded for c in configs if c.disk is not None}

    per_step = {name: statistics.median(v) for name, v in times.items()}
    table = Table(title=f"Recording cost per step (median of {args.reps} reps, durability=sync)")
    for col, just in [
        ("configuration", "left"), ("steps/s", "right"), ("µs/step", "right"),
        ("min..max µs/step", "right"), ("vs none", "right"), ("ratio", "right"), ("disk/step", "right"),
        ("vs ours without export", "right"), ("rows checked", "left"),
    ]:
        table.add_column(col, justify=just, no_wrap=col == "ratio",  # type: ignore[arg-type]
                         max_width=16 if col.startswith("vs ours") else None)
    baseline_of = {"sqlite-ours": "sqlite-lg", "pg-ours": "pg-lg"}
    for name, t in per_step.items():
        ratio = ""
        plain = name.removesuffix("+otlp")
        if plain == "sqlite-ours":
            ratio = (
                f"{t / per_step['sqlite-lg']:.2f}x sqlite-lg, "
                f"{t / per_step['sqlite-lg-norm']:.2f}x sqlite-lg-norm"
            )
        elif plain in baseline_of:
            ratio = f"{t / per_step[baseline_of[plain]]:.2f}x pg-lg"
        vs_plain = ""
        if name.endswith("+otlp"):
            vs_plain = f"{t / per_step[plain]:.3f}x (+{(t - per_step[plain]) * 1e6:,.0f} µs)"
        table.add_row(
            name,
            f"{1 / t:,.0f}",
            f"{t * 1e6:,.0f}",
            f"{min(times[name]) * 1e6:,.0f}..{max(times[name]) * 1e6:,.0f}",
            f"+{(t - per_step['none']) * 1e6:,.0f} µs",
            ratio,
            f"{disk[name] / 1024:,.1f} KiB" if name in disk else "-",
            vs_plain,
            summarize(checks.get(name, [])),
        )
    console.print(table)
    # sqlite-lg-norm: LangGraph's saver at the durability our store runs at (synchronous=NORMAL)
    for ours, theirs in [("sqlite-ours", "sqlite-lg"), ("sqlite-ours", "sqlite-lg-norm"), ("pg-ours", "pg-lg")]:
        if ours in per_step:
            r = per_step[ours] / per_step[theirs]
            paired = sorted(a / b for a, b in zip(times[ours], times[theirs], strict=True))
            verdict = "[green]PASS[/]" if r <= TARGET else "[red]FAIL[/]"
            console.print(f"{ours} / {theirs}: {r:.2f}x (target <= {TARGET}x) {verdict}; same-rep ratios "
                          f"{statistics.median(paired):.2f}x median, {paired[0]:.2f}..{paired[-1]:.2f}")
    for plain in ("sqlite-ours", "pg-ours"):
        name = plain + "+otlp"
        if name in per_step:
            r = per_step[name] / per_step[plain]
            paired = sorted(a / b for a, b in zip(times[name], times[plain], strict=True))
            flush = statistics.median(flushes[name]) * 1e6
            verdict = "[green]PASS[/]" if r <= EXPORT_TARGET else "[red]FAIL[/]"
            console.print(
                f"{name} / {plain}: {r:.3f}x (target <= {EXPORT_TARGET}x: live export adds at most 2%) {verdict}; "
                f"same-rep ratios {statistics.median(paired):.3f}x median, {paired[0]:.3f}..{paired[-1]:.3f}; "
                f"end-of-rep flush {flush:.0f} µs/step of it; the receiver got every span, "
                f"{exported[name][-1]} in the last rep, x{len(exported[name])} reps"
            )


if __name__ == "__main__":
    main()
