"""Log-only failure attribution on both Who&When halves: methods, trivial baselines, published.

Run from the repository root:
    .venv/bin/python benchmarks/bench_attribution.py                          # evidence only
    .venv/bin/python benchmarks/bench_attribution.py --methods evidence all_at_once --limit 5
    .venv/bin/python benchmarks/bench_attribution.py --data DIR --json out.json
    .venv/bin/python benchmarks/bench_attribution.py --methods all_at_once --halves Hand-Crafted --limit 10 --longest

`--data` is a folder holding `Hand-Crafted/` and `Algorithm-Generated/` Who&When logs (default:
the subset in ../shared/data/whowhen). Each half is imported into its own temporary SQLite store;
every method in `--methods` attributes every run (methods that ask a model use `--model`), and
the trivial baselines are computed on the same runs from their steps alone:

  first step          the first step an agent wrote (not the task, not a tool's output)
  last step           the last step an agent wrote
  first worker step   the first step of kind "agent" (a worker's, not a plan or a routing step)
  most frequent agent the agent with the most steps, at its first step
  random step         the expected accuracy of a uniformly random agent-written step

Accuracy is exact: the agent ignoring case and punctuation, the step as an integer. Published
figures (other subsets, other scorers) stand beside them for orientation. For each method the
table also gives seconds per log, the process's peak RSS after it, and how many logs had text cut
(`cut`) or were read in several pieces (`pieces`: too long for the judge's context at once).
`--longest` takes the `--limit` longest logs (by characters) instead of the first. Progress goes
to stderr; `--json FILE` writes every row.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from counterfact.formats import import_whowhen
from counterfact.interventions import METHODS, Method, attribute, score_attributions
from counterfact.store import StepRecord, TraceStore, output_text

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "whowhen"
HALVES = ("Hand-Crafted", "Algorithm-Generated")
# (name, {half: (agent %, step %)}); None where the source gives no figure.
PUBLISHED: list[tuple[str, dict[str, tuple[float | None, float | None]]]] = [
    ("A2P (published)", {"Hand-Crafted": (None, 29.3), "Algorithm-Generated": (None, 47.5)}),
    ("AgenTracer-8B, with ground truth (published)", {"Hand-Crafted": (69.1, 20.7)}),
    ("last message, 44 other Magentic-One logs (measured earlier)", {"Hand-Crafted": (57.0, 20.0)}),
    ("first message, 44 other Magentic-One logs (measured earlier)", {"Hand-Crafted": (52.0, 2.0)}),
]


class Row(BaseModel):
    """One line of the table: a method, a baseline or a published figure, on one half."""

    half: str
    name: str
    kind: str  # "method", "baseline" or "published"
    runs: int | None = None
    agent: float | None = None  # accuracy in percent
    step: float | None = None
    seconds: float | None = None
    truncated: int | None = None  # logs with some text cut to fit the judge's context
    in_pieces: int | None = None  # logs read in more than one piece
    peak_rss_mb: float | None = None  # the process's peak resident memory after this method


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _written(steps: list[StepRecord]) -> list[StepRecord]:
    """Steps an agent wrote: neither the task nor a tool's output."""
    return [s for s in steps if s.kind not in ("input", "tool")] or steps


def _first(steps: list[StepRecord]) -> StepRecord:
    return _written(steps)[0]


def _last(steps: list[StepRecord]) -> StepRecord:
    return _written(steps)[-1]


def _first_worker(steps: list[StepRecord]) -> StepRecord:
    return next((s for s in steps if s.kind == "agent"), _first(steps))


def _most_frequent(steps: list[StepRecord]) -> StepRecord:
    written = _written(steps)
    top = Counter(s.agent or s.node for s in written).most_common(1)[0][0]
    return next(s for s in written if (s.agent or s.node) == top)


BASELINES: dict[str, Callable[[list[StepRecord]], StepRecord]] = {
    "first step": _first,
    "last step": _last,
    "first worker step": _first_worker,
    "most frequent agent": _most_frequent,
}


def _baselines(store: TraceStore, run_ids: list[str], half: str) -> list[Row]:
    """Every baseline's accuracy on the labelled runs (random as its exact expectation)."""
    hits: dict[str, list[float]] = {name: [0.0, 0.0] for name in [*BASELINES, "random step"]}
    runs = 0
    for run_id in run_ids:
        labels = store.get_run(run_id).labels
        truth_agent, truth_step = labels.get("mistake_agent"), labels.get("mistake_step")
        if not isinstance(truth_agent, str):
            continue
        runs += 1
        steps = store.steps(run_id)
        for name, pick in BASELINES.items():
            chosen = pick(steps)
            hits[name][0] += _key(chosen.agent or chosen.node) == _key(truth_agent)
            hits[name][1] += chosen.index == truth_step
        written = _written(steps)
        hits["random step"][0] += sum(_key(s.agent or s.node) == _key(truth_agent) for s in written) / len(written)
        hits["random step"][1] += sum(s.index == truth_step for s in written) / len(written)
    return [
        Row(half=half, name=name, kind="baseline", runs=runs,
            agent=100 * agent / runs if runs else None, step=100 * step / runs if runs else None)
        for name, (agent, step) in hits.items()
    ]


def _length(store: TraceStore, run_id: str) -> int:
    return sum(len(output_text(s.output)) for s in store.steps(run_id))


def _half(
    folder: Path, half: str, methods: list[Method], model: str, limit: int | None, *,
    longest: bool = False, max_prompt_tokens: int | None = None,
) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, TraceStore.open(str(Path(tmp) / "ww.db")) as store:
        run_ids = import_whowhen(store, [folder]).run_ids
        if longest:
            run_ids = sorted(run_ids, key=lambda run_id: -_length(store, run_id))
        run_ids = run_ids[:limit]
        for method in methods:
            done = 0

            def progress(_: object, method: Method = method) -> None:
                nonlocal done
                done += 1
                print(f"\r{half} {method}: {done}/{len(run_ids)}", end="", file=sys.stderr, flush=True)

            started = time.perf_counter()
            attribute(store, run_ids, None if method == "evidence" else model, method, on_done=progress,
                      max_prompt_tokens=max_prompt_tokens)
            seconds = time.perf_counter() - started
            print(file=sys.stderr)
            score = score_attributions(store, run_ids, method)
            rows.append(Row(half=half, name=method, kind="method", runs=score.runs,
                            agent=100 * score.agent_accuracy, step=100 * score.step_accuracy, seconds=seconds,
                            truncated=score.truncated, in_pieces=score.in_pieces,
                            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        rows += _baselines(store, run_ids, half)
    for name, figures in PUBLISHED:
        if half in figures:
            agent, step = figures[half]
            rows.append(Row(half=half, name=name, kind="published", agent=agent, step=step))
    return rows


def _table(rows: list[Row], halves: list[str]) -> Table:
    table = Table(title="Who&When log-only attribution: exact agent and step accuracy (%)")
    table.add_column("method / baseline")
    for half in halves:
        runs = next((r.runs for r in rows if r.half == half and r.runs), 0)
        table.add_column(f"{half} ({runs}) agent", justify="right")
        table.add_column(f"{half} step", justify="right")
    for column in ("time", "s/log", "cut", "pieces", "peak RSS"):
        table.add_column(column, justify="right")
    names = list(dict.fromkeys(r.name for r in rows))
    for name in names:
        cells: list[str] = []
        found = [r for half in halves for r in rows if r.half == half and r.name == name]
        for half in halves:
            row = next((r for r in found if r.half == half), None)
            cells += [_pct(row.agent if row else None), _pct(row.step if row else None)]
        seconds = sum(r.seconds or 0.0 for r in found)
        logs = sum(r.runs or 0 for r in found if r.seconds is not None)
        measured = [r for r in found if r.kind == "method"]
        table.add_row(
            name, *cells, f"{seconds:.1f} s" if seconds else "", f"{seconds / logs:.1f}" if seconds and logs else "",
            str(sum(r.truncated or 0 for r in measured)) if measured else "",
            str(sum(r.in_pieces or 0 for r in measured)) if measured else "",
            f"{max(r.peak_rss_mb or 0.0 for r in measured):.0f} MB" if measured else "",
        )
    return table


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with Hand-Crafted/ and Algorithm-Generated/")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["evidence"])
    parser.add_argument("--model", default="embedded", help="judge of the methods that ask a model")
    parser.add_argument("--limit", type=int, default=None, help="only the first N logs of each half")
    parser.add_argument("--longest", action="store_true", help="with --limit: the N longest logs, not the first")
    parser.add_argument("--halves", nargs="+", choices=HALVES, default=list(HALVES), help="which halves to run")
    parser.add_argument("--max-prompt-tokens", type=int, default=None, help="a smaller prompt budget for the judge")
    parser.add_argument("--json", type=Path, default=None, help="write every row to this file")
    args = parser.parse_args()
    halves = [h for h in args.halves if (args.data / h).is_dir()]
    if not halves:
        print(f"no Who&When halves under {args.data.resolve()}", file=sys.stderr)
        raise SystemExit(1)
    rows = [
        row for half in halves for row in _half(args.data / half, half, args.methods, args.model, args.limit,
                                                 longest=args.longest, max_prompt_tokens=args.max_prompt_tokens)
    ]
    Console(width=200).print(_table(rows, halves))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [r.model_dump() for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
