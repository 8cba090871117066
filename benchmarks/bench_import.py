"""How fast `counterfact import` reads the logs of other tools: steps per second, per format.

Run: .venv/bin/python benchmarks/bench_import.py   # --messages 10000 --rounds 3

For each format one file of MESSAGES messages (or runs, for trace exports: a step each) is made
from the shape of that format's test fixture under tests/formats/data (made there by the
tool's own SDK), and imported into a fresh SQLite store with `import_paths`, content detection
included, ROUNDS times. The table gives the median seconds of an import and the steps per
second, and how the run was stored (steps, model calls, tool calls), checked against what the
file holds before the numbers are printed.

  chat        an AutoGen team transcript: user, planner, coder tool call, its result, coder
  openai      an OpenAI message list: user, assistant tool call, tool result, assistant
  tau-bench   one tau-bench result whose trajectory is that message list
  langsmith   a LangSmith run tree: a chain per step, each with an llm run and a tool run
  langfuse    Langfuse observations: an AGENT per step, each with a GENERATION and a TOOL

A step of a message log keeps every message before it as its input (the store keeps each
message once and shares the prefixes), so long transcripts cost more per step than short ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from counterfact.formats import import_paths
from counterfact.store import TraceStore

START = datetime(2026, 12, 7, tzinfo=timezone.utc)


def _at(ms: int) -> str:
    return (START + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def chat(n: int) -> Any:
    """An AutoGen TaskResult of `n` messages in the round-robin fixture's pattern."""
    pattern = [
        lambda i: {"source": "planner", "type": "TextMessage", "content": f"Step {i}: the coder adds {i} and 1.",
                   "models_usage": {"prompt_tokens": 10, "completion_tokens": 15}},
        lambda i: {"source": "coder", "type": "ToolCallRequestEvent", "models_usage": {"prompt_tokens": 41, "completion_tokens": 12},
                   "content": [{"id": f"call_{i}", "name": "add", "arguments": json.dumps({"a": i, "b": 1})}]},
        lambda i: {"source": "coder", "type": "ToolCallExecutionEvent", "models_usage": None,
                   "content": [{"content": str(i + 1), "name": "add", "call_id": f"call_{i}", "is_error": False}]},
        lambda i: {"source": "coder", "type": "TextMessage", "content": f"The sum is {i + 1}.",
                   "models_usage": {"prompt_tokens": 24, "completion_tokens": 4}},
    ]
    messages = [{"source": "user", "type": "TextMessage", "content": "Add up to the end.", "models_usage": None}]
    messages += [pattern[i % 4](i) for i in range(n - 1)]
    for i, message in enumerate(messages):
        message.update(id=f"m{i}", metadata={}, created_at=_at(i))
    return {"messages": messages, "stop_reason": "Maximum number of messages reached"}


def openai(n: int) -> list[dict[str, Any]]:
    """An OpenAI message list of `n` messages: a user turn, then call, result, answer."""
    def turn(i: int) -> dict[str, Any]:
        if i % 3 == 0:
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": "get_order", "arguments": json.dumps({"order_id": f"#W{i}"})}}]}
        if i % 3 == 1:
            return {"role": "tool", "tool_call_id": f"call_{i - 1}", "name": "get_order", "content": json.dumps({"status": "pending"})}
        return {"role": "assistant", "content": f"Order #W{i - 2} is pending."}
    return [{"role": "user", "content": "Where are my orders?"}, *(turn(i) for i in range(n - 1))]


def tau_bench(n: int) -> list[dict[str, Any]]:
    return [{"task_id": 0, "reward": 0.0, "trial": 0, "traj": openai(n),
             "info": {"task": {"user_id": "u", "instruction": "Find the orders.", "actions": [], "outputs": []}}}]


def langsmith(n: int) -> dict[str, Any]:
    """A LangSmith run tree whose root has `n` chain runs, each with an llm run and a tool run."""
    def run(id: str, name: str, run_type: str, ms: int, **fields: Any) -> dict[str, Any]:
        return {"id": id, "name": name, "run_type": run_type, "start_time": _at(ms), "end_time": _at(ms + 1),
                "trace_id": "root", "child_runs": [], **fields}
    children = []
    for i in range(n):
        llm = run(f"l{i}", "ChatOpenAI", "llm", 3 * i, inputs={"messages": [{"role": "user", "content": f"step {i}"}]},
                  outputs={"choices": [{"message": {"role": "assistant", "content": f"done {i}"}, "finish_reason": "stop"}],
                           "usage_metadata": {"input_tokens": 20, "output_tokens": 5}},
                  extra={"metadata": {"ls_model_name": "gpt-4o", "ls_provider": "openai"}})
        tool = run(f"t{i}", "get_order", "tool", 3 * i + 1, inputs={"order_id": f"#W{i}"}, outputs={"status": "pending"})
        children.append(run(f"c{i}", "researcher" if i % 2 else "writer", "chain", 3 * i, inputs={"question": f"step {i}"},
                            outputs={"output": f"done {i}"}, parent_run_id="root", child_runs=[llm, tool]))
    return run("root", "support_team", "chain", 0, inputs={"question": "go"}, outputs={"output": "done"}, child_runs=children)


def langfuse(n: int) -> dict[str, Any]:
    """Langfuse observations: a root AGENT and `n` AGENTs under it, each with a GENERATION and a TOOL."""
    def obs(id: str, type: str, name: str, ms: int, parent: str | None, **fields: Any) -> dict[str, Any]:
        return {"id": id, "traceId": "trace", "type": type, "name": name, "startTime": _at(ms), "endTime": _at(ms + 1),
                "parentObservationId": parent, **fields}
    data = [obs("root", "AGENT", "support_team", 0, None, input={"question": "go"})]
    for i in range(n):
        data += [obs(f"a{i}", "AGENT", "researcher" if i % 2 else "writer", 3 * i, "root", output=f"done {i}"),
                 obs(f"g{i}", "GENERATION", "ChatOpenAI", 3 * i, f"a{i}", model="gpt-4o",
                     input=[{"role": "user", "content": f"step {i}"}], output={"role": "assistant", "content": f"done {i}"},
                     usageDetails={"input": 20, "output": 5}),
                 obs(f"t{i}", "TOOL", "get_order", 3 * i + 1, f"a{i}", input={"order_id": f"#W{i}"}, output={"status": "pending"})]
    return {"data": data, "meta": {}}


FORMATS: dict[str, Callable[[int], Any]] = {
    "chat": chat, "openai": openai, "tau-bench": tau_bench, "langsmith": langsmith, "langfuse": langfuse}


def measure(name: str, document: Any, folder: Path, rounds: int) -> tuple[list[float], int, int, int]:
    """Seconds of each import, and the steps, model calls and tool calls it stored."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    times: list[float] = []
    stored = (0, 0, 0)
    for round_ in range(rounds):
        store = TraceStore.open(str(folder / f"{name}-{round_}.db"))
        began = time.perf_counter()
        [report] = import_paths(store, [path])
        times.append(time.perf_counter() - began)
        assert report.format == name, (name, report.format)
        steps = store.steps(report.run_ids[0])
        stored = (len(steps), sum(len(s.model_calls) for s in steps), sum(len(s.tool_calls) for s in steps))
        store.close()
    return times, *stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages (or steps) per file")
    parser.add_argument("--rounds", type=int, default=3, help="imports per format")
    args = parser.parse_args()
    table = Table(title=f"import speed, {args.messages:,} messages or steps per file, median of {args.rounds}")
    for column in ("format", "file MB", "steps", "model calls", "tool calls", "seconds", "steps/s"):
        table.add_column(column, justify="left" if column == "format" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in FORMATS.items():
            document = make(args.messages)
            times, steps, models, tools = measure(name, document, Path(tmp), args.rounds)
            assert steps == args.messages, (name, steps)
            seconds = statistics.median(times)
            size = (Path(tmp) / f"{name}.json").stat().st_size / 1e6
            table.add_row(name, f"{size:.1f}", f"{steps:,}", f"{models:,}", f"{tools:,}", f"{seconds:.2f}", f"{steps / seconds:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
