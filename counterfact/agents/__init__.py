"""Agents and their models: OpenAI-compatible endpoints, a white-box local model, tools.

The model backends and the model server are loaded on first use (PEP 562), so importing this
package does not import torch, openai or uvicorn for a user who needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from counterfact.agents._agent import Agent, AgentReply
from counterfact.agents._ask import UnreadableAnswer, ask_readable
from counterfact.agents._edits import ActivationEdit
from counterfact.agents._langchain import ChatCounterfact
from counterfact.agents._limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TOKENS_LIMIT,
    CallLimit,
    LocalCallLimit,
    call_limit,
    set_call_limit,
)
from counterfact.agents._registry import MODEL_SPEC_FORMS, forget_answers, resolve_model, shared_model
from counterfact.agents._scripted import ScriptedChatModel
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
    ContextLengthExceeded,
    GenerationSettings,
    ModelError,
    ModelRequest,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from counterfact.agents._embedded import (
        embedded_cache_dir,
        embedded_gguf,
        load_embedded,
    )
    from counterfact.agents._local import LocalModel
    from counterfact.agents._openai import OpenAIChatModel
    from counterfact.agents._serve import create_app, running_server, serve

_LAZY = {
    "LocalModel": "counterfact.agents._local",
    "OpenAIChatModel": "counterfact.agents._openai",
    "load_embedded": "counterfact.agents._embedded",
    "embedded_cache_dir": "counterfact.agents._embedded",
    "embedded_gguf": "counterfact.agents._embedded",
    "create_app": "counterfact.agents._serve",
    "running_server": "counterfact.agents._serve",
    "serve": "counterfact.agents._serve",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_TOKENS_LIMIT",
    "MODEL_SPEC_FORMS",
    "ActivationEdit",
    "Agent",
    "ChatCounterfact",
    "LocalModel",
    "OpenAIChatModel",
    "AgentReply",
    "CallLimit",
    "LocalCallLimit",
    "call_limit",
    "set_call_limit",
    "ChatMessage",
    "ChatModel",
    "Completion",
    "GenerationSettings",
    "ContextLengthExceeded",
    "ModelError",
    "ModelRequest",
    "ScriptedChatModel",
    "Tool",
    "ToolCall",
    "ToolError",
    "UnreadableAnswer",
    "Usage",
    "ask_readable",
    "calculate",
    "create_app",
    "embedded_cache_dir",
    "embedded_gguf",
    "load_embedded",
    "running_server",
    "serve",
    "calculator_tool",
    "format_text_results",
    "lookup_tool",
    "parse_text_calls",
    "resolve_model",
    "shared_model",
    "forget_answers",
    "result_text",
    "text_protocol_prompt",
]
