"""Agents and their models: OpenAI-compatible endpoints, a white-box local model, tools."""

from counterfact.agents._ask import UnreadableAnswer, ask_readable
from counterfact.agents._edits import ActivationEdit
from counterfact.agents._agent import Agent, AgentReply
from counterfact.agents._langchain import ChatCounterfact
from counterfact.agents._limits import CallLimit, LocalCallLimit, call_limit, set_call_limit
from counterfact.agents._registry import MODEL_SPEC_FORMS, resolve_model, shared_model
from counterfact.agents._scripted import ScriptedChatModel, ScriptedRequest
from counterfact.agents._tools import (
    Tool,
    ToolError,
    calculate,
    calculator_tool,
    format_text_results,
    lookup_tool,
    parse_text_calls,
    result_text,
    text_protocol_prompt,
)
from counterfact.agents._types import (
    ChatMessage,
    ChatModel,
    Completion,
    GenerationSettings,
    ModelError,
    ToolCall,
    Usage,
)

__all__ = [
    "MODEL_SPEC_FORMS",
    "ActivationEdit",
    "Agent",
    "ChatCounterfact",
    "AgentReply",
    "CallLimit",
    "LocalCallLimit",
    "call_limit",
    "set_call_limit",
    "ChatMessage",
    "ChatModel",
    "Completion",
    "GenerationSettings",
    "ModelError",
    "ScriptedChatModel",
    "ScriptedRequest",
    "Tool",
    "ToolCall",
    "ToolError",
    "UnreadableAnswer",
    "Usage",
    "ask_readable",
    "calculate",
    "calculator_tool",
    "format_text_results",
    "lookup_tool",
    "parse_text_calls",
    "resolve_model",
    "shared_model",
    "result_text",
    "text_protocol_prompt",
]
