"""What runs inside a step: call records, payload encoding, a replay's directives, and the
interception of LangChain and openai model and tool calls."""

from counterfact.capture._capture import CallCapture
from counterfact.capture._directives import (
    Directives,
    ModelResponse,
    StepDirectives,
    ToolChange,
    current_directives,
    derive_seed,
    directing,
    next_model_call,
    step_instruction,
    step_key,
    step_seed,
    step_temperature,
    tool_call_key,
    tool_changes_for,
    tool_result_for,
    with_directives,
)
from counterfact.capture._handoffs import Handoff, handoff_of
from counterfact.capture._instrument import instrument
from counterfact.capture._intercept import install_langchain_hooks
from counterfact.capture._payloads import (
    canonical_json,
    from_jsonable_update,
    is_recorded_command,
    to_jsonable,
)
from counterfact.capture._records import (
    ModelCallRecord,
    StepAddress,
    StepCalls,
    ToolCallRecord,
    collect_calls,
    current_step,
    report_model_call,
    report_tool_call,
    timeline,
)

__all__ = [
    "CallCapture",
    "canonical_json",
    "collect_calls",
    "current_directives",
    "current_step",
    "derive_seed",
    "directing",
    "Directives",
    "from_jsonable_update",
    "Handoff",
    "handoff_of",
    "install_langchain_hooks",
    "instrument",
    "is_recorded_command",
    "ModelCallRecord",
    "ModelResponse",
    "next_model_call",
    "report_model_call",
    "report_tool_call",
    "step_instruction",
    "step_key",
    "step_seed",
    "step_temperature",
    "StepAddress",
    "StepCalls",
    "StepDirectives",
    "timeline",
    "to_jsonable",
    "tool_call_key",
    "tool_changes_for",
    "tool_result_for",
    "ToolCallRecord",
    "ToolChange",
    "with_directives",
]
