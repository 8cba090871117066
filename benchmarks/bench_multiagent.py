"""Multi-agent apps recorded, replayed and debugged completely: the example apps of
examples/multiagent (langgraph-supervisor, langgraph-swarm, a supervisor of team supervisors,
hand-written Command handoffs), measured side by side in one run.

For each app, on one question:
- calls: the model and tool calls of a plain run, counted by a LangChain callback with no
  counterfact involved, against the calls the recorded run of the same question stored;
- reproduced: the steps from which a no-op replay reproduces the recording (every step's
  node, invocation, output, calls and handoffs);
- applied: the steps where an edit (a message appended to the step's output) is applied;
- debug: a debug session of a failed run (the supervisor app on the question by default): its
  wall time and tokens against the run's own, and what it found.

    .venv/bin/python benchmarks/bench_multiagent.py [--model embedded|scripted] [--apps ...]
        [--question N] [--debug-app supervisor] [--budget 12] [--json FILE]

On the embedded model the apps decode greedily (ChatCounterfact at temperature 0), so a replay
that reproduces a step reproduces it exactly; `--model scripted` runs the deterministic test
double instead (seconds, for a quick look).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.graphs import record  # noqa: E402
from counterfact.interventions import Budget, Debugger, Replayer, parse_intervention  # noqa: E402
from counterfact.store import TraceStore, step_handoffs, step_shape  # noqa: E402
from examples.multiagent import handoff, hierarchical, supervisor, swarm  # noqa: E402
from examples.multiagent.common import QUESTIONS, ScriptedTeamModel, correct  # noqa: E402

APPS = {"supervisor": supervisor, "swarm": swarm, "hierarchical": hierarchical, "handoff": handoff}
EDIT = parse_intervention({"kind": "message", "mode": "append", "text": " (checked)"})
console = Console(stderr=True)


class CallCounter(BaseCallbackHandler):
    """Model and tool calls of a plain run, by LangChain's own callbacks."""

    def __init__(self) -> None:
        self.models: set[UUID] = set()
        self.tools: set[UUID] = set()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.models.add(run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        self.tools.add(run_id)


def chat_model(kind: str) -> Any:
    if kind == "scripted":
        return ScriptedTeamModel()
    from counterfact.agents import ChatCounterfact

    return ChatCounterfact(model="embedded", max_tokens=96)


def measure(name: str, app: Any, store: TraceStore, model: Any, question: str) -> dict[str, Any]:
    graph = app.build(model)
    counter = CallCounter()
    started = time.perf_counter()
    graph.compile().invoke({"messages": [("user", question)]}, {"callbacks": [counter], "recursion_limit": 40})
    plain_s = time.perf_counter() - started
    recorded = record(graph, store, workflow=name, check=correct)
    started = time.perf_counter()
    run = recorded.invoke({"messages": [("user", question)]}, {"recursion_limit": 40})
    recorded_s = time.perf_counter() - started
    steps = store.steps(run.run_id)
    replayer = Replayer(store, run.run_id, graph=graph)
    reproduced = applied = 0
    for at in range(len(steps)):
        console.print(f"  {name}: replays from step {at + 1}/{len(steps)}")
        control = replayer.replay(replayer.compile(None, at), arm="control")
        reproduced += [step_shape(s) for s in store.steps(control.run_id)] == [step_shape(s) for s in steps]
        treated = replayer.replay(replayer.compile(EDIT, at), arm="treatment")
        applied += bool(treated.applied)
    return {
        "app": name, "run": run.run_id, "status": run.status, "steps": len(steps),
        "handoffs": sum(len(step_handoffs(s)) for s in steps),
        "plain_model_calls": len(counter.models), "plain_tool_calls": len(counter.tools),
        "recorded_model_calls": sum(len(s.model_calls) for s in steps),
        "recorded_tool_calls": sum(len(s.tool_calls) for s in steps),
        "reproduced": reproduced, "applied": applied,
        "plain_s": plain_s, "recorded_s": recorded_s,
        "tokens": store.get_run(run.run_id).total_tokens,
    }


def debug(store: TraceStore, row: dict[str, Any], graph: Any, budget: int) -> dict[str, Any]:
    """A debug session (every strategy) of the run, against the run's own cost."""
    run = store.get_run(row["run"])
    if run.status == "succeeded":
        return {"app": row["app"], "note": "the run succeeded: nothing to debug"}
    started = time.perf_counter()
    report = Debugger(Replayer(store, run.id, graph=graph), strategies=["all"], budget=Budget(replays=budget),
                      on_event=lambda m: console.print(f"  debug: {m}")).run()
    seconds = time.perf_counter() - started
    validated = [h for h in report.hypotheses if h.verdict == "validated"]
    return {
        "app": row["app"], "run": run.id, "seconds": seconds, "run_seconds": row["recorded_s"],
        "tokens": report.spent.tokens, "run_tokens": run.total_tokens, "replays": report.spent.replays,
        "hypotheses": len([h for h in report.hypotheses if h.step is not None]),
        "decided": len([h for h in report.hypotheses if h.decided]),
        "validated": [f"step {h.step} ({h.strategy}): {h.reason[:60]}" for h in validated],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["embedded", "scripted"], default="embedded")
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--question", type=int, default=0, help="index into examples.multiagent.common.QUESTIONS")
    parser.add_argument("--debug-app", default="supervisor", help="the app whose run is debugged ('' for none)")
    parser.add_argument("--budget", type=int, default=24, help="replays the debug session may spend (the CLI's default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    question = QUESTIONS[args.question]
    store = TraceStore.open(str(Path(tempfile.mkdtemp()) / "bench.db"))
    chat_model(args.model).invoke("Say hello.")  # loads the model, so no timing below includes it
    rows = []
    for name in args.apps.split(","):
        console.print(f"[bold]{name}[/bold]: {question}")
        rows.append(measure(name, APPS[name], store, chat_model(args.model), question))
    table = Table(title=f"multi-agent apps on the {args.model} model: {question}")
    for column in ("app", "run", "steps", "handoffs", "model calls plain/recorded", "tool calls plain/recorded",
                   "reproduced", "edit applied", "plain s", "recorded s"):
        table.add_column(column, justify="left" if column in ("app", "run") else "right")
    for r in rows:
        table.add_row(
            r["app"], r["status"], str(r["steps"]), str(r["handoffs"]),
            f"{r['plain_model_calls']}/{r['recorded_model_calls']}", f"{r['plain_tool_calls']}/{r['recorded_tool_calls']}",
            f"{r['reproduced']}/{r['steps']}", f"{r['applied']}/{r['steps']}", f"{r['plain_s']:.1f}", f"{r['recorded_s']:.1f}",
        )
    Console(width=200).print(table)
    recorded = sum(r["recorded_model_calls"] + r["recorded_tool_calls"] for r in rows)
    plain = sum(r["plain_model_calls"] + r["plain_tool_calls"] for r in rows)
    total = sum(r["steps"] for r in rows)
    Console().print(
        f"recorded {recorded}/{plain} calls ({recorded / max(plain, 1):.0%}), reproduced "
        f"{sum(r['reproduced'] for r in rows)}/{total} steps, edit applied at {sum(r['applied'] for r in rows)}/{total} "
        "(the recorded run follows the plain one and finds its prompts in the model's prefix cache: the seconds "
        "are not a recording cost, which benchmarks/bench_recording.py measures)"
    )
    sessions = []
    if args.debug_app:
        row = next(r for r in rows if r["app"] == args.debug_app)
        sessions.append(debug(store, row, APPS[args.debug_app].build(chat_model(args.model)), args.budget))
        for s in sessions:
            if "note" in s:
                Console().print(f"debug {s['app']}: {s['note']}")
                continue
            Console().print(
                f"debug {s['app']} run {s['run'][:12]}: {s['seconds']:.0f} s (the run: {s['run_seconds']:.1f} s, "
                f"{s['seconds'] / max(s['run_seconds'], 1e-9):.0f}x), {s['tokens']} tokens (the run: {s['run_tokens']}), "
                f"{s['replays']} replays, {s['decided']}/{s['hypotheses']} hypotheses decided; validated: "
                f"{'; '.join(s['validated']) or 'none'}; target under 300 s: {'met' if s['seconds'] < 300 else 'MISSED'}"
            )
    if args.json:
        args.json.write_text(json.dumps({"apps": rows, "debug": sessions}, indent=2))


if __name__ == "__main__":
    main()
