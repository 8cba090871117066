"""Formats as plug-ins: each file's format told by its content, one import for all of them, and
a new format added by registering it alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from counterfact.formats import (
    ExportReport,
    FormatError,
    ImportReport,
    Sniff,
    detect_format,
    format_named,
    import_paths,
    register_format,
)
from counterfact.formats._base import FORMATS
from counterfact.graphs import record
from counterfact.store import RunRecord, StepRecord, TraceStore
from tests.graphs.sample_graphs import loop_graph, loop_input


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    with TraceStore.open(str(tmp_path / "s.db")) as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path, store: TraceStore, whowhen: Path) -> dict[str, Path]:
    """One file of each built-in format, each written by its own writer (or taken from the
    benchmark), in one folder with a file of no format."""
    run = record(loop_graph(), store, workflow="loop").invoke(loop_input(2))
    folder = tmp_path / "in"
    folder.mkdir()
    made = {
        "jsonl": folder / "runs.jsonl",
        "otel": folder / "spans.jsonl",
        "whowhen": folder / "7.json",
        "none": folder / "notes.json",
    }
    format_named("jsonl", to_write=True).write(store, [run.run_id], made["jsonl"])
    format_named("otel", to_write=True).write(store, [run.run_id], made["otel"])
    shutil.copy(whowhen / "Hand-Crafted" / "1.json", made["whowhen"])
    made["none"].write_text(json.dumps({"todo": ["buy milk"]}))
    return made


def test_each_file_is_told_by_its_content_not_its_name(files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("jsonl", "otel", "whowhen"):
        renamed = tmp_path / f"{name}.txt"
        shutil.copy(files[name], renamed)
        found = detect_format(renamed)
        assert found is not None and found.name == name, (name, found)
    assert detect_format(files["none"]) is None


def test_a_folder_imports_every_format_and_reports_what_it_left(files: dict[str, Path], tmp_path: Path) -> None:
    fresh = TraceStore.open(str(tmp_path / "fresh.db"))
    seen: list[tuple[int, int]] = []
    reports = {r.format: r for r in import_paths(fresh, [files["jsonl"].parent], on_progress=lambda d, t: seen.append((d, t)))}
    assert set(reports) == {"jsonl", "otel", "whowhen", "none"}
    # the OTLP file holds the run the jsonl file brought (one run id): the second is skipped
    assert reports["otel"].run_ids == [] and [s.what for s in reports["otel"].skipped] == [f"run {reports['jsonl'].run_ids[0]}"]
    assert reports["jsonl"].steps == 3 and len(reports["jsonl"].run_ids) == 1
    assert len(reports["whowhen"].run_ids) == 1 and reports["whowhen"].steps > 0
    assert [s.what for s in reports["none"].skipped] == [str(files["none"])]
    assert seen and seen[-1][0] == seen[-1][1]
    assert {r.source for r in fresh.list_runs()} >= {"whowhen"}


def test_otel_spans_of_a_run_already_stored_are_skipped_by_name(files: dict[str, Path], tmp_path: Path) -> None:
    fresh = TraceStore.open(str(tmp_path / "fresh.db"))
    [report] = import_paths(fresh, [files["otel"]])
    assert report.format == "otel" and len(report.run_ids) == 1 and report.steps == 3
    [again] = import_paths(fresh, [files["otel"]])
    assert again.run_ids == [] and [s.reason for s in again.skipped] == ["already in the store"]


def test_a_named_file_of_no_format_is_an_error_and_nothing_is_written(files: dict[str, Path], tmp_path: Path) -> None:
    fresh = TraceStore.open(str(tmp_path / "fresh.db"))
    with pytest.raises(FormatError, match=r"notes\.json: in no format counterfact reads"):
        import_paths(fresh, [files["whowhen"], files["none"]])
    assert fresh.list_runs() == []
    with pytest.raises(FormatError, match="no format 'csv'"):
        import_paths(fresh, [files["whowhen"]], format_name="csv")
    with pytest.raises(FormatError, match="'whowhen' is read only"):
        format_named("whowhen", to_write=True)


class _LinesFormat:
    """A toy format: one question per line, each a failed run with no steps."""

    name = "questions"
    summary = "one question per line"
    suffixes = (".txt",)
    writes = False

    def detect(self, sniff: Sniff) -> bool:
        return sniff.head.startswith("Q: ")

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: object = None) -> ImportReport:
        ids = []
        for file in files:
            for number, line in enumerate(file.read_text().splitlines()):
                run = RunRecord(id=f"{file.stem}-{number}", workflow="questions", status="failed", source="questions",
                                task_input={"question": line.removeprefix("Q: ")})
                store.write_run(run, [StepRecord(index=0, node="ask", output=line)])
                ids.append(run.id)
        return ImportReport(format=self.name, files=[str(f) for f in files], run_ids=ids, steps=len(ids))

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path, on_progress: object = None) -> ExportReport:
        raise FormatError("read only")


def test_a_new_format_is_one_registration(tmp_path: Path, store: TraceStore) -> None:
    file = tmp_path / "q.txt"
    file.write_text("Q: Why?\nQ: When?\n")
    register_format(_LinesFormat())
    try:
        [report] = import_paths(store, [tmp_path])
        assert report.format == "questions" and len(report.run_ids) == 2
        assert sorted(r.task_input["question"] for r in store.list_runs()) == ["When?", "Why?"]
        with pytest.raises(FormatError, match="registered twice"):
            register_format(_LinesFormat())
    finally:
        FORMATS.pop("questions")


def test_the_cli_imports_by_content_and_keeps_the_format_first_form(files: dict[str, Path], tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    cli = [sys.executable, "-m", "counterfact.cli", "import"]
    out = subprocess.run([*cli, str(files["whowhen"]), str(files["jsonl"]), "--db", db], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "imported 1 runs with 3 steps from 1 jsonl files" in out.stdout, out.stdout
    assert "from 1 whowhen files" in out.stdout
    forced = subprocess.run([*cli, "otel", str(files["jsonl"]), "--db", db], capture_output=True, text=True, check=False)
    assert forced.returncode == 1 and forced.stderr.startswith(f"error: {files['jsonl']}: not OTLP JSON"), forced.stderr
    bad = subprocess.run([*cli, str(files["none"]), "--db", db], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "in no format" in bad.stderr
