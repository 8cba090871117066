"""The `counterfact` command: each command parses, calls the library, and prints."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.exceptions import TyperException

from counterfact._errors import CounterfactError
from counterfact.agents import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TOKENS_LIMIT
from counterfact.executors import ExecutorKind, ExecutorSettings
from counterfact.graphs import CheckerName
from counterfact.interventions import Budget, Method, strategy_names
from counterfact.traces import RunStatus, TraceStore, coloured

app = typer.Typer(
    help="Record multi-agent LLM runs as replayable traces, and debug failures by replay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The trace database.", no_args_is_help=True)
runs_app = typer.Typer(help="Look at recorded runs.", no_args_is_help=True)
import_app = typer.Typer(help="Import runs from other formats.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(import_app, name="import")

console = Console()
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database file or SQLAlchemy URL [env: COUNTERFACT_DB; default ./counterfact.db]"),
]
OutputFormat = Literal["text", "json"]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="a table for people, or JSON for programs")]
SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]
SinceOption = Annotated[
    datetime | None, typer.Option(formats=SINCE_FORMATS, help="created at or after this date or time")
]
GraphOption = Annotated[
    str | None,
    typer.Option("--graph", help="module:attribute (or file.py:attribute) of the run's graph, builder or factory, if not the recorded one"),
]
CheckOption = Annotated[
    str | None, typer.Option("--check", help="module:function scoring the final state (bool or score); stored with the run")
]
ExpectOption = Annotated[
    str | None, typer.Option("--expect", help="expected answer at --answer in the final state; stored with the run")
]
CheckerOption = Annotated[
    CheckerName, typer.Option("--checker", help="how --expect is compared")
]
AnswerOption = Annotated[
    str, typer.Option("--answer", help="dotted path to the answer in the final state (indices may be negative)")
]
ForceOption = Annotated[bool, typer.Option("--force", help="replay even if the graph changed since the run")]
RecursionLimitOption = Annotated[int | None, typer.Option(
    "--recursion-limit", min=1, help="LangGraph recursion limit of the replays, counted as the run counts it (default: the run's own)")]
ExecutorOption = Annotated[
    ExecutorKind,
    typer.Option("--executor", envvar="COUNTERFACT_EXECUTOR", help="where runs and replays go: threads here, or a Ray cluster"),
]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", envvar="RAY_ADDRESS", help="ray: auto (the cluster `ray start` made) or ray://HOST:PORT; none starts a local Ray"),
]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="ray: worker processes (each takes --concurrency units at once)")]
EndpointLimitOption = Annotated[
    int | None,
    typer.Option("--endpoint-limit", min=1, envvar="COUNTERFACT_ENDPOINT_LIMIT", help="most model calls in flight per endpoint, across all workers"),
]


def _open(db: str | None) -> TraceStore:
    return TraceStore.open(db)


@contextmanager
def _executor(
    store: TraceStore, kind: ExecutorKind, *, address: str | None, workers: int, concurrency: int,
    endpoint_limit: int | None,
) -> Iterator[Any]:
    from counterfact.executors import open_executor

    settings = ExecutorSettings(
        kind=kind, address=address, workers=workers, concurrency=concurrency, endpoint_limit=endpoint_limit
    )
    with open_executor(store, settings) as executor:
        yield executor


def _replayer(
    db: str | None, run: str, *, model: str | None, graph: str | None, check: str | None,
    expect: str | None, checker: CheckerName, answer: str, force: bool, recursion_limit: int | None = None,
) -> Any:
    from counterfact.graphs import ExpectCheck
    from counterfact.interventions import Replayer

    if check is not None and expect is not None:
        raise CounterfactError("give --check or --expect, not both")
    given = ExpectCheck(expect=expect, checker=checker.value, answer=answer) if expect is not None else check
    return Replayer(_open(db), run, model=model, graph=graph, check=given, force=force,
                    recursion_limit=recursion_limit)


@contextmanager
def _bar(label: str, *, shown: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar the library drives through its (done, total) callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not shown,
    ) as progress:
        bar = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(bar, completed=done, total=total)


@contextmanager
def _suite_bar(label: str) -> Iterator[Callable[[Any, int], None]]:
    """A suite's progress in runs done (the summary table says how they went)."""
    done = itertools.count(1)
    with _bar(label) as update:
        yield lambda _summary, total: update(next(done), total)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


# -- db -------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply pending schema migrations (opening a store does this too)."""
    store = TraceStore.open(db)
    console.print(f"schema at revision {store.schema_revision} in {store.display_url}")


# -- runs -----------------------------------------------------------------------------------


def _parse_labels(labels: list[str]) -> dict[str, str]:
    parsed = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CounterfactError(f"--label takes KEY=VALUE, got {item!r}")
        parsed[key] = value
    return parsed


@runs_app.command("list")
def runs_list(
    status: Annotated[RunStatus | None, typer.Option(help="only runs in this state")] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow name")] = None,
    agent: Annotated[str | None, typer.Option(help="runs in which this agent took a step")] = None,
    label: Annotated[list[str], typer.Option(help="KEY=VALUE on the run's labels")] = [],  # noqa: B006
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """List runs, newest first."""
    runs = _open(db).list_runs(
        status=status,
        workflow=workflow,
        agent=agent,
        labels=_parse_labels(label),
        since=since,
        limit=limit,
    )
    if fmt == "json":
        _print_json([r.model_dump(mode="json") for r in runs])
        return
    table = Table(title=f"{len(runs)} runs")
    replays = any(r.parent_run_id for r in runs)
    columns = ["id", "workflow", "status", "outcome", "tokens", "created"] + (["parent"] if replays else [])
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=9 if column == "status" else None)
    for r in runs:
        outcome = "" if r.outcome is None else f"{'ok' if r.outcome.success else 'miss'} {r.outcome.score:.2f}"
        row = [
            r.id[:12],
            r.workflow,
            coloured(r.status),
            outcome,
            str(r.total_tokens),
            r.created_at.strftime("%m-%d %H:%M"),
        ]
        table.add_row(*row, *([(r.parent_run_id or "")[:12]] if replays else []))
    # piped, print the whole table (it is only as wide as its content): cut to 80 columns, a long
    # workflow name squeezed the ids down to "fd…" and pushed the other columns off the line
    (console if console.is_terminal else Console(width=1_000_000)).print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Show a run as a tree of steps: agent, message, plan changes, calls, timings, errors."""
    from counterfact.traces import render_run

    store = _open(db)
    record = store.get_run(run)
    steps = store.steps(record.id)
    if fmt == "json":
        _print_json(
            {"run": record.model_dump(mode="json"), "steps": [s.model_dump(mode="json") for s in steps]}
        )
        return
    console.print(render_run(record, steps))


# -- audit ----------------------------------------------------------------------------------


@app.command("verify")
def verify(
    run: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes)")],
    db: DbOption = None,
) -> None:
    """Re-walk each run's hash chain; report the first step where it breaks."""
    from counterfact.traces import verify_run

    store = _open(db)
    broken = 0
    for ref in run:
        report = verify_run(store, ref)
        if report.ok:
            extra = f", {report.redacted_blobs} redacted payloads" if report.redacted_blobs else ""
            console.print(f"[green]ok[/green] {report.run_id}: {report.steps} steps verified{extra}")
        else:
            broken += 1
            console.print(
                f"[red]broken[/red] {report.run_id}: at step {report.first_bad_step}: {report.problem}"
            )
    if broken:
        raise typer.Exit(1)


@app.command("redact")
def redact(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix)")],
    text: Annotated[str, typer.Option("--text", help="remove every payload of the run containing this")],
    note: Annotated[str, typer.Option(help="why, kept with the redaction")] = "redacted by request",
    db: DbOption = None,
) -> None:
    """Redact payloads of a stored run; its hash chain stays verifiable."""
    from counterfact.traces import redact_run_text

    count = redact_run_text(_open(db), run, text, note)
    console.print(f"redacted {count} payloads")


# -- import / export ------------------------------------------------------------------------


@import_app.command("whowhen")
def import_whowhen_command(
    paths: Annotated[list[Path], typer.Argument(help="Who&When log files or folders of them")],
    db: DbOption = None,
) -> None:
    """Import Who&When failure logs (Hand-Crafted and Algorithm-Generated) as runs."""
    from counterfact.traces import import_whowhen

    report = import_whowhen(_open(db), paths)
    console.print(f"imported {report.runs} runs with {report.steps} steps")
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {skipped.file}: {skipped.reason}")
    unmapped = sum(len(items) for items in report.unmapped.values())
    if unmapped:
        console.print(f"[yellow]{unmapped} items could not be fully mapped:[/yellow]")
        for file, items in report.unmapped.items():
            for item in items:
                console.print(f"  {file} {item.where}: {item.reason}", highlight=False)


@import_app.command("jsonl")
def import_jsonl_command(
    file: Annotated[Path, typer.Argument(help="a file written by `counterfact export`")],
    skip_existing: Annotated[bool, typer.Option(help="skip runs already in the store")] = False,
    db: DbOption = None,
) -> None:
    """Import runs exported as JSON lines (one transaction: all or nothing)."""
    from counterfact.traces import import_jsonl

    ids = import_jsonl(_open(db), file, skip_existing=skip_existing)
    console.print(f"imported {len(ids)} runs")
    for run_id in ids:
        console.print(f"  {run_id}")


@import_app.command("otel")
def import_otel_command(
    paths: Annotated[list[Path], typer.Argument(help="OTLP JSON files (or folders of .json/.jsonl files)")],
    db: DbOption = None,
) -> None:
    """Import OpenTelemetry traces (OTLP JSON, GenAI or OpenInference spans) as log-only runs."""
    from counterfact.traces import import_otel

    report = import_otel(_open(db), paths)
    console.print(
        f"imported {len(report.runs)} runs from {report.spans} spans: {report.steps} steps, "
        f"{report.model_calls} model calls, {report.tool_calls} tool calls"
    )
    if report.unknown_spans:
        console.print(f"{report.unknown_spans} spans of no known kind were kept as generic steps or calls' context")
    if report.verifications:
        console.print(f"{report.verifications} counterfact verification traces are not runs: skipped")
    if report.existing:
        console.print(f"{len(report.existing)} traces were already runs in the store: skipped")


@app.command("export")
def export_command(
    runs: Annotated[list[str] | None, typer.Argument(help="run ids (or unique prefixes); none: every run (or --since)")] = None,
    jsonl: Annotated[Path | None, typer.Option("--jsonl", help="write runs (steps, payloads, checkpoints) as JSON lines, to import elsewhere")] = None,
    otlp: Annotated[str | None, typer.Option("--otlp", help="send runs as OpenTelemetry spans to this OTLP/HTTP collector URL")] = None,
    otlp_json: Annotated[Path | None, typer.Option("--otlp-json", help="write runs as OpenTelemetry spans in OTLP JSON lines")] = None,
    since: Annotated[
        datetime | None,
        typer.Option(formats=SINCE_FORMATS, help="with no run ids: the runs created at or after this date or time"),
    ] = None,
    db: DbOption = None,
) -> None:
    """Export runs: as JSON lines to import elsewhere, or as OpenTelemetry spans."""
    from counterfact.traces import export_jsonl, export_otlp, write_otlp_json

    targets = [t for t in (jsonl, otlp, otlp_json) if t is not None]
    if len(targets) != 1:
        raise CounterfactError("give exactly one of --jsonl FILE, --otlp URL or --otlp-json FILE")
    store = _open(db)
    if runs and since:
        raise CounterfactError("give run ids or --since, not both")
    ids = [store.resolve_run_id(r) for r in runs] if runs else [
        r.id for r in reversed(store.list_runs(since=since, limit=None))]
    if not ids:
        raise CounterfactError("no run to export" + (f" since {since}" if since else ""))
    if jsonl is not None:
        written = export_jsonl(store, ids, jsonl)
        console.print(f"exported {len(written)} runs to {jsonl}", soft_wrap=True)
        return
    with _bar("runs") as on_progress:
        if otlp is not None:
            count, spans = export_otlp(store, ids, otlp, on_progress=on_progress)
        else:
            count, spans = write_otlp_json(store, ids, otlp_json, on_progress=on_progress)  # type: ignore[arg-type]
    console.print(f"exported {count} runs as {spans} spans to {otlp or otlp_json}", soft_wrap=True)


# -- running workflows ----------------------------------------------------------------------


def _workflow(ref: str) -> Any:
    from counterfact.graphs import DEMO_WORKFLOW, load_workflow

    return load_workflow(DEMO_WORKFLOW if ref == "demo" else Path(ref))


def _print_summary(results: list[Any], title: str) -> None:
    from counterfact.graphs import summary_rows

    table = Table(title=title)
    for column in ("run", "task", "success", "answer", "expected", "steps", "tokens", "seconds"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for row in summary_rows(results):
        table.add_row(*row)
    console.print(table)
    scored = [r for r in results if r.expected is not None]
    if scored:
        ok = sum(r.success for r in scored)
        console.print(f"success: {ok}/{len(scored)} ({100 * ok / len(scored):.0f}%)")
    cut_off = [r for r in results if r.status == "running"]
    if cut_off:
        console.print(f"[yellow]{len(cut_off)} runs were cut off ({cut_off[0].error}): "
                      "finish them with `counterfact resume --interrupted`[/yellow]", soft_wrap=True)


@app.command("run")
def run_command(
    workflow: Annotated[str, typer.Argument(help="a workflow YAML file, or `demo`")],
    task: Annotated[str | None, typer.Option(help="one question to run the workflow on")] = None,
    suite: Annotated[Path | None, typer.Option(help="a suite of tasks (YAML or JSONL)")] = None,
    model: Annotated[str | None, typer.Option(help="run every agent on this model spec")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="runs per task")] = 1,
    limit: Annotated[int | None, typer.Option(help="only the first N tasks")] = None,
    concurrency: Annotated[int, typer.Option(help="runs at once per process (a local model batches them)")] = 8,
    seed: Annotated[int | None, typer.Option(help="base seed for sampling agents")] = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    db: DbOption = None,
) -> None:
    """Run a workflow on a task or a suite; every run is recorded."""
    from counterfact.graphs import Suite, Task, load_suite, run_suite

    if (task is None) == (suite is None):
        raise CounterfactError("give exactly one of --task TEXT or --suite FILE")
    spec = _workflow(workflow)
    tasks = load_suite(suite) if suite else Suite(name="adhoc", tasks=[Task(id="task", question=task or "")])
    store = _open(db)
    with _executor(store, executor, address=address, workers=workers, concurrency=concurrency,
                   endpoint_limit=endpoint_limit) as where, _suite_bar(f"{spec.name} on {tasks.name}") as on_result:
        results = run_suite(
            spec, tasks, store, model=model, repeats=repeats, limit=limit, seed=seed, on_result=on_result,
            executor=where,
        )
    _print_summary(results, f"{spec.name} on {tasks.name}")


@app.command("resume")
def resume_command(
    runs: Annotated[list[str] | None, typer.Argument(help="run ids (or unique prefixes) of interrupted runs")] = None,
    interrupted: Annotated[
        bool, typer.Option("--interrupted", help="every run left running (a crash, a lost database): make sure none is still going")
    ] = False,
    model: Annotated[str | None, typer.Option(help="model spec, if not the run's own")] = None,
    db: DbOption = None,
) -> None:
    """Continue interrupted runs (crash, Ctrl-C, database restart) from their last checkpoints;
    a cut-off replay goes on with the edit, seed and settings it was started with."""
    from counterfact.graphs import resume_run
    from counterfact.interventions import resume_replay

    store = _open(db)
    if interrupted == bool(runs):
        raise CounterfactError("name the runs to resume, or give --interrupted (not both)")
    chosen = [store.get_run(run) for run in runs or []] or [
        r for r in store.list_runs(status="running", limit=None)
        if "workflow_spec" in r.labels or r.parent_run_id is not None
    ]
    if not chosen:
        raise CounterfactError("no interrupted run to resume")
    suite_runs = [resume_run(store, run.id, model=model) for run in chosen if run.parent_run_id is None]
    if suite_runs:
        _print_summary(suite_runs, "resumed")
    for run in chosen:
        if run.parent_run_id is not None:
            replay = resume_replay(store, run.id, model=model)
            console.print(f"resumed replay {replay.run_id[:12]} of run {run.parent_run_id[:12]} ({replay.arm}): "
                          f"{coloured(replay.status)}, answer {escape(repr(replay.answer))}")


@app.command("demo")
def demo_command(
    limit: Annotated[int | None, typer.Option(help="only the first N tasks of the suite")] = None,
    concurrency: Annotated[int, typer.Option(help="runs at once")] = 8,
    db: DbOption = None,
) -> None:
    """Run the built-in workflow on the built-in suite with the embedded model."""
    import time

    from counterfact.graphs import DEMO_SUITE, load_suite, run_suite

    started = time.perf_counter()
    store = _open(db)
    spec = _workflow("demo")
    console.print(
        f"[bold]counterfact demo[/bold]: workflow {spec.name!r} ({spec.topology}, "
        f"{len(spec.agents)} agents) on the built-in suite, embedded model, store {store.display_url}"
    )
    with _suite_bar("demo") as on_result:
        results = run_suite(
            spec, load_suite(DEMO_SUITE), store, model="embedded", limit=limit, concurrency=concurrency,
            on_result=on_result,
        )
    _print_summary(results, "demo")
    console.print(f"took {time.perf_counter() - started:.0f} s")
    failed = next((r for r in results if not r.success), None)
    if failed is not None:
        flag = f" --db {db}" if db else ""
        console.print("\nLook at a failed run, and debug it:")
        console.print(f"  counterfact runs list --status failed{flag}")
        console.print(f"  counterfact runs show {failed.run_id[:12]}{flag}")
        console.print(f"  counterfact replay {failed.run_id[:12]} --at STEP --edit EDIT.yaml{flag}")
        console.print(f"  counterfact debug {failed.run_id[:12]}{flag}")


# -- replay and verification ----------------------------------------------------------------


@app.command("replay")
def replay_command(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix) of a recorded run")],
    at: Annotated[str | None, typer.Option("--at", help="step: index, NODE#N or agent:NAME#N")] = None,
    edit: Annotated[Path | None, typer.Option("--edit", help="edit file (YAML or JSON)")] = None,
    pairs: Annotated[int, typer.Option(min=1, help="replays per arm: treatment and control replays paired by seed")] = 3,
    seed: Annotated[int, typer.Option(help="first seed; pair i uses seed+i in both arms")] = 0,
    temperature: Annotated[float | None, typer.Option(help="sample every agent at this temperature")] = None,
    live_tools: Annotated[bool, typer.Option(help="re-run tools instead of reusing recorded results")] = False,
    model: Annotated[str | None, typer.Option(help="model spec, if not the run's own")] = None,
    graph: GraphOption = None,
    check: CheckOption = None,
    expect: ExpectOption = None,
    checker: CheckerOption = CheckerName.normalized,
    answer: AnswerOption = "messages.-1.content",
    force: ForceOption = False,
    recursion_limit: RecursionLimitOption = None,
    concurrency: Annotated[int, typer.Option(help="replays at once per process")] = 4,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Replay a run from a step with an edit, against a control arm, and give a verdict.

    Without --edit, replays the run from the step once, unchanged (a fidelity check).
    """
    from counterfact.interventions import load_intervention, verify

    intervention = load_intervention(edit) if edit else None  # parse errors before anything runs
    replayer = _replayer(db, run, model=model, graph=graph, check=check, expect=expect,
                         checker=checker, answer=answer, force=force, recursion_limit=recursion_limit)
    plan = replayer.compile(intervention, at)
    if intervention is None:
        result = replayer.replay(plan, arm="control", seed=seed, temperature=temperature, live_tools=live_tools)
        if fmt == "json":
            _print_json(result.model_dump(mode="json"))
        else:
            console.print(
                f"replay {result.run_id} from step {plan.step}: {result.status}, answer {result.answer!r}"
            )
        return
    with _executor(replayer.store, executor, address=address, workers=workers, concurrency=concurrency,
                   endpoint_limit=endpoint_limit) as where, _bar("replays", shown=fmt == "text") as on_progress:
        report = verify(
            replayer, plan, pairs=pairs, seed=seed, temperature=temperature, live_tools=live_tools,
            on_progress=on_progress, executor=where,
        )
    if fmt == "json":
        _print_json(report.model_dump(mode="json"))
        return
    _print_verdict(report)


def _print_verdict(report: Any) -> None:
    c = report.comparison
    console.print(f"[bold]{coloured(report.verdict)}[/bold]: {report.reason}")
    table = Table(show_header=True)
    for column in ("", "with edit", "control"):
        table.add_column(column)
    table.add_row("success", f"{c.treatment_successes}/{c.n} ({c.treatment_rate:.0%})", f"{c.control_successes}/{c.n} ({c.control_rate:.0%})")
    table.add_row("answers", ", ".join(str(r.answer) for r in report.treatment), ", ".join(str(r.answer) for r in report.control))
    table.add_row("runs", " ".join(r.run_id[:8] for r in report.treatment), " ".join(r.run_id[:8] for r in report.control))
    console.print(table)
    console.print(
        f"difference {c.difference:+.2f} (95% CI {c.ci_low:+.2f}..{c.ci_high:+.2f}), "
        f"one-sided exact p = {c.p_value:.3g}"
        + (", deterministic (greedy) replays" if report.deterministic else "")
    )
    console.print(f"applied: {'yes' if report.applied else 'no'} ({report.applied_detail})")
    console.print(f"verdict {report.id[:12]} for intervention {report.intervention_id[:12]}")


def _least(model: type[BaseModel], field: str) -> int:
    """The lower bound (`ge`) a pydantic model sets on `field`, so an option's range is the model's."""
    return next(int(rule.ge) for rule in model.model_fields[field].metadata if getattr(rule, "ge", None) is not None)


@app.command("debug")
def debug_command(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix) of a failed run")],
    strategy: Annotated[str, typer.Option(help=f"{', '.join(strategy_names())}, or all (comma-separated)")] = "all",
    budget: Annotated[int, typer.Option(min=_least(Budget, "replays"), help="most replays to spend")] = 24,
    budget_tokens: Annotated[int | None, typer.Option(min=_least(Budget, "tokens"), help="most tokens to spend on replays")] = None,
    pairs: Annotated[int, typer.Option(min=1, help="most treatment/control pairs per fix (sampled runs; greedy runs need one)")] = 6,
    samples: Annotated[int, typer.Option(help="sampled redrafts per hypothesis, and fresh samples per resampled step")] = 3,
    temperature: Annotated[float, typer.Option(help="sampling temperature of resampling")] = 0.8,
    hypothesis_model: Annotated[str | None, typer.Option(help="model spec for the llm strategy")] = None,
    reference: Annotated[str | None, typer.Option(help="a successful run of the same task, to patch from")] = None,
    html: Annotated[Path | None, typer.Option(help="also write the report as an HTML page")] = None,
    session: Annotated[str | None, typer.Option(help="show this stored session of the run again instead of running one")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="finish the run's interrupted session (an error if there is none)")] = False,
    parallel: Annotated[int, typer.Option(min=1, help="fixes of different hypotheses verified at once")] = 4,
    model: Annotated[str | None, typer.Option(help="model spec for replays, if not the run's own")] = None,
    graph: GraphOption = None,
    check: CheckOption = None,
    expect: ExpectOption = None,
    checker: CheckerOption = CheckerName.normalized,
    answer: AnswerOption = "messages.-1.content",
    force: ForceOption = False,
    recursion_limit: RecursionLimitOption = None,
    concurrency: Annotated[int, typer.Option(help="replays at once per process")] = 8,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Find why a run failed: hypotheses from the chosen strategies, each verified by replay.

    An interrupted session (Ctrl-C, a crash) resumes from what the store holds when the same
    command runs again, or explicitly with --resume."""
    from counterfact.interventions import Debugger, report_table, strategies_from, write_html

    chosen = strategies_from([name.strip() for name in strategy.split(",")])
    debugger = Debugger(
        _replayer(db, run, model=model, graph=graph, check=check, expect=expect,
                  checker=checker, answer=answer, force=force, recursion_limit=recursion_limit),
        strategies=chosen,
        budget=Budget(replays=budget, tokens=budget_tokens),
        pairs=pairs,
        samples=samples,
        temperature=temperature,
        hypothesis_model=hypothesis_model,
        reference=reference,
        on_event=lambda message: console.print(f"[dim]{message}[/dim]") if fmt == "text" else None,
        parallel=parallel,
    )
    if resume and debugger.store.unfinished_debug_session(debugger.replayer.parent.id, chosen) is None:
        raise CounterfactError(f"run {debugger.replayer.parent.id[:12]} has no interrupted debug session with strategies {', '.join(chosen)}")
    if session is not None:
        report = debugger.report_of(session)
    else:
        with _executor(debugger.store, executor, address=address, workers=workers, concurrency=concurrency,
                       endpoint_limit=endpoint_limit) as where, _bar("replays", shown=fmt == "text") as on_progress:
            debugger.executor = where
            debugger.on_progress = on_progress
            report = debugger.run()
    if html is not None:
        write_html(report, html)
    if fmt == "json":
        _print_json(report.model_dump(mode="json"))
        return
    console.print(report_table(report))
    if html is not None:
        console.print(f"HTML report: {html}")


@app.command("attribute")
def attribute_command(
    runs: Annotated[list[str] | None, typer.Argument(help="run ids (default: every imported run of --workflow)")] = None,
    workflow: Annotated[str, typer.Option(help="which runs, when none are named")] = "whowhen/algorithm-generated",
    method: Annotated[Method, typer.Option(help="how the judge reads the log")] = "all_at_once",
    model: Annotated[str, typer.Option(help="model spec of the judge")] = "embedded",
    score: Annotated[bool, typer.Option("--score", help="score stored predictions instead of making them")] = False,
    limit: Annotated[int | None, typer.Option(help="only the first N runs")] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="cut longer logs to fit (see docs)")] = None,
    concurrency: Annotated[int, typer.Option(help="runs at once per process (a local model batches them)")] = 8,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Log-only failure attribution (which agent, which step) on runs that cannot be replayed."""
    from rich.progress import Progress

    from counterfact.interventions import attribute, score_attributions

    store = _open(db)
    ids = [store.resolve_run_id(r) for r in runs] if runs else [
        r.id for r in store.list_runs(workflow=workflow, limit=None)
    ]
    ids = ids[:limit] if limit else ids
    if not ids:
        raise CounterfactError(f"no runs to attribute (none named, none of workflow {workflow!r})")
    if not score:
        with _executor(store, executor, address=address, workers=workers, concurrency=concurrency,
                       endpoint_limit=endpoint_limit) as where, Progress(disable=fmt != "text") as progress:
            bar = progress.add_task(f"attributing ({method})", total=len(ids))
            attribute(
                store, ids, model, method, max_prompt_tokens=max_prompt_tokens,  # type: ignore[arg-type]
                on_done=lambda _: progress.advance(bar), executor=where,
            )
    result = score_attributions(store, ids, method)  # type: ignore[arg-type]
    if fmt == "json":
        _print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"attribution ({method}) against the labels")
    for column in ("runs", "agent accuracy", "exact-step accuracy", "runs cut to fit", "errors", "unpredicted"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.runs),
        f"{result.agent_correct}/{result.runs} ({result.agent_accuracy:.0%})",
        f"{result.step_correct}/{result.step_runs} ({result.step_accuracy:.0%})",
        str(result.truncated), str(result.errors), str(len(result.unpredicted)),
    )
    console.print(table)


@runs_app.command("tree")
def runs_tree(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix)")],
    db: DbOption = None,
) -> None:
    """A run and its replays as a tree, with the verdicts of their verifications."""
    from counterfact.interventions import run_tree

    console.print(run_tree(_open(db), run))


@app.command("diff")
def diff_command(
    run_a: Annotated[str, typer.Argument(help="a run id (or prefix)")],
    run_b: Annotated[str, typer.Argument(help="another run id (or prefix)")],
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Two runs' steps aligned by index, with what changed (bold) and what did not (dim)."""
    from counterfact.interventions import diff_runs, diff_table

    store = _open(db)
    a, b = store.resolve_run_id(run_a), store.resolve_run_id(run_b)
    rows = diff_runs(store, a, b)
    if fmt == "json":
        _print_json([r.model_dump() for r in rows])
        return
    console.print(diff_table(rows, a, b))


# -- models ---------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    model: Annotated[str, typer.Option(help="embedded | openai:NAME | local:PATH[#GGUF_FILE]")] = "embedded",
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    max_request_bytes: Annotated[
        int,
        typer.Option(min=1, envvar="COUNTERFACT_MAX_REQUEST_BYTES", help="largest request body accepted; larger is a 413"),
    ] = DEFAULT_MAX_REQUEST_BYTES,
    max_tokens_limit: Annotated[
        int,
        typer.Option(min=1, envvar="COUNTERFACT_MAX_TOKENS_LIMIT", help="largest max_tokens a request may ask for; more is a 400"),
    ] = DEFAULT_MAX_TOKENS_LIMIT,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from counterfact.agents import serve

    serve(model, host=host, port=port, max_request_bytes=max_request_bytes, max_tokens_limit=max_tokens_limit)


@app.command("ui")
def ui_command(
    host: Annotated[str, typer.Option(help="address to bind (loopback by default; elsewhere every request needs the token)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8765,
    token: Annotated[str | None, typer.Option(help="the token to require (default: a new random one, printed)", envvar="COUNTERFACT_UI_TOKEN")] = None,
    db: DbOption = None,
) -> None:
    """A local web viewer: runs, steps, fork trees, comparisons, debug sessions; edit and replay."""
    import secrets

    from counterfact.ui import is_loopback, serve

    token = token or secrets.token_urlsafe(24)
    store = _open(db)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"

    def announce() -> None:
        console.print(f"[bold]counterfact ui[/bold] on {store.display_url}", soft_wrap=True)
        console.print(f"open {url}" if is_loopback(host) else f"open {url}?token={token}", soft_wrap=True)
        console.print(f"API token (header X-Counterfact-Token): {token}", soft_wrap=True)

    serve(store, host=host, port=port, token=token, on_ready=announce)


def main() -> None:
    """Entry point: user errors (bad arguments included) become one line on stderr and exit
    code 1."""
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # typer's own parsing: a bad or missing argument
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        sys.stderr.write(f"error: {' '.join(message.replace('Value error, ', '').split())}\n")
        sys.exit(1)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except CounterfactError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
