"""Looking at stored runs and auditing them: db upgrade, runs list/show/tree, verify, redact,
diff."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from counterfact._errors import CounterfactError
from counterfact.cli._common import (
    DbOption,
    FormatOption,
    SinceOption,
    _open,
    _print_json,
    console,
)
from counterfact.store import RunStatus, TraceStore, coloured


def db_upgrade(db: DbOption = None) -> None:
    """Apply pending schema migrations (opening a store does this too)."""
    store = TraceStore.open(db)
    console.print(f"schema at revision {store.schema_revision} in {store.display_url}")


def _parse_labels(labels: list[str]) -> dict[str, str]:
    parsed = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CounterfactError(f"--label takes KEY=VALUE, got {item!r}")
        parsed[key] = value
    return parsed


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


def runs_show(
    run: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Show a run as a tree of steps: agent, message, plan changes, calls, timings, errors."""
    from counterfact.store import render_run

    store = _open(db)
    record = store.get_run(run)
    steps = store.steps(record.id)
    if fmt == "json":
        _print_json(
            {"run": record.model_dump(mode="json"), "steps": [s.model_dump(mode="json") for s in steps]}
        )
        return
    console.print(render_run(record, steps))


def runs_tree(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix)")],
    db: DbOption = None,
) -> None:
    """A run and its replays as a tree, with the verdicts of their verifications."""
    from counterfact.interventions import run_tree

    console.print(run_tree(_open(db), run))


def verify(
    run: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes)")],
    db: DbOption = None,
) -> None:
    """Re-walk each run's hash chain; report the first step where it breaks."""
    from counterfact.store import verify_run

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


def redact(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix)")],
    text: Annotated[str, typer.Option("--text", help="remove every payload of the run containing this")],
    note: Annotated[str, typer.Option(help="why, kept with the redaction")] = "redacted by request",
    db: DbOption = None,
) -> None:
    """Redact payloads of a stored run; its hash chain stays verifiable."""
    from counterfact.store import redact_run_text

    count = redact_run_text(_open(db), run, text, note)
    console.print(f"redacted {count} payloads")


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
