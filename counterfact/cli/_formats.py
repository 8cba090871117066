"""Runs in and out of other formats: `import` (any format the library registers) and `export`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from counterfact._errors import CounterfactError
from counterfact.cli._common import SINCE_FORMATS, DbOption, _bar, _open, console


def import_command(
    paths: Annotated[list[str], typer.Argument(help="files or folders of runs, or a live source such as phoenix://HOST:PORT/PROJECT; "
                                                    "FORMAT first to force one (e.g. `import otel F`)")],
    format_name: Annotated[str | None, typer.Option("--format", help="read every file as this format (default: told by content)")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="YAML or JSON: FILE-NAME-or-RUN-ID: {mistake_agent, mistake_step, "
                                                "mistake_reason}, stored with the runs for `attribute` to score against")] = None,
    db: DbOption = None,
) -> None:
    """Import runs from the formats counterfact reads, each file's format told by its content; a folder goes on
    past files it cannot read and lists them at the end."""
    from counterfact.formats import (
        apply_labels,
        format_names,
        import_paths,
        load_labels,
    )

    truth = load_labels(labels) if labels is not None else None  # a bad labels file stops the import before it starts
    if paths[0] in format_names() and not Path(paths[0]).exists() and len(paths) > 1:
        format_name, paths = format_name or paths[0], paths[1:]  # the older `import FORMAT FILE...`
    with _bar("files") as on_progress:
        store = _open(db)
        reports = import_paths(store, [p if "://" in p else Path(p) for p in paths], format_name=format_name,
                               on_progress=on_progress)
    for report in reports:
        if report.files:
            where = report.files[0] if "://" in report.files[0] else f"{len(report.files)} {report.format} files"
            console.print(f"imported {len(report.run_ids)} runs with {report.steps} steps from {where}", highlight=False)
        for note in report.notes:
            console.print(f"  {note}", highlight=False)
        for skipped in report.skipped:
            console.print(f"[yellow]skipped[/yellow] {skipped.what}: {skipped.reason}", highlight=False)
    if truth is not None and labels is not None:
        for note in apply_labels(store, [r for report in reports for r in report.run_ids], truth, labels.name):
            console.print(f"  {note}", highlight=False)


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
