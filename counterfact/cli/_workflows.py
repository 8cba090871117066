"""Running workflows: run, resume, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from counterfact._errors import CounterfactError
from counterfact.cli._common import (
    AddressOption,
    DbOption,
    EndpointLimitOption,
    ExecutorOption,
    WorkersOption,
    _executor,
    _open,
    _suite_bar,
    console,
)
from counterfact.store import coloured


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


def run_command(
    workflow: Annotated[str | None, typer.Argument(help="a workflow YAML file, or `demo` (or give --graph)")] = None,
    graph: Annotated[str | None, typer.Option(
        "--graph", help="module:attribute (or file.py:attribute) of your own LangGraph app, its builder or factory, run instead of a workflow")] = None,
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
    """Run a workflow (or your own graph) on a task or a suite; every run is recorded, and a
    suite's runs are one suite run, for `counterfact compare`."""
    from counterfact.graphs import (
        SUITE_RUN_LABEL,
        Suite,
        Task,
        load_suite,
        new_suite_run_id,
        run_graph_suite,
        run_suite,
        tag_suite_run,
    )

    if (task is None) == (suite is None):
        raise CounterfactError("give exactly one of --task TEXT or --suite FILE")
    if (workflow is None) == (graph is None):
        raise CounterfactError("give either a workflow (a YAML file or `demo`) or --graph module:attribute")
    if graph is not None and (model is not None or seed is not None or executor != "local"):
        raise CounterfactError("--model, --seed and --executor apply to workflows; --graph runs your app here as it is")
    tasks = load_suite(suite) if suite else Suite(name="adhoc", tasks=[Task(id="task", question=task or "")])
    suite_run = new_suite_run_id()
    store = _open(db)
    if graph is not None:
        with _suite_bar(f"{graph} on {tasks.name}") as on_result:
            results = run_graph_suite(graph, tasks, store, labels={SUITE_RUN_LABEL: suite_run}, repeats=repeats,
                                      limit=limit, concurrency=concurrency, on_result=on_result)
        _print_summary(results, f"{graph} on {tasks.name}")
    else:
        spec = _workflow(workflow or "")
        with _executor(store, executor, address=address, workers=workers, concurrency=concurrency,
                       endpoint_limit=endpoint_limit) as where, _suite_bar(f"{spec.name} on {tasks.name}") as on_result:
            results = run_suite(
                spec, tasks, store, model=model, repeats=repeats, limit=limit, seed=seed, on_result=on_result,
                executor=where,
            )
        tag_suite_run(store, [r.run_id for r in results], suite_run)
        _print_summary(results, f"{spec.name} on {tasks.name}")
    console.print(f"suite run {suite_run} (compare two with `counterfact compare A B`)")


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
    from counterfact.interventions import resume_runs

    if interrupted == bool(runs):
        raise CounterfactError("name the runs to resume, or give --interrupted (not both)")
    resumed = resume_runs(_open(db), runs, model=model)
    if resumed.runs:
        _print_summary(resumed.runs, "resumed")
    for resumed_replay in resumed.replays:
        replay = resumed_replay.replay
        console.print(f"resumed replay {replay.run_id[:12]} of run {resumed_replay.parent_run_id[:12]} ({replay.arm}): "
                      f"{coloured(replay.status)}, answer {escape(repr(replay.answer))}")


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
