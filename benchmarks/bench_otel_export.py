"""Exporting 1,000 demo runs as OpenTelemetry spans: OTLP/HTTP to a real receiver on loopback,
OTLP JSON lines to a file, and (for comparison) the store's own JSONL export.

Target (the export issue): exporting 1,000 runs of the demo takes under 10 s.

The runs are not made by the embedded model (1,000 demo runs would take hours): they are written
through `TraceStore.write_run` in the shape `counterfact demo` records, copied from a real demo
run: workflow `demo`, the task's question and facts as the run's input, the recorder's labels
(graph, suite, task, the whole workflow spec), an outcome; three agent steps, each with the
messages it saw and its output message:

  researcher  2 model calls (12 then 14 request messages: system prompt with the tool's
              description, the few-shot examples, the task; then its CALL and the RESULT),
              a `lookup` tool call
  solver      2 model calls (12 then 14 messages) and a `calculator` tool call
  reporter    1 model call (4 messages)

with the demo's prompts (its workflow file), questions and facts (its suite), token counts in
proportion to the text (a recorded run had 357/475, 468/526 and 224 prompt tokens) and model
latencies of seconds. That is 11 spans a run (root, 3 steps, 5 chats, 2 tools), so 11,000.

Each export is timed `--reps` times (median reported) after one untimed warm-up export of 20
runs. The OTLP receiver (`otlp_receiver.py`) is a `ThreadingHTTPServer` in a process of its own,
as a collector is: it reads each request, decodes its `ExportTraceServiceRequest` and counts spans per trace; the run is only
counted as exported when every run's trace arrived with all its spans and one root, and the
total equals what `export_otlp` returned. The OTLP JSON file is read back and its spans counted.

    .venv/bin/python benchmarks/bench_otel_export.py                  # 1,000 runs, 3 reps
    .venv/bin/python benchmarks/bench_otel_export.py --db /tmp/otel.db  # build once, reuse
    .venv/bin/python benchmarks/bench_otel_export.py --profile         # + cProfile of one export

Exits non-zero on errors (spans missing), not on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import pstats
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from otlp_receiver import OtlpReceiver  # this script's directory is on sys.path
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

TARGET_S = 10.0
MARK = "bench_otel_export"  # label of the runs this script writes: how a reused store is recognised


# -- demo-shaped runs --------------------------------------------------------------------------

TOOL_PROMPT = (
    "\n\nYou can use tools. To call a tool, write a line of the form:\nCALL <tool name> "
    '{"<argument>": <value>}\nand stop. The result comes back in a line: RESULT <tool name>: <result>.\n'
    "When you have what you need, answer without a CALL line.\nTools:\n"
)
TOOL_TEXT = {
    "lookup": '- lookup: Look up a fact by its key in the task\'s knowledge table. Arguments: {"key": <str>}',
    "calculator": "- calculator: Evaluate an arithmetic expression with + - * / // % ** and parentheses. "
                  'Arguments: {"expression": <str>}\nExample: CALL calculator {"expression": "12*7"}',
}
CHARS_PER_TOKEN = 2.65  # as recorded: SmolLM2's chat template + tokenizer on the demo's prompts


def _msg(role: str, content: str) -> dict[str, Any]:
    return {"content": content, "role": role, "tool_calls": []}


def _tokens(messages: list[dict[str, Any]]) -> int:
    return int(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN)


class DemoShapes:
    """The demo's workflow spec and suite, and runs made in the shape its recorder writes."""

    def __init__(self) -> None:
        from counterfact.graphs import (
            DEMO_SUITE,
            DEMO_WORKFLOW,
            load_suite,
            load_workflow,
        )

        self.spec = load_workflow(DEMO_WORKFLOW)
        self.suite = load_suite(DEMO_SUITE)
        self.spec_label = self.spec.model_dump(mode="json")
        names = [a.name for a in self.spec.agents]
        self.graph_label = {
            "ref": None,
            "nodes": sorted(["__end__", "__start__", *names]),
            "edges": sorted([["__start__", names[0], False], *[[a, b, False] for a, b in itertools.pairwise(names)],
                             [names[-1], "__end__", False]]),
        }
        self.graph_label["digest"] = hashlib.sha256(json.dumps(self.graph_label, sort_keys=True).encode()).hexdigest()
        self.system: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}
        for agent in self.spec.agents:
            text = agent.role
            if agent.tools:
                text += TOOL_PROMPT + "\n".join(TOOL_TEXT[t] for t in agent.tools)
            self.system[agent.name] = _msg("system", text)
            self.examples[agent.name] = [_msg(m.role, m.content or "") for m in agent.examples]

    def run(self, rnd: random.Random, index: int, created: datetime) -> tuple[Any, list[Any]]:
        from counterfact.capture import ModelCallRecord, ToolCallRecord
        from counterfact.store import Outcome, RunRecord, StepRecord

        task = self.suite.tasks[index % len(self.suite.tasks)]
        repeat = index // len(self.suite.tasks)
        success = rnd.random() < 0.4
        facts = list(task.facts.items())
        key, value = rnd.choice(facts)
        answer = task.answer if success else str(rnd.randint(10, 9999))
        settings = {a.name: a.settings.model_dump(mode="json") for a in self.spec.agents}
        user = {"content": task.question, "id": uuid.UUID(int=rnd.getrandbits(128)).hex, "name": "user",
                "role": "user"}
        history = [user]
        steps: list[Any] = []
        moment = created + timedelta(milliseconds=rnd.uniform(5, 40))
        checkpoint = str(uuid.UUID(int=rnd.getrandbits(128)))
        conversation = ""

        def call(agent: str, request: list[dict[str, Any]], reply: str, stop: list[str], finish: str) -> Any:
            params = {**settings[agent], "stop": stop, "counterfact_model": "embedded"}
            return ModelCallRecord(
                backend="local", model="smollm2-135m-instruct", params=params, request=request,
                response={"content": reply, "role": "assistant"}, finish_reason=finish,
                prompt_tokens=_tokens(request), completion_tokens=max(3, int(len(reply) / CHARS_PER_TOKEN)),
                latency_ms=rnd.uniform(800, 4000),
            )

        def step(agent: str, calls: list[Any], tools: list[Any], output: str, extra: dict[str, Any]) -> None:
            nonlocal moment, checkpoint
            message = {"content": output, "id": uuid.UUID(int=rnd.getrandbits(128)).hex, "name": agent,
                       "role": "assistant"}
            took = timedelta(milliseconds=sum(c.latency_ms for c in calls) + sum(t.latency_ms for t in tools)
                             + rnd.uniform(2, 20))
            after = str(uuid.UUID(int=rnd.getrandbits(128)))
            steps.append(StepRecord(
                index=len(steps), node=agent, agent=agent, invocation=0, kind="agent", input=list(history),
                output=message, delta={**extra, "messages": [message]}, checkpoint_before=checkpoint,
                checkpoint_after=after, task_id=str(uuid.UUID(int=rnd.getrandbits(128))),
                started_at=moment, ended_at=moment + took, model_calls=calls, tool_calls=tools,
            ))
            history.append(message)
            moment += took + timedelta(milliseconds=rnd.uniform(2, 10))
            checkpoint = after

        # researcher: CALL lookup, then FACTS
        first = [self.system["researcher"], *self.examples["researcher"], _msg("user", f"Task: {task.question}")]
        lookup = f'CALL lookup {{"key": "{key}"}}'
        second = [*first, _msg("assistant", lookup), _msg("user", f"RESULT lookup: {value}")]
        facts_line = f"FACTS: {key} = {value.split()[0]}"
        step("researcher",
             [call("researcher", first, lookup, ["RESULT lookup"], "stop"),
              call("researcher", second, facts_line, ["RESULT lookup"], "stop")],
             [ToolCallRecord(name="lookup", arguments={"key": key}, result=value, latency_ms=rnd.uniform(0.03, 0.2))],
             facts_line, {})
        conversation = f"\n\nConversation so far:\n[researcher] {facts_line}"
        # solver: CALL calculator, then RESULT
        expression = f"{value.split()[0]} + {rnd.randint(1, 500)}"
        first = [self.system["solver"], *self.examples["solver"], _msg("user", f"Task: {task.question}{conversation}")]
        calc = f'CALL calculator {{"expression": "{expression}"}}'
        second = [*first, _msg("assistant", calc), _msg("user", f"RESULT calculator: {answer}")]
        result_line = f"RESULT: {answer}"
        step("solver",
             [call("solver", first, calc, ["RESULT calculator"], "stop"),
              call("solver", second, result_line, ["RESULT calculator"], "stop")],
             [ToolCallRecord(name="calculator", arguments={"expression": expression}, result=answer,
                             latency_ms=rnd.uniform(0.05, 0.3))],
             result_line, {})
        conversation += f"\n[solver] {result_line}"
        # reporter: FINAL ANSWER
        request = [self.system["reporter"], *self.examples["reporter"], _msg("user", f"Task: {task.question}{conversation}")]
        final = f"FINAL ANSWER: {answer}"
        step("reporter", [call("reporter", request, final, [], "stop")], [], final, {"final_answer": answer})

        milestones = [m.name for m in task.milestones if success or rnd.random() < 0.3]
        outcome = Outcome(success=success, score=1.0 if success else len(milestones) / (len(task.milestones) + 1),
                          milestones=milestones, detail=f"answer {answer!r}, expected {task.answer!r}")
        task_input = task.input()
        labels = {
            "graph": self.graph_label,
            "input_digest": hashlib.sha256(json.dumps(task_input, sort_keys=True).encode()).hexdigest(),
            "suite": self.suite.name, "task_id": task.id, "repeat": repeat,
            "task": task.model_dump(mode="json"), "workflow_spec": self.spec_label, "model": "embedded",
            MARK: "1",
        }
        calls = [c for s in steps for c in s.model_calls]
        run = RunRecord(
            id=uuid.UUID(int=rnd.getrandbits(128)).hex, workflow="demo", workflow_hash=self.graph_label["digest"],
            task_input=task_input, status="succeeded" if success else "failed", outcome=outcome, labels=labels,
            total_tokens=sum(c.prompt_tokens + c.completion_tokens for c in calls),
            total_latency_ms=sum(c.latency_ms for c in calls), created_at=created, ended_at=moment,
        )
        return run, steps


def progress(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def build(store: Any, n: int, seed: int, console: Console) -> list[str]:
    """Write `n` demo-shaped runs (one transaction each, as the recorder commits a run's steps)."""
    from counterfact.store import utcnow

    shapes = DemoShapes()
    rnd = random.Random(seed)
    now = utcnow()
    ids: list[str] = []
    t0 = time.perf_counter()
    with progress(console) as bar:
        task = bar.add_task("writing demo-shaped runs", total=n)
        for i in range(n):
            created = now - timedelta(hours=48) + timedelta(seconds=i * 170 + rnd.uniform(0, 60))
            run, steps = shapes.run(rnd, i, created)
            store.write_run(run, steps)
            ids.append(run.id)
            bar.advance(task)
    console.print(f"  {n:,} runs written through write_run in {time.perf_counter() - t0:.1f} s")
    return ids


def bench_runs(store: Any) -> list[str]:
    """The ids of this script's runs in `store`, oldest first."""
    return [r.id for r in reversed(store.list_runs(labels={MARK: "1"}, limit=None))]


# -- the exports -------------------------------------------------------------------------------


@contextlib.contextmanager
def shown(console: Console, label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar fed by an export's `on_progress(done, total)`."""
    with progress(console) as bar:
        task = bar.add_task(label, total=total)

        def on_progress(done: int, _total: int) -> None:
            if done % 25 == 0 or done == _total:
                bar.update(task, completed=done)

        yield on_progress


def expected_spans(store: Any, run_ids: list[str]) -> dict[int, int]:
    """Spans each run's trace must have: root + steps + model calls + tool calls (from the store)."""
    from sqlalchemy import func, select

    from counterfact.formats._otel import trace_id_of
    from counterfact.store.schema import ModelCall, Step, ToolCall

    out: dict[int, int] = {}
    with store.engine.connect() as conn:
        for run_id in run_ids:
            steps = conn.execute(select(func.count()).where(Step.run_id == run_id)).scalar_one()
            models = conn.execute(select(func.count()).select_from(ModelCall).join(Step, Step.id == ModelCall.step_id)
                                  .where(Step.run_id == run_id)).scalar_one()
            tools = conn.execute(select(func.count()).select_from(ToolCall).join(Step, Step.id == ToolCall.step_id)
                                 .where(Step.run_id == run_id)).scalar_one()
            out[trace_id_of(run_id)] = 1 + steps + models + tools
    return out


def check_received(receiver: OtlpReceiver, expected: dict[int, int], returned: int) -> str:
    received = receiver.received()
    if received.bad:
        raise SystemExit(f"receiver: {received.bad[:3]}")
    total = received.spans
    problems = []
    for trace, want in expected.items():
        got, roots = received.take(trace)
        if got != want or roots != 1:
            problems.append(f"trace {trace:032x}: {got} spans ({roots} roots), expected {want} (1 root)")
    if received.per_trace:
        problems.append(f"{len(received.per_trace)} traces nobody asked for")
    if total != returned or total != sum(expected.values()):
        problems.append(f"received {total} spans, export_otlp returned {returned}, "
                        f"the store holds {sum(expected.values())}")
    if problems:
        raise SystemExit("OTLP export incomplete:\n  " + "\n  ".join(problems[:10]))
    return f"OK {len(expected):,} traces, {total:,} spans in {received.requests} requests ({received.bytes / 1e6:.1f} MB)"


def check_json(path: Path, expected: dict[int, int], returned: int) -> str:
    per_trace: Counter[int] = Counter()
    lines = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            lines += 1
            for resource in json.loads(line).get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        per_trace[int(span["traceId"], 16)] += 1
    total = sum(per_trace.values())
    if per_trace != Counter(expected) or total != returned:
        missing = sum(1 for t, n in expected.items() if per_trace.get(t) != n)
        raise SystemExit(f"OTLP JSON incomplete: {total} spans in the file, returned {returned}, "
                         f"{missing} traces differ from the store")
    return f"OK {len(expected):,} traces, {total:,} spans in {lines} lines ({path.stat().st_size / 1e6:.1f} MB)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000, help="demo-shaped runs to export")
    ap.add_argument("--reps", type=int, default=3, help="timed exports of each kind (median reported)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--db", help="a store (path or URL) to build once and reuse; default: a temp SQLite file")
    ap.add_argument("--no-jsonl", action="store_true", help="skip the export_jsonl comparison")
    ap.add_argument("--profile", action="store_true", help="cProfile one OTLP export (main thread) and print it")
    args = ap.parse_args()

    import os

    from counterfact.formats import export_jsonl, export_otlp, write_otlp_json
    from counterfact.formats._otel import ENDPOINT_ENV, STANDARD_ENDPOINT_ENV
    from counterfact.store import TraceStore

    for name in (ENDPOINT_ENV, STANDARD_ENDPOINT_ENV):  # no live export of the build
        os.environ.pop(name, None)
    console = Console(width=160)
    tmp = Path(tempfile.mkdtemp(prefix="cf_bench_otel_"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        store = TraceStore.open(args.db or str(tmp / "demo.db"))
        stack.callback(store.close)
        assert store.live is None
        ids = bench_runs(store)
        if len(ids) < args.runs:
            console.print(f"building {args.runs - len(ids):,} demo-shaped runs in {store.url}")
            ids += build(store, args.runs - len(ids), args.seed + len(ids), console)
        else:
            console.print(f"reusing {len(ids):,} runs of {store.url}")
        ids = ids[: args.runs]
        expected = expected_spans(store, ids)
        spans_per_run = Counter(expected.values())
        console.print(f"{len(ids):,} runs, {sum(expected.values()):,} spans to export "
                      f"(spans per run: {dict(spans_per_run)})")
        receiver = stack.enter_context(OtlpReceiver())

        # warm-up: imports, the SDK, the receiver's connection, the store's caches
        export_otlp(store, ids[:20], receiver.url)
        receiver.reset()
        write_otlp_json(store, ids[:20], tmp / "warm.jsonl")

        results: dict[str, list[float]] = {"export_otlp (OTLP/HTTP)": [], "write_otlp_json (file)": []}
        if not args.no_jsonl:
            results["export_jsonl (file, for comparison)"] = []
        spans_of: dict[str, int] = {}
        checks: dict[str, str] = {}
        for rep in range(args.reps):
            console.print(f"rep {rep + 1}/{args.reps}")
            name = "export_otlp (OTLP/HTTP)"
            receiver.reset()
            with shown(console, "export_otlp", len(ids)) as on_progress:
                t0 = time.perf_counter()
                runs, spans = export_otlp(store, ids, receiver.url, on_progress=on_progress)
                results[name].append(time.perf_counter() - t0)
            assert runs == len(ids)
            spans_of[name] = spans
            checks[name] = check_received(receiver, expected, spans)

            name = "write_otlp_json (file)"
            path = tmp / "runs.otlp.jsonl"
            with shown(console, "write_otlp_json", len(ids)) as on_progress:
                t0 = time.perf_counter()
                runs, spans = write_otlp_json(store, ids, path, on_progress=on_progress)
                results[name].append(time.perf_counter() - t0)
            spans_of[name] = spans
            checks[name] = check_json(path, expected, spans)

            if not args.no_jsonl:
                name = "export_jsonl (file, for comparison)"
                path = tmp / "runs.jsonl"
                t0 = time.perf_counter()
                written = export_jsonl(store, ids, path)
                results[name].append(time.perf_counter() - t0)
                lines = sum(1 for _ in path.open(encoding="utf-8"))
                if len(written) != len(ids) or lines != len(ids):
                    raise SystemExit(f"export_jsonl wrote {lines} lines for {len(ids)} runs")
                checks[name] = f"OK {lines:,} lines ({path.stat().st_size / 1e6:.1f} MB)"

        table = Table(title=f"Exporting {len(ids):,} demo-shaped runs (median of {args.reps}; "
                            f"{store.dialect}, receiver on loopback in its own process)")
        for col, just in [("export", "left"), ("seconds", "right"), ("min..max s", "right"), ("runs/s", "right"),
                          ("spans", "right"), ("spans/s", "right"), (f"< {TARGET_S:.0f} s", "center"),
                          ("checked", "left")]:
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for name, times in results.items():
            t = statistics.median(times)
            spans = spans_of.get(name)
            verdict = "[green]PASS[/]" if t < TARGET_S else "[red]FAIL[/]"
            table.add_row(
                name, f"{t:.2f}", f"{min(times):.2f}..{max(times):.2f}", f"{len(ids) / t:,.0f}",
                f"{spans:,}" if spans else "-", f"{spans / t:,.0f}" if spans else "-",
                verdict if spans else "-", checks[name],
            )
        console.print(table)
        t = statistics.median(results["export_otlp (OTLP/HTTP)"])
        verdict = "[green]PASS[/]" if t < TARGET_S else "[red]FAIL[/]"
        console.print(f"export of {len(ids):,} demo runs over OTLP/HTTP: {t:.2f} s (target < {TARGET_S:.0f} s) {verdict}")

        if args.profile:
            receiver.reset()
            profiler = cProfile.Profile()
            profiler.enable()
            export_otlp(store, ids, receiver.url)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(25)
            console.print(out.getvalue(), markup=False, highlight=False)


if __name__ == "__main__":
    main()
