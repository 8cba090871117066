"""The viewer (`counterfact ui`) over 100,000 runs: server time of the runs list, of a
1,000-step run's pages, and first paint of those pages in headless Chromium.

Targets (the viewer's issue): the runs list over 100,000 runs answers in under 200 ms of server
time; a 1,000-step run's page is usable, first paint under 2 s in headless Chromium.

Setup: a fresh store (SQLite in a temporary directory by default; `--backend pg` creates and
drops a scratch PostgreSQL database; `--db PATH|URL` reuses a store this script built before, or
fills an empty one). 100,000 runs: all but a few hundred are run rows inserted in bulk (see
`bulk_runs`), with 20 Zipf-weighted workflows (each its own graph label, as the recorder writes),
statuses 72/16/8/4% succeeded/failed/error/running, labels env/team/seed (and a rare
`customer=acme`), task questions, created_at over 90 days. A few hundred runs (`--step-runs`) and
one run of 1,000 steps are written through `TraceStore.write_run`, with chat payloads, one model
call per step and some tool calls.

Server time is the app's own `Server-Timing: app;dur=` header (its middleware: routing, the
store's queries, the template), read through FastAPI's TestClient; wall time per request and the
number of SQL statements each request ran are shown beside it. Each request is sent once to warm
up, then `--reps` times (run pages: half as many, at least 3): median and p95 (nearest rank;
the verdict is on p95). Runs-list queries over 100 ms (or all, with --explain) get their plan
printed (EXPLAIN QUERY PLAN on SQLite, EXPLAIN ANALYZE on PostgreSQL).

First paint: the same app served by uvicorn in a thread of this process, driven by Debian's
Chromium through Playwright; each page is loaded once to warm up, then `--paints` times, each in a
fresh browser context (cold HTTP cache) whose tab is first opened on about:blank (a user's tab is
already open; otherwise Chromium starting the renderer competes with the server for the CPU):
first-contentful-paint, DOMContentLoaded and load from the Performance API, median.

    .venv/bin/python benchmarks/bench_ui.py                    # SQLite in a temp dir
    .venv/bin/python benchmarks/bench_ui.py --backend pg       # scratch PostgreSQL database
    .venv/bin/python benchmarks/bench_ui.py --db /tmp/ui.db    # build once, reuse afterwards

Exits non-zero on errors only, not on a missed target.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import re
import socket
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, insert, select

from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.store import Outcome, RunRecord, StepRecord, TraceStore, utcnow
from counterfact.store._runs import search_text_of
from counterfact.store.schema import Run
from counterfact.ui import create_app

LIST_TARGET_MS = 200.0
PAINT_TARGET_MS = 2000.0
EXPLAIN_OVER_MS = 100.0
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MARK = "bench_ui"  # label of the 1,000-step run: how a reused store is recognised
TOKEN = "bench-ui-token"

WORKFLOWS = [
    "support_triage", "code_review", "web_research", "sql_analyst", "trip_planner",
    "invoice_audit", "bug_fixer", "news_digest", "math_tutor", "contract_qa",
    "kb_answer", "release_notes", "data_cleaning", "translation", "meeting_notes",
    "sales_email", "incident_review", "hr_screening", "recipe_helper", "onboarding",
]
ROLES = ["planner", "researcher", "coder", "critic", "writer", "verifier", "retriever", "router",
         "summarizer", "analyst"]
AGENTS = [r + v for v in ("", "_v2", "_sql", "_web", "_fr") for r in ROLES]  # 50, Zipf by position
STATUSES = ["succeeded", "failed", "error", "running"]
STATUS_W = [72, 16, 8, 4]
CITIES = ["Lisbon", "Osaka", "Lagos", "Lima", "Oslo", "Perth", "Quito", "Hanoi", "Tunis", "Graz",
          "Cork", "Dakar", "Tartu", "Leeds", "Porto", "Kyoto"]
QUESTIONS = [
    "What was the population of {city} in {year}, and how did it change over the following decade?",
    "Find the cheapest train from {city} to {city2} on {date} and summarise the options with times.",
    "Write a Python function that parses the {fmt} export of ticket #{n} and reports malformed rows.",
    "Review pull request #{n} and list the risky changes to the {fmt} loader, with line references.",
    "Summarise support ticket #{n} from a customer in {city} about a refund that arrived late.",
    "Compute the total of invoice INV-{n} and check it against purchase order PO-{n2} line by line.",
]
RARE_QUESTION = "Plan a zeppelin tour over {city} for {n} guests on {date}, with a weather fallback."
_TEXT = (
    "the a of to and in that is for it as with was on be by this are from at or an have not which "
    "result value total table query row column check source answer tool search found number step "
    "agent plan next report error fix data file price date city population invoice order ticket "
    "customer refund review change function test case expected actual because however therefore "
    "first then finally also only about over under between before after during each every some "
    "figure estimate confirm verify compare list summary detail reason evidence cite page section"
)
WORDS = _TEXT.split()


def zipf(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def sentence(rnd: random.Random, words: int) -> str:
    text = " ".join(rnd.choices(WORDS, k=words))
    return text[0].upper() + text[1:] + "."


def paragraph(rnd: random.Random, lo: int, hi: int) -> str:
    out: list[str] = []
    target = rnd.randint(lo, hi)
    while sum(len(s) + 1 for s in out) < target:
        out.append(sentence(rnd, rnd.randint(6, 18)))
    return " ".join(out)


def question(rnd: random.Random, rare: bool) -> str:
    template = RARE_QUESTION if rare else rnd.choice(QUESTIONS)
    return template.format(
        city=rnd.choice(CITIES), city2=rnd.choice(CITIES), year=rnd.randint(1950, 2020),
        date=f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}", fmt=rnd.choice(["CSV", "JSONL", "XML"]),
        n=rnd.randint(1000, 99999), n2=rnd.randint(1000, 99999),
    )


@dataclass
class World:
    """The generated data's shape: each workflow's team and graph label."""

    teams: dict[str, list[str]] = field(default_factory=dict)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_world(seed: int) -> World:
    rnd = random.Random(seed)
    world = World()
    weights = zipf(len(AGENTS))
    for wf in [*WORKFLOWS, "research_team"]:
        team: list[str] = []
        while len(team) < rnd.randint(3, 5):
            agent = rnd.choices(AGENTS, weights)[0]
            if agent not in team:
                team.append(agent)
        if wf == "research_team":
            team = ["planner", "researcher", "coder", "critic", "writer"]
        nodes = ["__start__", *team, "tools", "__end__"]
        edges = [["__start__", team[0], False]]
        edges += [[a, b, False] for a, b in itertools.pairwise(team)]
        edges += [[team[-1], "tools", True], ["tools", team[0], True], [team[-1], "__end__", True]]
        digest = hashlib.sha256(json.dumps([nodes, edges]).encode()).hexdigest()
        world.teams[wf] = team
        world.graphs[wf] = {"ref": f"bench_workflows:{wf}", "digest": digest, "nodes": nodes, "edges": edges}
    return world


def run_labels(rnd: random.Random, world: World, wf: str, task: dict[str, Any]) -> dict[str, Any]:
    labels: dict[str, Any] = {
        "graph": world.graphs[wf],
        "input_digest": hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest(),
        "env": rnd.choices(["prod", "staging", "dev"], [70, 20, 10])[0],
        "team": f"team-{rnd.randint(0, 9)}",
        "seed": str(rnd.randint(0, 4)),
    }
    if rnd.random() < 0.002:
        labels["customer"] = "acme"
    return labels


def outcome_for(rnd: random.Random, status: str) -> Outcome | None:
    if status == "succeeded":
        return Outcome(success=True, score=round(rnd.uniform(0.7, 1.0), 2))
    if status == "failed":
        return Outcome(success=False, score=round(rnd.uniform(0.0, 0.5), 2), detail="expected answer not found")
    return None


def bulk_runs(store: TraceStore, rnd: random.Random, world: World, n: int, now: datetime, console: Console) -> None:
    """Benchmark setup only: run rows (no steps) inserted with SQLAlchemy Core in big batches,
    not through `write_run` (100,000 write_run calls would take minutes). Their step_count is
    0 and their head digest empty, which is what the store holds for a sealed run without steps,
    so each of them still verifies."""
    wf_w = zipf(len(WORKFLOWS))
    span = 90 * 24 * 3600
    t0 = time.perf_counter()
    batch = 10_000
    for start in range(0, n, batch):
        rows = []
        for _ in range(min(batch, n - start)):
            wf = rnd.choices(WORKFLOWS, wf_w)[0]
            status = rnd.choices(STATUSES, STATUS_W)[0]
            created = now - timedelta(seconds=60 + rnd.random() * span)
            task = {"question": question(rnd, rare=rnd.random() < 0.003)}
            outcome = outcome_for(rnd, status)
            run_id = uuid.UUID(int=rnd.getrandbits(128)).hex
            rows.append({
                "id": run_id, "workflow": wf, "search_text": search_text_of(run_id, wf, task),
                "workflow_hash": world.graphs[wf]["digest"], "task_input": task, "status": status,
                "outcome": outcome.model_dump() if outcome else None,
                "labels": run_labels(rnd, world, wf, task),
                "total_tokens": rnd.randint(300, 40_000), "total_latency_ms": rnd.random() * 90_000,
                "source": "recorded", "created_at": created,
                "ended_at": None if status == "running" else created + timedelta(seconds=rnd.randint(5, 300)),
                "parent_run_id": None, "fork_step": None, "intervention_id": None,
                "error": "RuntimeError: tool 'search' timed out" if status == "error" else None,
                "step_count": 0, "head_digest": "",
            })
        with store.begin() as conn:
            conn.execute(insert(Run.__table__), rows)
        done = start + len(rows)
        console.print(f"  run rows written: {done:,}/{n:,} ({time.perf_counter() - t0:.1f} s)")


def make_steps(rnd: random.Random, team: list[str], task: str, count: int, start: datetime,
               fail_at: int | None = None) -> list[StepRecord]:
    """`count` steps of a chat workflow cycling over `team`: each sees the agent's system prompt,
    the task and the previous output, answers with one model call; every 4th calls a tool."""
    steps: list[StepRecord] = []
    t = start
    previous = {"role": "user", "content": task}
    invocations: dict[str, int] = {}
    for index in range(count):
        agent = team[index % len(team)]
        system = {"role": "system", "content": f"You are the {agent} of a team of agents. "
                  "Answer with evidence; use the tools when a figure is needed. Keep it short."}
        messages = [system, {"role": "user", "content": task}]
        if index:
            messages.append(previous)
        content = paragraph(rnd, 200, 700)
        tool_calls: list[ToolCallRecord] = []
        output: dict[str, Any] = {"role": "assistant", "name": agent, "content": content}
        if index % 4 == 3:
            query = " ".join(rnd.choices(WORDS, k=5))
            tool_calls.append(ToolCallRecord(
                name=rnd.choice(["search", "calculator", "sql"]), arguments={"query": query},
                result={"hits": [{"title": sentence(rnd, 6), "snippet": paragraph(rnd, 80, 200)} for _ in range(3)]},
                latency_ms=rnd.uniform(20, 900),
            ))
            output["tool_calls"] = [{"name": tool_calls[0].name, "args": {"query": query}, "id": f"call_{index}"}]
        duration = timedelta(milliseconds=rnd.uniform(300, 4000))
        prompt = sum(len(m["content"]) for m in messages) // 4
        completion = len(content) // 4
        steps.append(StepRecord(
            index=index, node=agent, agent=agent, invocation=invocations.get(agent, 0), kind="agent",
            input=messages, output=output, delta={"messages": [output]},
            started_at=t, ended_at=t + duration,
            error="ValueError: the critic rejected the plan" if index == fail_at else None,
            model_calls=[ModelCallRecord(
                backend="openai", model=rnd.choice(["gpt-4o-mini", "gpt-4o"]),
                params={"temperature": 0.0, "max_tokens": 1024, "seed": 7},
                request=messages, response=output, finish_reason="tool_calls" if tool_calls else "stop",
                prompt_tokens=prompt, completion_tokens=completion, latency_ms=duration.total_seconds() * 900,
            )],
            tool_calls=tool_calls,
        ))
        invocations[agent] = invocations.get(agent, 0) + 1
        previous = {"role": "assistant", "name": agent, "content": content}
        t += duration + timedelta(milliseconds=rnd.uniform(5, 50))
    return steps


def write_with_steps(store: TraceStore, rnd: random.Random, world: World, wf: str, created: datetime,
                     count: int, status: str, labels: dict[str, Any] | None = None) -> str:
    task = {"question": question(rnd, rare=False)}
    steps = make_steps(rnd, world.teams[wf], task["question"], count, created,
                       fail_at=count - 1 if status == "error" else None)
    run = RunRecord(
        id=uuid.UUID(int=rnd.getrandbits(128)).hex, workflow=wf, workflow_hash=world.graphs[wf]["digest"],
        task_input=task, status=status, outcome=outcome_for(rnd, status),
        labels={**run_labels(rnd, world, wf, task), **(labels or {})},
        total_tokens=sum(c.prompt_tokens + c.completion_tokens for s in steps for c in s.model_calls),
        total_latency_ms=sum(c.latency_ms for s in steps for c in s.model_calls),
        created_at=created, ended_at=None if status == "running" else steps[-1].ended_at,
        error="ValueError: the critic rejected the plan" if status == "error" else None,
    )
    store.write_run(run, steps)
    return run.id


@dataclass
class Built:
    long_run: str
    runs: int
    step_runs: int
    agent_counts: dict[str, int]


def build(store: TraceStore, args: argparse.Namespace, console: Console) -> Built:
    rnd = random.Random(args.seed)
    world = make_world(args.seed)
    now = utcnow()
    n_bulk = args.runs - args.step_runs - 1
    console.print(f"building: {n_bulk:,} run rows in bulk, {args.step_runs} runs with steps, "
                  f"1 run of {args.long_steps} steps")
    bulk_runs(store, rnd, world, n_bulk, now, console)
    t0 = time.perf_counter()
    wf_w = zipf(len(WORKFLOWS))
    span = 90 * 24 * 3600
    for i in range(args.step_runs):
        wf = rnd.choices(WORKFLOWS, wf_w)[0]
        created = now - timedelta(seconds=60 + rnd.random() * span)
        write_with_steps(store, rnd, world, wf, created, rnd.randint(4, 12), rnd.choices(STATUSES, STATUS_W)[0])
        if (i + 1) % 100 == 0 or i + 1 == args.step_runs:
            console.print(f"  runs with steps written: {i + 1}/{args.step_runs} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    long_run = write_with_steps(store, rnd, world, "research_team", now - timedelta(seconds=30),
                                args.long_steps, "failed", {MARK: "long-run"})
    console.print(f"  run of {args.long_steps} steps written through write_run in {time.perf_counter() - t0:.1f} s")
    if store.dialect == "sqlite":
        with store.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:  # what autovacuum would have done by the time anyone looks at 100,000 runs
        with store.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
            c.commit()
    return describe(store, long_run)


def describe(store: TraceStore, long_run: str) -> Built:
    from counterfact.store.schema import Step

    with store.engine.connect() as c:
        runs = c.execute(select(func.count()).select_from(Run.__table__)).scalar_one()
        step_runs = c.execute(select(func.count(func.distinct(Step.run_id)))).scalar_one()
        agents = dict(c.execute(select(Step.agent, func.count(func.distinct(Step.run_id))).group_by(Step.agent)).all())
    return Built(long_run=long_run, runs=runs, step_runs=step_runs, agent_counts=agents)


# -- measuring -------------------------------------------------------------------------------


class Sql:
    """Counts the statements the engine runs and keeps the last runs-list SELECT (to EXPLAIN)."""

    def __init__(self, store: TraceStore) -> None:
        self.count = 0
        self.list_statement: tuple[str, Any] | None = None
        event.listen(store.engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        self.count += 1
        if "FROM runs" in statement and "ORDER BY runs.created_at DESC" in statement:
            self.list_statement = (statement, params)


@dataclass
class Timing:
    name: str
    path: str
    server: list[float]
    wall: list[float]
    statements: int
    kb: float
    rows: int | None
    target: float | None
    plan: str = ""

    def median(self) -> float:
        return statistics.median(self.server)

    def p95(self) -> float:
        s = sorted(self.server)
        return s[max(0, math.ceil(0.95 * len(s)) - 1)]


_DUR = re.compile(r"app;dur=([0-9.]+)")


def server_ms(response: Any) -> float:
    match = _DUR.search(response.headers.get("server-timing", ""))
    if not match:
        raise RuntimeError(f"{response.request.url}: no Server-Timing header")
    return float(match.group(1))


def get(client: TestClient, path: str) -> Any:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def time_request(client: TestClient, sql: Sql, name: str, path: str, reps: int, target: float | None) -> Timing:
    first = get(client, path)  # warm-up
    rows = len(first.json()["rows"]) if path.startswith("/api/runs?") else None
    server, wall = [], []
    statements = 0
    for _ in range(reps):
        before = sql.count
        t0 = time.perf_counter()
        response = get(client, path)
        wall.append((time.perf_counter() - t0) * 1000)
        server.append(server_ms(response))
        statements = sql.count - before
    return Timing(name, path, server, wall, statements, len(first.content) / 1024, rows, target)


def explain(store: TraceStore, statement: str, params: Any) -> str:
    with store.engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        if store.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, params)
            return "\n".join(f"    {'  ' * (r[1] > 0)}{r[3]}" for r in cur.fetchall())
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)
        return "\n".join("    " + r[0] for r in cur.fetchall())


def list_cases(built: Built, deep_cursor: str) -> list[tuple[str, str]]:
    counts = {a: n for a, n in built.agent_counts.items() if a}
    common = max(counts, key=lambda a: counts[a])
    rare = min(counts, key=lambda a: (counts[a], a))
    q = lambda **kw: "/api/runs?" + urlencode({"limit": 50, **kw})
    return [
        ("first page (JSON)", q()),
        ("first page (HTML /)", "/"),
        ("page 21 via cursor (JSON)", q(cursor=deep_cursor)),
        ("page 21 via cursor (HTML)", "/?cursor=" + quote(deep_cursor)),
        ("status=running (4%)", q(status="running")),
        ("status=failed (16%)", q(status="failed")),
        ("workflow=support_triage (top)", q(workflow="support_triage")),
        ("workflow=onboarding (rare)", q(workflow="onboarding")),
        ("label env=prod (70%)", q(label="env=prod")),
        ("label team=team-3 (10%)", q(label="team=team-3")),
        ("label customer=acme (0.2%)", q(label="customer=acme")),
        (f"agent={common} ({counts[common]} runs)", q(agent=common)),
        (f"agent={rare} ({counts[rare]} runs)", q(agent=rare)),
        ("text=population (~1/6)", q(text="population")),
        ("text=zeppelin (0.3%)", q(text="zeppelin")),
        ("text=xyzzy (no match)", q(text="xyzzy")),
        ("failed + code_review + env=prod", q(status="failed", workflow="code_review", label="env=prod")),
        ("failed + code_review + env=prod (HTML)", "/?" + urlencode(
            {"status": "failed", "workflow": "code_review", "label": "env=prod"})),
    ]


def measure_server(store: TraceStore, app: Any, built: Built, args: argparse.Namespace,
                   console: Console) -> tuple[list[Timing], list[float]]:
    sql = Sql(store)
    timings: list[Timing] = []
    with TestClient(app, base_url="http://127.0.0.1") as client:
        # Walk 20 pages back through the cursor, as someone paging through the list would.
        cursor, walk = None, []
        for _ in range(20):
            path = "/api/runs?limit=50" + (f"&cursor={quote(cursor)}" if cursor else "")
            response = get(client, path)
            walk.append(server_ms(response))
            cursor = response.json()["next_cursor"]
            if cursor is None:
                raise RuntimeError("the runs list ended before page 21")
        for name, path in list_cases(built, cursor):
            timing = time_request(client, sql, name, path, args.reps, LIST_TARGET_MS)
            if (timing.median() > EXPLAIN_OVER_MS or args.explain) and path.startswith("/api/") and sql.list_statement:
                timing.plan = explain(store, *sql.list_statement)
            timings.append(timing)
            console.print(f"  {name}: {timing.median():.1f} ms")
        run = built.long_run
        middle = args.long_steps // 2
        page_reps = max(3, args.reps // 2)
        for name, path in [
            (f"run page /runs/{{id}} ({args.long_steps} steps)", f"/runs/{run}"),
            ("run JSON /api/runs/{id}", f"/api/runs/{run}"),
            (f"step page /runs/{{id}}/steps/{middle}", f"/runs/{run}/steps/{middle}"),
            ("step panel ?fragment=1 (on click)", f"/runs/{run}/steps/{middle}?fragment=1"),
            ("fork tree ?fragment=1 (run page's script)", f"/runs/{run}/tree?fragment=1"),
        ]:
            timing = time_request(client, sql, name, path, page_reps, None)
            timings.append(timing)
            console.print(f"  {name}: {timing.median():.1f} ms")
    return timings, walk


PAINT_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = (name) => (performance.getEntriesByType('paint').find((e) => e.name === name) || {}).startTime ?? null;
  const app = (nav.serverTiming || []).find((s) => s.name === 'app');
  return {fcp: paint('first-contentful-paint'), fp: paint('first-paint'), ttfb: nav.responseStart,
          response_end: nav.responseEnd, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          server: app ? app.duration : null, rows: document.querySelectorAll('tbody tr').length};
}"""


@dataclass
class Paint:
    name: str
    samples: list[dict[str, float]]
    kb: float

    def med(self, key: str) -> float:
        values = [s[key] for s in self.samples if s[key] is not None]
        return statistics.median(values) if values else float("nan")

    def spread(self, key: str) -> str:
        values = [s[key] for s in self.samples if s[key] is not None]
        return f"{min(values):,.0f}–{max(values):,.0f}" if values else "-"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_paint(app: Any, built: Built, args: argparse.Namespace, console: Console) -> list[Paint]:
    import uvicorn
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="bench-ui-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    results = []
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=args.chromium)
        try:
            for name, path in [(f"run page ({args.long_steps} steps)", f"/runs/{built.long_run}"),
                               ("runs list /", "/")]:
                samples, size = [], 0.0
                for rep in range(args.paints + 1):  # the first is a warm-up
                    context = browser.new_context()
                    page = context.new_page()
                    # An open tab, as a user's would be: without this, Chromium starting the
                    # context's renderer competes with the server for 2 cores and adds ~300 ms.
                    page.goto("about:blank")
                    time.sleep(0.5)
                    response = page.goto(base + path, wait_until="load", timeout=60_000)
                    if response is None or response.status != 200:
                        raise RuntimeError(f"chromium: GET {path}: {response.status if response else 'no response'}")
                    size = len(response.body()) / 1024
                    sample = page.evaluate(PAINT_JS)
                    waited = time.monotonic() + 30
                    while not (sample["load"] and sample["fcp"]):  # polled: the page's CSP forbids eval
                        if time.monotonic() > waited:
                            raise RuntimeError(f"chromium: {path}: no load event or first paint: {sample}")
                        time.sleep(0.05)
                        sample = page.evaluate(PAINT_JS)
                    context.close()
                    if rep:
                        samples.append(sample)
                paint = Paint(name, samples, size)
                console.print(f"  {name}: first contentful paint {paint.med('fcp'):,.0f} ms")
                results.append(paint)
        finally:
            browser.close()
    finally:
        pw.stop()
        server.should_exit = True
        thread.join(15)
    return results


# -- the store -------------------------------------------------------------------------------


def find_long_run(store: TraceStore) -> str | None:
    found = store.list_runs(labels={MARK: "long-run"}, limit=1)
    return found[0].id if found else None


def open_store(args: argparse.Namespace, console: Console) -> tuple[TraceStore, Built, Any]:
    """The store, what it holds, and a cleanup callable."""
    cleanup: Any = lambda: None
    if args.db:
        store = TraceStore.open(args.db)
        long_run = find_long_run(store)
        if long_run:
            console.print(f"reusing {args.db} (it holds this benchmark's data)")
            return store, describe(store, long_run), cleanup
        with store.engine.connect() as c:
            if c.execute(select(func.count()).select_from(Run.__table__)).scalar_one():
                raise SystemExit(f"{args.db} holds runs that this benchmark did not write: give an empty store")
    elif args.backend == "pg":
        import psycopg

        name = f"cf_bench_ui_{os.getpid()}"
        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
        url = args.pg_admin.rsplit("/", 1)[0] + "/" + name
        store = TraceStore.open(url)

        def cleanup() -> None:
            if args.keep:
                console.print(f"kept {url}")
                return
            with psycopg.connect(args.pg_admin, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cf_bench_ui_")
        path = Path(tmp.name) / "traces.db"
        store = TraceStore.open(str(path))

        def cleanup() -> None:
            if args.keep:
                console.print(f"kept {path}")
                return
            tmp.cleanup()
    t0 = time.perf_counter()
    built = build(store, args, console)
    console.print(f"setup took {time.perf_counter() - t0:.1f} s")
    return store, built, cleanup


# -- the report ------------------------------------------------------------------------------


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return "-"
    return "[green]pass[/]" if value < target else "[red]MISS[/]"


def report(console: Console, store: TraceStore, built: Built, timings: list[Timing], walk: list[float],
           paints: list[Paint], args: argparse.Namespace) -> None:
    for t in timings:
        if t.plan:
            console.print(f"[bold]{t.name}[/] ({t.median():.1f} ms): plan of the runs query\n{t.plan}")
    table = Table(title=f"counterfact ui on {store.dialect}: {built.runs:,} runs ({built.step_runs} with steps), "
                  f"server time from Server-Timing, warm-up + {args.reps} requests (run pages {max(3, args.reps // 2)})")
    for col, just in [("request", "left"), ("rows", "right"), ("KB", "right"), ("SQL", "right"),
                      ("server median ms", "right"), ("server p95 ms", "right"), ("wall median ms", "right"),
                      ("target", "right"), ("", "center")]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for t in timings:
        table.add_row(
            t.name, "" if t.rows is None else str(t.rows), f"{t.kb:,.0f}", str(t.statements),
            f"{t.median():,.1f}", f"{t.p95():,.1f}", f"{statistics.median(t.wall):,.1f}",
            f"< {t.target:.0f} ms" if t.target else "-", verdict(t.p95(), t.target),
        )
    table.add_row("walk: pages 1-20 via next_cursor (per page)", "50", "", "",
                  f"{statistics.median(walk):,.1f}", f"{max(walk):,.1f} (max)", "", f"< {LIST_TARGET_MS:.0f} ms",
                  verdict(max(walk), LIST_TARGET_MS))
    console.print(table)
    if paints:
        ptable = Table(title=f"headless Chromium ({args.chromium}): warm-up + {args.paints} loads, "
                       "each in a fresh browser context, tab opened first; median ms from navigation start")
        for col in ["page", "HTML KB", "rows", "server ms", "first byte", "first contentful paint", "FCP min–max",
                    "DOMContentLoaded", "load", "target (FCP)", ""]:
            ptable.add_column(col, justify="left" if col == "page" else "right")
        for p in paints:
            ptable.add_row(
                p.name, f"{p.kb:,.0f}", f"{p.med('rows'):,.0f}", f"{p.med('server'):,.0f}", f"{p.med('ttfb'):,.0f}",
                f"{p.med('fcp'):,.0f}", p.spread("fcp"), f"{p.med('dcl'):,.0f}", f"{p.med('load'):,.0f}",
                f"< {PAINT_TARGET_MS:.0f} ms", verdict(p.med("fcp"), PAINT_TARGET_MS),
            )
        console.print(ptable)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "pg"], default="sqlite",
                    help="sqlite: a temporary file; pg: a scratch database, dropped at the end")
    ap.add_argument("--db", help="a store path or URL: reused if this script built it, filled if empty")
    ap.add_argument("--pg-admin", default=PG_ADMIN, help="where to create the scratch database")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store or scratch database")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--step-runs", type=int, default=300, help="runs written with steps through write_run")
    ap.add_argument("--long-steps", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=10, help="timed requests per runs-list query")
    ap.add_argument("--paints", type=int, default=5, help="timed page loads in Chromium")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium measurements")
    ap.add_argument("--explain", action="store_true", help="print every runs-list plan, not only slow ones")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    console = Console(width=170)
    started = time.perf_counter()
    store, built, cleanup = open_store(args, console)
    try:
        app = create_app(store, token=TOKEN, host="127.0.0.1")
        console.print("server time through TestClient:")
        timings, walk = measure_server(store, app, built, args, console)
        paints: list[Paint] = []
        if not args.no_browser:
            console.print("first paint in Chromium:")
            paints = measure_paint(app, built, args, console)
        report(console, store, built, timings, walk, paints, args)
        console.print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        store.close()
        cleanup()


if __name__ == "__main__":
    main()
