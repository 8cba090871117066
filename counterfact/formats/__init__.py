"""Runs in and out of other formats: JSON lines, OpenTelemetry (OTLP), Who&When logs, tau-bench
results, LangSmith and Langfuse exports, OpenAI message lists and chat transcripts, each a
plug-in behind `RunFormat` (detect, read, write), and a live Phoenix behind `RunSource`, found
by `import_paths` and `format_named`. Each registers itself when imported here."""

from counterfact.formats import (  # noqa: F401  (they register themselves)
    _chat,
    _langfuse,
    _langsmith,
    _openai,
    _phoenix,
    _taubench,
)
from counterfact.formats._base import (
    ExportReport,
    FormatError,
    ImportReport,
    RunFormat,
    Skipped,
    Sniff,
    detect_format,
    format_named,
    format_names,
    import_paths,
    register_format,
)
from counterfact.formats._jsonl import RunExport, export_jsonl, import_jsonl
from counterfact.formats._labels import TruthLabel, apply_labels, load_labels
from counterfact.formats._otel import export_otlp, write_otlp_json
from counterfact.formats._otel_import import (
    OtelImport,
    OtelImportError,
    import_otel,
    read_otlp_json,
)
from counterfact.formats._whowhen import (
    SkippedFile,
    Unmapped,
    WhoWhenReport,
    import_whowhen,
)

__all__ = [
    "TruthLabel",
    "apply_labels",
    "load_labels",
    "ExportReport",
    "FormatError",
    "ImportReport",
    "RunFormat",
    "Skipped",
    "Sniff",
    "detect_format",
    "format_named",
    "format_names",
    "import_paths",
    "register_format",
    "export_jsonl",
    "export_otlp",
    "import_jsonl",
    "import_otel",
    "import_whowhen",
    "OtelImport",
    "OtelImportError",
    "read_otlp_json",
    "RunExport",
    "SkippedFile",
    "Unmapped",
    "WhoWhenReport",
    "write_otlp_json",
]
