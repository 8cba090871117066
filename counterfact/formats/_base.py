"""One interface for every format runs come in and go out in, and the registry that finds them.

A format is a plug-in: one module that says whether a file is in it (`detect`), reads files into
the store (`read`) and, where it can, writes runs out (`write`). A source is the same for a live
service named by a URL (`phoenix://HOST:PORT/PROJECT`). `import_paths` is what the
`counterfact import` command calls: it expands folders, asks each format whether a file is its
own and hands every format its files, and every source its URLs. Adding a format is one module
that registers itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from counterfact.store import StoreError, TraceStore

Progress = Callable[[int, int], None]  # (files or runs done, of how many)
HEAD_CHARS = 65_536  # what detection reads of a file before it parses the whole of it
WHOLE_JSON_BYTES = 64 * 1024 * 1024  # larger files are told by their head alone


class FormatError(StoreError):
    """A file no format reads, a format that is not known, or one asked to do what it cannot."""


class Skipped(BaseModel):
    """A file or run an import left out, and why (already stored, no format of its own)."""

    what: str  # a file, or "run ID"
    reason: str


class ImportReport(BaseModel):
    """What one format's import wrote, in the terms every format shares."""

    format: str
    files: list[str] = Field(default_factory=list)
    run_ids: list[str] = Field(default_factory=list)
    steps: int = 0
    skipped: list[Skipped] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # one line each: what was kept only partly


class ExportReport(BaseModel):
    """What an export wrote: runs, and the units of the format (lines, spans)."""

    format: str
    target: str
    run_ids: list[str]
    units: int
    unit: str


class Sniff:
    """A file as detection sees it: its first characters, and its whole JSON when it parses
    (computed once, shared by every format asked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            self.head = handle.read(HEAD_CHARS)

    @cached_property
    def document(self) -> Any:
        """The file parsed as one JSON document, or None (not JSON, or too large to parse here)."""
        if self.path.stat().st_size > WHOLE_JSON_BYTES or self.head.lstrip()[:1] not in ("{", "["):
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return None


class RunFormat(Protocol):
    """A format runs are imported from and, where `writes`, exported to."""

    name: str  # what `--format` says
    summary: str  # one line for help and the README's table
    suffixes: tuple[str, ...]  # the files a folder import offers it
    writes: bool

    def detect(self, sniff: Sniff) -> bool:
        """Whether the file is in this format (by content, not by name)."""
        ...

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: Progress | None = None) -> ImportReport:
        """Store the runs of `files`, all or nothing; a bad file raises naming it."""
        ...

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path,
              on_progress: Progress | None = None) -> ExportReport:
        """Write the runs to `path` (only where `writes`)."""
        ...


class RunSource(Protocol):
    """A live service runs are imported from, named by a URL of its own scheme."""

    scheme: str  # `phoenix` for phoenix://...
    summary: str

    def read(self, store: TraceStore, url: str, on_progress: Progress | None = None) -> ImportReport:
        """Store the runs the service holds at `url`, all or nothing; an unreachable or unknown
        place raises naming the URL."""
        ...


FORMATS: dict[str, RunFormat] = {}  # in the order detection asks them: the most specific first
SOURCES: dict[str, RunSource] = {}  # by URL scheme


def register_format(fmt: RunFormat) -> RunFormat:
    """Make a format known to `import` and `export`; a second one of the same name is an error."""
    if fmt.name in FORMATS:
        raise FormatError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def register_source(source: RunSource) -> RunSource:
    """Make a URL scheme known to `import`; a second source of the same scheme is an error."""
    if source.scheme in SOURCES:
        raise FormatError(f"source {source.scheme}:// is registered twice")
    SOURCES[source.scheme] = source
    return source


def source_of(given: Path | str) -> RunSource | None:
    """The source a `scheme://...` argument names, None for a path; an unknown scheme is an error."""
    text = str(given)
    scheme, sep, _ = text.partition("://")
    if not sep or not isinstance(given, str) or not scheme.isidentifier():
        return None
    if scheme not in SOURCES:
        raise FormatError(f"{text}: no source for {scheme}://; known: {', '.join(f'{s}://' for s in SOURCES) or 'none'}")
    return SOURCES[scheme]


def format_names(*, writable: bool = False) -> list[str]:
    return [name for name, fmt in FORMATS.items() if fmt.writes or not writable]


def format_named(name: str, *, to_write: bool = False) -> RunFormat:
    fmt = FORMATS.get(name)
    if fmt is None:
        raise FormatError(f"no format {name!r}; known: {', '.join(FORMATS)}")
    if to_write and not fmt.writes:
        raise FormatError(f"format {name!r} is read only; runs can be written as {', '.join(format_names(writable=True))}")
    return fmt


def detect_format(path: Path) -> RunFormat | None:
    """The first registered format that says the file is its own."""
    sniff = Sniff(path)
    return next((fmt for fmt in FORMATS.values() if fmt.detect(sniff)), None)


def natural_key(path: Path) -> tuple[str, int, str]:
    """Order 2.json before 10.json, as benchmarks number their logs."""
    return (str(path.parent), int(path.stem) if path.stem.isdigit() else -1, path.name)


def folder_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """The files under `folder` with one of `suffixes`, in natural order; none is an error."""
    wanted = set(suffixes)
    found = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix in wanted), key=natural_key)
    if not found:
        raise FormatError(f"{folder}: no file in this folder ends in {', '.join(sorted(wanted))}")
    return found


def expand_paths(paths: Iterable[Path | str], suffixes: Iterable[str]) -> list[Path]:
    """Files as given, and folders replaced by their files with one of `suffixes`."""
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files.extend(folder_files(given, suffixes))
        elif given.is_file():
            files.append(given)
        else:
            raise FormatError(f"{given}: no such file or folder")
    return files


def import_paths(
    store: TraceStore,
    paths: Sequence[Path | str],
    *,
    format_name: str | None = None,
    on_progress: Progress | None = None,
) -> list[ImportReport]:
    """Import files, folders and source URLs of runs, each file in the format its content shows
    (or the one given). A file named on its own that no format reads, or that its format finds
    bad, is an error before anything of its format is written; in a folder it is skipped, the
    import goes on with the other files and the skip is reported. Each format's files go in
    together, all or nothing, and one report per format (and per URL) comes back."""
    forced = format_named(format_name) if format_name else None
    named: dict[str, list[Path]] = {}
    in_folders: dict[str, list[Path]] = {}
    urls: list[tuple[RunSource, str]] = []
    skipped: list[Skipped] = []
    for given in paths:
        source = source_of(given)
        if source is not None:
            urls.append((source, str(given)))
            continue
        given = Path(given)
        for file in expand_paths([given], {s for fmt in FORMATS.values() for s in fmt.suffixes}):
            fmt = forced or detect_format(file)
            if fmt is None and not given.is_dir():
                raise FormatError(f"{file}: in no format counterfact reads ({', '.join(FORMATS)}); nothing was imported")
            if fmt is None:
                skipped.append(Skipped(what=str(file), reason="in no format counterfact reads"))
            else:
                (in_folders if given.is_dir() else named).setdefault(fmt.name, []).append(file)
    total = sum(len(files) for batch in (named, in_folders) for files in batch.values()) + len(urls)
    reports: list[ImportReport] = []
    done = 0

    def progress_from(before: int) -> Progress:
        def progress(files_done: int, _files: int) -> None:
            if on_progress is not None:
                on_progress(before + files_done, total)
        return progress

    for name, files in named.items():
        reports.append(FORMATS[name].read(store, files, progress_from(done)))
        done += len(files)
    for name, files in in_folders.items():
        reports.append(_read_past_bad_files(FORMATS[name], store, files, progress_from(done), skipped))
        done += len(files)
    for source, url in urls:
        reports.append(source.read(store, url, progress_from(done)))
        done += 1
    if skipped:
        reports.append(ImportReport(format="none", skipped=skipped))
    return reports


def _read_past_bad_files(fmt: RunFormat, store: TraceStore, files: list[Path], on_progress: Progress,
                         skipped: list[Skipped]) -> ImportReport:
    """A folder's files of one format together; when one is bad (the format raises before it
    writes), file by file, each bad one added to `skipped` with the format's one-line reason."""
    try:
        return fmt.read(store, files, on_progress)
    except FormatError:
        pass
    merged = ImportReport(format=fmt.name)
    for done, file in enumerate(files, start=1):
        try:
            report = fmt.read(store, [file])
        except FormatError as exc:
            reason = str(exc).removeprefix(f"{file}: ").removesuffix("; nothing was imported")
            skipped.append(Skipped(what=str(file), reason=reason))
            continue
        finally:
            on_progress(done, len(files))
        merged.files += report.files
        merged.run_ids += report.run_ids
        merged.steps += report.steps
        merged.skipped += report.skipped
        merged.notes += report.notes
    return merged
