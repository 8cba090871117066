"""The trace store: runs, steps, model and tool calls, blobs and LangGraph checkpoints."""

from counterfact.traces._audit import ChainReport, redact_run_text, verify_run
from counterfact.traces._checkpointer import SQLAlchemySaver
from counterfact.traces._jsonl import RunExport, export_jsonl, import_jsonl
from counterfact.traces._models import Outcome, RunRecord, RunStatus, StepKind, StepRecord
from counterfact.traces._recorder import RecordedGraph, RunResult, record
from counterfact.traces._records import (
    ModelCallRecord,
    StepAddress,
    StepCalls,
    ToolCallRecord,
    collect_calls,
    current_step,
    report_model_call,
    report_tool_call,
)
from counterfact.traces._redact import Redactor
from counterfact.traces._store import RunWriter, StoreError, TraceStore, resolve_url
from counterfact.traces._whowhen import SkippedFile, Unmapped, WhoWhenReport, import_whowhen

__all__ = [
    "ChainReport",
    "RunExport",
    "SkippedFile",
    "Unmapped",
    "WhoWhenReport",
    "export_jsonl",
    "import_jsonl",
    "import_whowhen",
    "redact_run_text",
    "verify_run",
    "ModelCallRecord",
    "Outcome",
    "RecordedGraph",
    "Redactor",
    "RunResult",
    "RunRecord",
    "RunStatus",
    "RunWriter",
    "SQLAlchemySaver",
    "StepAddress",
    "StepCalls",
    "StepKind",
    "StepRecord",
    "StoreError",
    "ToolCallRecord",
    "TraceStore",
    "collect_calls",
    "current_step",
    "record",
    "report_model_call",
    "report_tool_call",
    "resolve_url",
]
