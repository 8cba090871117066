"""The trace store: runs, steps, model and tool calls, blobs and LangGraph checkpoints in one
SQLAlchemy database, with forks, the hash chain and migrations. `Store` is what the layers
above need of it; `TraceStore` is its SQLAlchemy implementation."""

from counterfact.store._audit import ChainReport, redact_run_text, verify_run
from counterfact.store._base import Store
from counterfact.store._chain import RunWriter, prepare_step
from counterfact.store._checkpointer import SQLAlchemySaver, state_at
from counterfact.store._dialects import Dialect
from counterfact.store._discard import discard_run
from counterfact.store._engine import StoreError, resolve_url
from counterfact.store._fork import ForkPoint, fork_run
from counterfact.store._handoffs import HandoffEdge, step_handoffs
from counterfact.store._models import (
    InterventionRecord,
    Outcome,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    VerdictKind,
    VerdictRecord,
    new_id,
    utcnow,
)
from counterfact.store._precedents import ToolPrecedent
from counterfact.store._redact import Redactor
from counterfact.store._rows import require_row, row_of
from counterfact.store._show import (
    coloured,
    excerpt,
    output_text,
    render_run,
    step_shape,
)
from counterfact.store._store import TraceStore

__all__ = [
    "new_id",
    "prepare_step",
    "require_row",
    "row_of",
    "utcnow",
    "ChainReport",
    "coloured",
    "Dialect",
    "discard_run",
    "excerpt",
    "fork_run",
    "ForkPoint",
    "HandoffEdge",
    "InterventionRecord",
    "Outcome",
    "output_text",
    "redact_run_text",
    "Redactor",
    "render_run",
    "resolve_url",
    "RunRecord",
    "RunStatus",
    "RunWriter",
    "ToolPrecedent",
    "SQLAlchemySaver",
    "state_at",
    "step_handoffs",
    "step_shape",
    "Store",
    "StepKind",
    "StepRecord",
    "StoreError",
    "TraceStore",
    "VerdictKind",
    "VerdictRecord",
    "verify_run",
]
