"""Runs in and out of other formats: import whowhen/jsonl/otel, export."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from counterfact._errors import CounterfactError
from counterfact.cli._common import SINCE_FORMATS, DbOption, _bar, _open, console


def import_whowhen_command(
    paths: Annotated[list[Path], typer.Argument(help="Who&When log files or folders of them")],
    db: DbOption = None,
) -> None:
    """Import Who&When failure logs (Hand-Crafted and Algorithm-Generated) as runs."""
    from counterfact.formats import import_whowhen

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


def import_jsonl_command(
    file: Annotated[Path, typer.Argument(help="a file written by `counterfact export`")],
    skip_existing: Annotated[bool, typer.Option(help="skip runs already in the store")] = False,
    db: DbOption = None,
) -> None:
    """Import runs exported as JSON lines (one transaction: all or nothing)."""
    from counterfact.formats import import_jsonl

    ids = import_jsonl(_open(db), file, skip_existing=skip_existing)
    console.print(f"imported {len(ids)} runs")
    for run_id in ids:
        console.print(f"  {run_id}")


def import_otel_command(
    paths: Annotated[list[Path], typer.Argument(help="OTLP JSON files (or folders of .json/.jsonl files)")],
    db: DbOption = None,
) -> None:
    """Import OpenTelemetry traces (OTLP JSON, GenAI or OpenInference spans) as log-only runs."""
    from counterfact.formats import import_otel

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
    from counterfact.formats import export_jsonl, export_otlp, write_otlp_json

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
