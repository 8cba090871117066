"""How well the debugger decides and repairs, per strategy, on every failed run of a suite.

The workflow (the built-in demo by default) runs once on every task of the suite (fixed seed,
embedded model), then a debug session runs on each failed run for each strategy alone and for
all of them together, with the same budget. The table shows, per configuration: failed runs
repaired by a validated intervention, hypotheses decided (validated or refuted), replays and
seconds per decided hypothesis, and which strategy wrote each repair's validated fix. A repair
is checked for leakage: whether the fix's own text states the expected answer, and if so where
that text came from (the agent's own redraft, a tool result or the task, or the hypothesis
writer: a leak). DoVer's figures (GPT-4o on Magentic-One and AG2) are printed beside them.

    .venv/bin/python benchmarks/bench_debugger.py [--suite FILE] [--db FILE] [--budget 24]
        [--configs grounded,llm,resample,patch,all] [--json results.json]

With no --db, or a store with no run of the suite, the workflow runs first into it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from counterfact.agents import forget_answers  # noqa: E402
from counterfact.graphs import (  # noqa: E402
    DEMO_SUITE,
    DEMO_WORKFLOW,
    ModelPool,
    load_suite,
    load_workflow,
    run_suite,
)
from counterfact.interventions import (  # noqa: E402
    STRATEGIES,
    Budget,
    Debugger,
    DebugLog,  # noqa: E402
    DebugReport,
    Replayer,
    find_suspects,
    leaked,
)
from counterfact.interventions._grounding import numbers_in, output_text  # noqa: E402
from counterfact.store import TraceStore  # noqa: E402

DOVER = "DoVer (GPT-4o): 17.6-27.5 % of failed trials repaired, 29-67 % of hypotheses inconclusive"


def session(store: TraceStore, pool: ModelPool, run_id: str, strategies: list[str], args: argparse.Namespace) -> tuple[DebugReport, float]:
    """A debug session of the run, or the finished one already in the store (a benchmark that
    was stopped picks up where it was: running sessions resume, finished ones are reported)."""
    # A session stands for a `counterfact debug` in a process of its own, which starts without the
    # answers that recording the suite (or earlier sessions) left in this one. With sessions at
    # once this also empties the memo under the others: it can only cost them, never flatter.
    forget_answers()
    started = time.perf_counter()
    debugger = Debugger(
        Replayer(store, run_id, pool=pool), strategies=strategies,  # type: ignore[arg-type]
        budget=Budget(replays=args.budget), samples=args.samples, pairs=args.pairs,
        hypothesis_model=args.hypothesis_model, fill_batches=args.fill_batches,
        **({"parallel": args.parallel} if args.parallel else {}),
    )
    done = [s for s in DebugLog(store).sessions(run_id, strategies, status="done")
            if s.settings.get("budget", {}).get("replays") == args.budget]
    if done:
        return debugger.report_of(done[0].id), done[0].spent.seconds
    return debugger.run(), time.perf_counter() - started


def leak_source(store: TraceStore, report: DebugReport) -> str | None:
    """For a repaired run: None if the validated fix does not state the expected answer, else
    where its text came from: agent (a redraft or another run of the agent), tool/task, or
    hypothesis (a leak)."""
    for h in report.hypotheses:
        fix = next((f for f in h.fixes if f.verdict == "validated"), None)
        if fix is None or h.is_layer_scan:
            continue
        if not leaked(fix, report.expected):
            return None
        if fix.source in ("agent", "reference"):
            return "agent"
        steps = store.steps(report.run_id)
        grounds = " ".join(output_text(c.result) for s in steps for c in s.tool_calls) + " " + report.question
        wanted = numbers_in(report.expected or "")
        return "tool/task" if all(n in numbers_in(grounds) for n in wanted) else "hypothesis"
    return None


def summarise(store: TraceStore, outcomes: list[tuple[DebugReport, float]]) -> dict[str, Any]:
    """The figures of one configuration. Layer scans (which layers carry a validated
    transplant) are an analysis, not failure hypotheses: counted apart, their replays kept in."""
    hypotheses = [h for report, _ in outcomes for h in report.hypotheses if not h.is_layer_scan]
    scans = [h for report, _ in outcomes for h in report.hypotheses if h.is_layer_scan]
    decided = [h for h in hypotheses if h.decided]
    repaired = [report for report, _ in outcomes
                if any(h.verdict == "validated" and not h.is_layer_scan for h in report.hypotheses)]
    by_strategy: dict[str, int] = {}
    for report in repaired:
        h = next(h for h in report.hypotheses if h.verdict == "validated" and not h.is_layer_scan)
        fix = next(f for f in h.fixes if f.verdict == "validated")
        key = f"{fix.strategy}/{fix.label.split()[0]}"
        by_strategy[key] = by_strategy.get(key, 0) + 1
    leaks: dict[str, int] = {}
    for report in repaired:
        source = leak_source(store, report) or "none"
        leaks[source] = leaks.get(source, 0) + 1
    undecided: dict[str, int] = {}
    for h in hypotheses:
        if not h.decided:
            why = (h.note or "not verified").split(":")[0]
            undecided[why] = undecided.get(why, 0) + 1
    return {
        "runs": len(outcomes),
        "repaired": len(repaired),
        "hypotheses": len(hypotheses),
        "decided": len(decided),
        "validated": sum(h.verdict == "validated" for h in hypotheses),
        "refuted": sum(h.verdict == "refuted" for h in hypotheses),
        "replays": sum(report.spent.replays for report, _ in outcomes),
        "seconds": sum(s for _, s in outcomes),
        "repairs_by_fix": by_strategy,
        "leakage": leaks,
        "undecided_why": undecided,
        "no_hypothesis": sum(not report.hypotheses for report, _ in outcomes),
        "layer_scans": len(scans),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=str(DEMO_SUITE), help="task suite (default: the built-in one)")
    parser.add_argument("--workflow", default=str(DEMO_WORKFLOW), help="workflow (default: the built-in demo)")
    parser.add_argument("--db", help="store to use (else a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite run")
    parser.add_argument("--budget", type=int, default=24, help="replays per debug session")
    parser.add_argument("--samples", type=int, default=3, help="sampled fixes per hypothesis")
    parser.add_argument("--pairs", type=int, default=6, help="most pairs per fix on sampled runs")
    parser.add_argument("--configs", default=",".join([*STRATEGIES, "all"]), help="strategies alone, and 'all'")
    parser.add_argument("--hypothesis-model", default=None, help="model spec of the llm strategy")
    parser.add_argument("--runs", type=int, default=None, help="only the first N failed runs")
    parser.add_argument("--concurrency", type=int, default=4, help="sessions at once (the engine batches)")
    parser.add_argument("--parallel", type=int, default=None, help="debug --parallel (default: the debugger's)")
    parser.add_argument("--fill-batches", action=argparse.BooleanOptionalAction, default=None,
                        help="debug --fill-batches / --no-fill-batches (default: the debugger's own choice)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    console = Console(width=160)
    tmp = tempfile.TemporaryDirectory()
    store = TraceStore.open(args.db or str(Path(tmp.name) / "bench.db"))
    pool = ModelPool("embedded")
    suite = load_suite(args.suite)
    workflow = load_workflow(args.workflow)

    def originals() -> list[Any]:
        return [r for r in store.list_runs(workflow=workflow.name, limit=None)
                if r.parent_run_id is None and r.labels.get("suite") == suite.name]

    if not originals():
        with Progress(console=console) as progress:
            bar = progress.add_task(f"running {suite.name} ({len(suite.tasks)} tasks)", total=len(suite.tasks))
            run_suite(workflow, suite, store, pool=pool, seed=args.seed,
                      on_result=lambda *_: progress.advance(bar))
    runs = originals()
    failed = [r.id for r in runs if r.status == "failed"][: args.runs]
    console.print(f"{suite.name}: {len(runs) - len([r for r in runs if r.status == 'failed'])}/{len(runs)} tasks "
                  f"solved; debugging {len(failed)} failed runs, budget {args.budget} replays each")
    suspects = sum(bool(find_suspects(store.steps(r), store.get_run(r).task_input.get("question", ""))) for r in failed)
    console.print(f"grounded suspects found in {suspects}/{len(failed)} failed runs")

    results: dict[str, dict[str, Any]] = {}
    for config in args.configs.split(","):
        strategies = list(STRATEGIES) if config == "all" else [config]
        with Progress(console=console) as progress, ThreadPoolExecutor(max_workers=args.concurrency) as pool_x:
            bar = progress.add_task(f"debugging: {config}", total=len(failed))

            def one(run_id: str, strategies: list[str] = strategies, bar: Any = bar) -> tuple[DebugReport, float]:
                outcome = session(store, pool, run_id, strategies, args)
                progress.advance(bar)
                return outcome

            outcomes = list(pool_x.map(one, failed))
        results[config] = summarise(store, outcomes)
        console.print(f"{config}: {json.dumps(results[config])}")

    table = Table(title=f"Debugger on the failed runs of {suite.name} (embedded model, budget {args.budget})")
    for column in ("strategy", "runs", "repaired", "hypotheses", "decided", "validated", "refuted",
                   "replays / decided", "s / decided", "repairs by fix", "leakage (repairs)"):
        table.add_column(column, justify="right" if column not in ("repairs by fix", "leakage (repairs)") else "left")
    for config, r in results.items():
        per = (lambda x, d=r["decided"]: f"{x / d:.1f}" if d else "-")
        table.add_row(
            config, str(r["runs"]), f"{r['repaired']}/{r['runs']} ({100 * r['repaired'] / max(1, r['runs']):.0f}%)",
            str(r["hypotheses"]),
            f"{r['decided']}/{r['hypotheses']} ({100 * r['decided'] / max(1, r['hypotheses']):.0f}%)",
            str(r["validated"]), str(r["refuted"]), per(r["replays"]), per(r["seconds"]),
            ", ".join(f"{k} {v}" for k, v in sorted(r["repairs_by_fix"].items())) or "-",
            ", ".join(f"{k} {v}" for k, v in sorted(r["leakage"].items())) or "-",
        )
    console.print(table)
    for config, r in results.items():
        why = ", ".join(f"{k} {v}" for k, v in r["undecided_why"].items()) or "none"
        console.print(f"{config}: undecided hypotheses by reason: {why}; layer scans after a validated transplant: "
                      f"{r['layer_scans']}; runs with no hypothesis: {r['no_hypothesis']}")
    console.print(DOVER)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
