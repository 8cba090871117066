"""A process that records runs of the test loop graph; used by the crash and concurrency tests.

usage: python -m tests.graphs.record_worker DB RUNS LIMIT [RUN_ID_PREFIX]
"""

from __future__ import annotations

import sys

from counterfact.graphs import record
from counterfact.store import TraceStore
from tests.graphs.sample_graphs import loop_graph, loop_input


def main() -> None:
    db, runs, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    prefix = sys.argv[4] if len(sys.argv) > 4 else None
    store = TraceStore.open(db)
    recorded = record(loop_graph(), store, workflow="loop")
    for i in range(runs):
        run_id = f"{prefix}{i:04d}" if prefix else None
        result = recorded.invoke(loop_input(limit), run_id=run_id)
        print(result.run_id, result.status, flush=True)


if __name__ == "__main__":
    main()
