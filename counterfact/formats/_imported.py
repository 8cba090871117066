"""What the importers of other tools' logs share: reading a file as JSON, saying in one line what
is wrong in it, and writing the runs found all or nothing, skipping those already stored.

Run ids are made from what a run is (its content, or the id its tool gave it), so importing a
file twice, or two files holding one run, stores the run once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from counterfact._files import read_text_file
from counterfact.capture import canonical_json, sha256_hex
from counterfact.formats._base import (
    ExportReport,
    FormatError,
    ImportReport,
    Progress,
    Skipped,
)
from counterfact.store import RunRecord, StepRecord, TraceStore

NOTHING = "nothing was imported"


class ParsedRun(BaseModel):
    """One run found in a file, mapped and checked, not written yet."""

    where: str  # the file, and the entry of it the run came from
    run: RunRecord
    steps: list[StepRecord]
    notes: list[str] = Field(default_factory=list)  # what was kept only partly


def bad_entry(path: Path | str, where: str, problem: str, expected: str) -> FormatError:
    """The one line a bad file gets: the file, the entry, what is wrong and what was expected."""
    return FormatError(f"{path}: {where} {problem}; expected {expected}; {NOTHING}")


def kind_of(value: Any) -> str:
    """A JSON value's kind as a person says it: "a list", "a string", "null"."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def load_json(path: Path, expected: str) -> Any:
    """The file parsed as one JSON document, or the one-line error naming it."""
    text = read_text_file(path, "log", FormatError, then=f"; {NOTHING}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); expected {expected}; {NOTHING}") from None
    except RecursionError:
        raise FormatError(f"{path}: nests too deeply to read; expected {expected}; {NOTHING}") from None


def naive_utc(when: datetime) -> datetime:
    """A time as the store keeps it, naive UTC (an aware time would not survive the round trip
    its chain digest is checked by)."""
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo is not None else when


def content_id(prefix: str, value: Any) -> str:
    """A run id from a run's content: the same run imported twice is one run."""
    return f"{prefix}-{sha256_hex(canonical_json(value))[:20]}"


def write_parsed(store: TraceStore, format_name: str, files: Sequence[Path], parsed: Sequence[ParsedRun],
                 on_progress: Progress | None = None) -> ImportReport:
    """Write the runs in one transaction; runs already stored, or twice in this import, are
    skipped and reported."""
    report = ImportReport(format=format_name, files=[str(f) for f in files])
    existing = store.existing_run_ids([p.run.id for p in parsed])
    seen: dict[str, str] = {}
    todo: list[ParsedRun] = []
    for p in parsed:
        if p.run.id in existing:
            report.skipped.append(Skipped(what=p.where, reason=f"already in the store as run {p.run.id}"))
        elif p.run.id in seen:
            report.skipped.append(Skipped(what=p.where, reason=f"the same run as {seen[p.run.id]}"))
        else:
            seen[p.run.id] = p.where
            todo.append(p)
    try:
        with store.begin() as conn:
            for p in todo:
                store.write_run(p.run, p.steps, conn)
    except IntegrityError:
        raise FormatError(f"{format_name} import collided with runs written meanwhile; {NOTHING}, retry") from None
    for p in todo:
        report.run_ids.append(p.run.id)
        report.steps += len(p.steps)
        report.notes += [f"{p.where}: {note}" for note in p.notes]
    if on_progress is not None:
        on_progress(len(files), len(files))
    return report


class ReadOnlyFormat:
    """A format runs are only read from: each file parsed into runs (`parse`), the files of one
    import written together, all or nothing; writing one is refused. A plug-in subclasses it
    with its `name`, `summary`, `noun`, `detect` and `parse`."""

    name: str
    summary: str
    noun: str  # what its files are, as the refusal to write one says it ("chat transcripts")
    suffixes: tuple[str, ...] = (".json",)
    writes = False

    def parse(self, path: Path) -> list[ParsedRun]:
        raise NotImplementedError

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: Progress | None = None) -> ImportReport:
        return write_parsed(store, self.name, files, [p for f in files for p in self.parse(f)], on_progress)

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path,
              on_progress: Progress | None = None) -> ExportReport:
        raise FormatError(f"{self.noun} are read, not written")
