"""Control replays on the embedded model with the run's recorded replies as drafts, against the
same replays decoding every token, side by side in one process.

The demo suite's first TASKS tasks are run once into a temporary store. Each recorded run is
then replayed unedited from step 0 (a control, as `counterfact debug` makes for every greedy
run) twice per repetition, once with `Replayer(drafts=False)` and once with drafts, the order
alternating between runs; the model's memo of answers is emptied before every replay, so each
one pays what it would in a process of its own. Each replay's step outputs are compared with
the recorded run's, and the script exits non-zero if any differ: a fast replay that answers
otherwise does not count.

    .venv/bin/python benchmarks/bench_replay_drafts.py [--tasks 6] [--reps 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.agents import forget_answers  # noqa: E402
from counterfact.graphs import DEMO_SUITE, DEMO_WORKFLOW, ModelPool, load_suite, load_workflow, run_suite  # noqa: E402
from counterfact.interventions import Replayer  # noqa: E402
from counterfact.store import TraceStore  # noqa: E402

ARMS = {"decoded": False, "drafted": True}


def outputs(store: TraceStore, run_id: str) -> list[Any]:
    """What each step put out, without the ids that differ from run to run."""

    def without_ids(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_ids(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [without_ids(v) for v in value]
        return value

    return [without_ids(step.output) for step in store.steps(run_id)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6, help="demo tasks recorded and replayed")
    parser.add_argument("--reps", type=int, default=2, help="replays of each run in each arm")
    args = parser.parse_args()
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as tmp:
        suite_data = yaml.safe_load(Path(DEMO_SUITE).read_text())
        suite_data["tasks"] = suite_data["tasks"][: args.tasks]
        suite_file = Path(tmp) / "suite.yaml"
        suite_file.write_text(yaml.safe_dump(suite_data, sort_keys=False))
        store = TraceStore.open(str(Path(tmp) / "drafts.db"))
        pool = ModelPool("embedded")
        with Progress(console=console) as progress:
            bar = progress.add_task(f"recording {args.tasks} demo runs", total=args.tasks)
            run_suite(load_workflow(DEMO_WORKFLOW), load_suite(suite_file), store, pool=pool, seed=0,
                      on_result=lambda *_: progress.advance(bar))
        runs = [r.id for r in store.list_runs(limit=None) if r.parent_run_id is None]
        seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
        same = dict.fromkeys(ARMS, 0)
        tokens = sum(c.completion_tokens or 0 for r in runs for s in store.steps(r) for c in s.model_calls)
        with Progress(console=console) as progress:
            bar = progress.add_task("control replays", total=len(runs) * args.reps * len(ARMS))
            for n, run_id in enumerate(run_id for _ in range(args.reps) for run_id in runs):
                recorded = outputs(store, run_id)
                order = list(ARMS) if n % 2 == 0 else list(reversed(ARMS))
                for arm in order:
                    forget_answers()
                    replayer = Replayer(store, run_id, pool=pool, drafts=ARMS[arm])
                    started = time.perf_counter()
                    child = replayer.replay(replayer.compile(None, 0), arm="control").run_id
                    seconds[arm].append(time.perf_counter() - started)
                    same[arm] += outputs(store, child) == recorded
                    progress.advance(bar)
        table = Table(title=f"Control replays of {len(runs)} demo runs ({tokens} recorded reply tokens), "
                            f"{args.reps} each per arm, embedded model, 2 cores")
        for column in ("arm", "replays", "same as recorded", "median s / replay", "total s", "ratio"):
            table.add_column(column, justify="left" if column == "arm" else "right")
        base = sum(seconds["decoded"])
        for arm, times in seconds.items():
            table.add_row(arm, str(len(times)), f"{same[arm]}/{len(times)}", f"{statistics.median(times):.2f}",
                          f"{sum(times):.1f}", f"{sum(times) / base:.2f}")
        console.print(table)
        if any(same[arm] < len(times) for arm, times in seconds.items()):
            raise SystemExit("some controls did not repeat their run: their times do not count")


if __name__ == "__main__":
    main()
