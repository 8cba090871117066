"""Runs the scripted trio workflow on one task slowly, to be killed mid-run by a test.

usage: python -m tests.graphs.resume_worker DB RUN_ID
"""

from __future__ import annotations

import sys

from counterfact.graphs import Task, WorkflowRunner, initial_state
from counterfact.store import TraceStore
from tests.graphs.scripted import trio_pool, trio_spec

TASK = Task(
    id="sum",
    question="What is the population of Avalon plus the population of Brindle?",
    answer="1500",
    checker={"kind": "number"},
    facts={"population of Avalon": "1000", "population of Brindle": "500"},
)


def main() -> None:
    store = TraceStore.open(sys.argv[1])
    runner = WorkflowRunner(trio_spec(), store, trio_pool())
    run_id = runner.recorded.start_run(TASK.input(), run_id=sys.argv[2], labels=runner.labels(TASK, "tiny", 0))
    print("started", run_id, flush=True)
    runner.recorded.continue_run(run_id, initial_state(TASK.input()))


if __name__ == "__main__":
    main()
