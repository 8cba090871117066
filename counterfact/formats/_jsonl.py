"""Moving runs between stores as JSON Lines: one self-contained line per run.

A line holds the run record, its steps with payloads and calls inline, the activations its
model calls captured, and the LangGraph checkpoints and checkpoint writes of the run's thread
(bytes as base64), so an imported run can be replayed and forked like a recorded one. Import
rebuilds each step's hash-chain link from the content and checks it against the exported
one, so an altered export is refused instead of silently becoming a different trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainSerializer, PlainValidator, ValidationError
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from counterfact._errors import validation_message
from counterfact._files import read_text_file
from counterfact.formats._base import (
    ExportReport,
    ImportReport,
    Progress,
    Sniff,
    register_format,
)
from counterfact.store import RunRecord, StepRecord, StoreError, TraceStore
from counterfact.store.schema import (
    Blob,
    Checkpoint,
    CheckpointWrite,
    ModelCall,
    Run,
    Step,
)

FORMAT = "counterfact-run/1"


def _b64decode(value: Any) -> bytes:
    """Strict base64, so a damaged export fails validation instead of importing garbage."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


B64 = Annotated[
    bytes,
    PlainValidator(_b64decode),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]


class CheckpointRow(BaseModel):
    """A row of `checkpoints`, as stored (the serialized checkpoint stays opaque)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    run_id: str | None
    type: str | None
    checkpoint: B64
    metadata: dict[str, Any]


class CheckpointWriteRow(BaseModel):
    """A row of `checkpoint_writes`, as stored."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    type: str | None
    value: B64 | None
    task_path: str


class RunExport(BaseModel):
    """One line of an export file."""

    format: Literal["counterfact-run/1"] = FORMAT
    run: RunRecord
    steps: list[StepRecord]
    # Captured activations by "step index/call seq": StepRecord leaves them out of its dump.
    activations: dict[str, B64] = Field(default_factory=dict)
    checkpoints: list[CheckpointRow] = Field(default_factory=list)
    checkpoint_writes: list[CheckpointWriteRow] = Field(default_factory=list)


def export_jsonl(store: TraceStore, run_ids: Sequence[str], path: Path | str) -> list[str]:
    """Write the runs `run_ids` (ids or unique prefixes) to `path`, one line each.

    Parents come before their children when both are exported, so the file imports in order.
    Returns the full ids in the order written.
    """
    ids = list(dict.fromkeys(store.resolve_run_id(r) for r in run_ids))
    lines = [_export_run(store, run_id) for run_id in ids]
    by_id = {line.run.id: line for line in lines}
    ordered: list[RunExport] = []
    placed: set[str] = set()

    def place(line: RunExport) -> None:
        if line.run.id in placed:
            return
        parent = line.run.parent_run_id
        if parent in by_id:
            place(by_id[parent])
        placed.add(line.run.id)
        ordered.append(line)

    for line in lines:
        place(line)
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    with tmp.open("w", encoding="utf-8") as out:
        for line in ordered:
            out.write(line.model_dump_json() + "\n")
    tmp.replace(target)
    return [line.run.id for line in ordered]


def _export_run(store: TraceStore, run_id: str) -> RunExport:
    run = store.get_run(run_id)
    steps = store.steps(run_id)
    cp, wr = Checkpoint.__table__, CheckpointWrite.__table__
    with store.engine.connect() as conn:
        activations = {
            f"{index}/{seq}": data
            for index, seq, data in conn.execute(
                select(Step.index, ModelCall.seq, Blob.data)
                .join(ModelCall, ModelCall.step_id == Step.id)
                .join(Blob, Blob.digest == ModelCall.activations_digest)
                .where(Step.run_id == run_id)
            )
            if data is not None
        }
        checkpoints = [
            CheckpointRow.model_validate(dict(row))
            for row in conn.execute(
                select(cp).where(cp.c.thread_id == run_id).order_by(
                    cp.c.checkpoint_ns, cp.c.checkpoint_id
                )
            ).mappings()
        ]
        writes = [
            CheckpointWriteRow.model_validate(dict(row))
            for row in conn.execute(
                select(wr).where(wr.c.thread_id == run_id).order_by(
                    wr.c.checkpoint_ns, wr.c.checkpoint_id, wr.c.task_id, wr.c.idx
                )
            ).mappings()
        ]
    return RunExport(
        run=run,
        steps=steps,
        activations=activations,
        checkpoints=checkpoints,
        checkpoint_writes=writes,
    )


def import_jsonl(store: TraceStore, paths: Path | str | Sequence[Path | str], *, skip_existing: bool = False) -> list[str]:
    """Import every run of one or more export files in one transaction; returns the ids imported.

    A run id already in the store is an error naming it, unless `skip_existing`, which leaves
    the stored run as it is. A malformed line, a missing parent run or a step whose rebuilt
    chain link differs from the exported one raises `StoreError` naming the file and line,
    and nothing is written.
    """
    return [line.run.id for line in _import_lines(store, paths, skip_existing=skip_existing)]


def _import_lines(store: TraceStore, paths: Path | str | Sequence[Path | str], *, skip_existing: bool) -> list[RunExport]:
    sources = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    lines = [(source, number, line) for source in sources for number, line in _read_lines(source)]
    existing = store.existing_run_ids([line.run.id for _, _, line in lines])
    todo: list[tuple[Path, int, RunExport]] = []
    for source, number, line in lines:
        if line.run.id not in existing:
            todo.append((source, number, line))
        elif not skip_existing:
            raise StoreError(
                f"{source}:{number}: run {line.run.id} already exists in the store; "
                "nothing was imported (skip it with skip_existing)"
            )
    try:
        with store.begin() as conn:
            written: set[str] = set()
            for source, number, line in todo:
                _check_parent(conn, source, number, line, written)
                _write_line(store, conn, source, number, line)
                written.add(line.run.id)
    except IntegrityError as exc:
        reason = str(exc.orig if exc.orig else exc).splitlines()[0]
        raise StoreError(
            f"{', '.join(map(str, sources))}: import conflicts with the store ({reason}); nothing was imported"
        ) from None
    return [line for _, _, line in todo]


def _read_lines(source: Path) -> list[tuple[int, RunExport]]:
    """Every line parsed and validated before anything is written."""
    text = read_text_file(source, "export", StoreError, then="; nothing was imported")
    lines: list[tuple[int, RunExport]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = RunExport.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"{source}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "nothing was imported"
            ) from None
        except ValidationError as exc:
            raise StoreError(
                f"{source}:{number}: not a counterfact run export: {validation_message(exc)}; "
                "nothing was imported"
            ) from None
        if line.run.id in seen:
            raise StoreError(
                f"{source}:{number}: run {line.run.id} appears again (first on line "
                f"{seen[line.run.id]}); nothing was imported"
            )
        seen[line.run.id] = number
        lines.append((number, line))
    return lines


def _check_parent(
    conn: Connection, source: Path, number: int, line: RunExport, written: set[str]
) -> None:
    parent = line.run.parent_run_id
    if parent is None or parent in written:
        return
    if conn.execute(select(Run.id).where(Run.id == parent)).first() is None:
        raise StoreError(
            f"{source}:{number}: run {line.run.id} forks run {parent}, which is neither in the "
            "store nor earlier in the file; export the parent too. Nothing was imported"
        )


def _write_line(
    store: TraceStore, conn: Connection, source: Path, number: int, line: RunExport
) -> None:
    steps = [_with_activations(step, line.activations) for step in line.steps]
    for written, step in zip(store.write_run(line.run, steps, conn), line.steps, strict=True):
        if step.digest is not None and written.digest != step.digest:
            raise StoreError(
                f"{source}:{number}: run {line.run.id} step {step.index}: content does not match "
                "its chain digest (altered, or exported with redacted payloads); "
                "nothing was imported"
            )
    if line.checkpoints:
        conn.execute(
            insert(Checkpoint.__table__), [row.model_dump() for row in line.checkpoints]
        )
    if line.checkpoint_writes:
        conn.execute(
            insert(CheckpointWrite.__table__),
            [row.model_dump() for row in line.checkpoint_writes],
        )


def _with_activations(step: StepRecord, activations: dict[str, bytes]) -> StepRecord:
    """The step with its model calls' captured activations put back."""
    if not any(f"{step.index}/{seq}" in activations for seq in range(len(step.model_calls))):
        return step
    calls = [
        call.model_copy(update={"activations": activations.get(f"{step.index}/{seq}")})
        for seq, call in enumerate(step.model_calls)
    ]
    return step.model_copy(update={"model_calls": calls})


class JsonlFormat:
    """counterfact's own export: one run per line with its steps, payloads and checkpoints."""

    name = "jsonl"
    summary = "counterfact's own JSON lines export (runs, steps, payloads, checkpoints), replayable"
    suffixes = (".jsonl",)
    writes = True

    def detect(self, sniff: Sniff) -> bool:
        return _MARKER.match(sniff.head) is not None

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: Progress | None = None) -> ImportReport:
        lines = _import_lines(store, files, skip_existing=True)
        if on_progress is not None:
            on_progress(len(files), len(files))
        return ImportReport(format=self.name, files=[str(f) for f in files], run_ids=[line.run.id for line in lines],
                            steps=sum(len(line.steps) for line in lines))

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path,
              on_progress: Progress | None = None) -> ExportReport:
        written = export_jsonl(store, run_ids, path)
        if on_progress is not None:
            on_progress(len(written), len(written))
        return ExportReport(format=self.name, target=str(path), run_ids=written, units=len(written), unit="lines")


_MARKER = re.compile(r'\s*\{\s*"format"\s*:\s*"' + re.escape(FORMAT) + '"')
register_format(JsonlFormat())
