"""What the commands share: the options, the console, opening the store, an executor, a
replayer, progress bars and JSON output."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from counterfact._errors import CounterfactError
from counterfact.executors import ExecutorKind, ExecutorSettings
from counterfact.graphs import CheckerName
from counterfact.store import TraceStore

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
    """A progress bar the library drives through its (done, total) callback, drawn on a
    terminal only (in a pipe or a log its last frame would stand before an error line)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    stderr = Console(stderr=True)
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, disable=not shown or not stderr.is_terminal,
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
