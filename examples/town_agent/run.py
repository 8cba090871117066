"""Record the town agent on a few questions into a counterfact store.

    python -m examples.town_agent.run [--db counterfact.db] [--repeat N] [--local]

By default the app calls an OpenAI-compatible server (OPENAI_BASE_URL, e.g. `counterfact
serve`); with --local it runs on the embedded model in this process (ChatCounterfact).
"""

from __future__ import annotations

import argparse

from counterfact.graphs import record
from counterfact.store import TraceStore
from examples.town_agent.app import correct

QUESTIONS = [
    "What is the population of Wexham?",
    "What is the population of Glenlyn?",
    "What is the population of Corfe?",
    "What is the population of Lowmoor plus Glenlyn?",
    "What is the population of Brindle plus Ashby?",
    "What is the population of Wexham plus Corfe?",
    "What is the population of Glenlyn plus Brindle?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="counterfact.db")
    parser.add_argument("--repeat", type=int, default=1, help="runs per question")
    parser.add_argument("--local", action="store_true", help="run on ChatCounterfact in this process")
    args = parser.parse_args()
    if args.local:
        from examples.town_agent.local import graph
    else:
        from examples.town_agent.app import graph
    store = TraceStore.open(args.db)
    recorded = record(graph, store, workflow="town-agent", check=correct)
    for question in QUESTIONS:
        for _ in range(args.repeat):
            result = recorded.invoke({"messages": [("user", question)]})
            answer = result.state["messages"][-1].content if result.state else result.error
            print(f"{result.run_id[:12]}  {result.status:9}  {question}  ->  {answer!r}")


if __name__ == "__main__":
    main()
