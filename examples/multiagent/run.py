"""Record one of the multi-agent apps on the town questions into a counterfact store.

    python -m examples.multiagent.run APP [--db counterfact.db] [--repeat N] [--scripted]

APP is supervisor, swarm, hierarchical or handoff. The apps run on the model
COUNTERFACT_EXAMPLE_MODEL names: `embedded` (the default) in this process, any other name on
an OpenAI-compatible server at OPENAI_BASE_URL (e.g. `counterfact serve`). --scripted runs
them on the deterministic test double instead (no model; every run succeeds).
"""

from __future__ import annotations

import argparse
import importlib

from counterfact.graphs import record
from counterfact.store import TraceStore
from examples.multiagent.common import QUESTIONS, correct

APPS = ("supervisor", "swarm", "hierarchical", "handoff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--db", default="counterfact.db")
    parser.add_argument("--repeat", type=int, default=1, help="runs per question")
    parser.add_argument("--scripted", action="store_true", help="run on the deterministic test double")
    args = parser.parse_args()
    module = f"examples.multiagent.{args.app}"
    app = importlib.import_module(module)
    store = TraceStore.open(args.db)
    if args.scripted:  # replays rebuild it from the factory
        recorded = record(app.scripted(), store, workflow=args.app, ref=f"{module}:scripted", check=correct)
    else:
        recorded = record(app.graph, store, workflow=args.app, check=correct)
    for question in QUESTIONS:
        for _ in range(args.repeat):
            result = recorded.invoke({"messages": [("user", question)]})
            answer = result.state["messages"][-1].content if result.state else result.error
            print(f"{result.run_id[:12]}  {result.status:9}  {question}  ->  {answer!r}")


if __name__ == "__main__":
    main()
