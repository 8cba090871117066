"""Regression suites: suite from-runs, suite runs, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from counterfact.cli._common import DbOption, FormatOption, _open, _print_json, console


def from_runs_command(
    runs: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes): recorded, replayed or imported")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the suite file to write (YAML)")],
    name: Annotated[str | None, typer.Option(help="the suite's name (default: the file's stem)")] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="leave out runs whose input or expected answer is not known, instead of refusing")
    ] = False,
    db: DbOption = None,
) -> None:
    """Write the runs' inputs and expected answers as a task suite, to run again with
    `counterfact run --suite`."""
    from counterfact.graphs import suite_from_runs, write_suite

    made = suite_from_runs(_open(db), runs, name=name or output.stem, skip_unknown=skip_unknown)
    write_suite(made.suite, output)
    console.print(f"wrote {len(made.suite.tasks)} tasks to {escape(str(output))}")
    for skipped in made.skipped:
        console.print(f"[yellow]left out run {skipped.run_id[:12]}: {escape(skipped.reason)}[/yellow]", soft_wrap=True)


def suite_runs_command(fmt: FormatOption = "text", db: DbOption = None) -> None:
    """The suite runs in the store, newest first: what `counterfact compare` takes."""
    from counterfact.graphs import suite_runs

    found = suite_runs(_open(db))
    if fmt == "json":
        _print_json([s.model_dump(mode="json") for s in found])
        return
    table = Table(title=f"{len(found)} suite runs")
    for column in ("suite run", "suite", "workflow", "tasks", "passed", "runs", "started"):
        table.add_column(column, no_wrap=True)
    for s in found:
        table.add_row(s.id, s.suite, s.workflow, str(s.tasks), str(s.passed), str(s.runs), s.started.strftime("%m-%d %H:%M"))
    console.print(table)


_COLOURS = {"fixed": "green", "broken": "red", "still passing": "dim", "still failing": "dim", "only in A": "yellow", "only in B": "yellow"}


def compare_command(
    a: Annotated[str, typer.Argument(help="the suite run before (id or unique prefix)")],
    b: Annotated[str, typer.Argument(help="the suite run after")],
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Two suite runs side by side per task: fixed, broken, unchanged, with the exact
    McNemar test on the tasks that changed."""
    from counterfact.graphs import compare_suite_runs

    result = compare_suite_runs(_open(db), a, b)
    if fmt == "json":
        _print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"suite {escape(result.a.suite)}: {result.a.id} (A) against {result.b.id} (B)")
    for column in ("task", "A", "B", "change"):
        table.add_column(column, no_wrap=True)
    for row in result.tasks:
        colour = _COLOURS[row.change]
        table.add_row(escape(row.task_id), row.a, row.b, f"[{colour}]{row.change}[/{colour}]")
    console.print(table)
    console.print(
        f"fixed {result.fixed}, broken {result.broken}, unchanged {result.still_passing + result.still_failing} "
        f"({result.still_passing} passing, {result.still_failing} failing); "
        f"passed {result.a.passed}/{result.a.tasks} -> {result.b.passed}/{result.b.tasks}"
    )
    console.print(f"exact McNemar test, two-sided: p = {result.p_value:.3g}")
