"""The trace store: runs, steps, model and tool calls, blobs and LangGraph checkpoints."""

from counterfact.traces._checkpointer import SQLAlchemySaver
from counterfact.traces._models import Outcome, RunRecord, RunStatus, StepKind, StepRecord
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
from counterfact.traces._recorder import RecordedGraph, RunResult, record
from counterfact.traces._redact import Redactor
from counterfact.traces._store import RunWriter, StoreError, TraceStore, resolve_url

__all__ = [
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
