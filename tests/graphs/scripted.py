"""Scripted models and small workflows for the graph tests (also used by subprocess workers)."""

from __future__ import annotations

import os
import re
import time

from counterfact.agents import ChatMessage, ScriptedChatModel
from counterfact.graphs import ModelPool, WorkflowSpec, parse_workflow

PIPELINE_YAML = {
    "name": "trio",
    "topology": "pipeline",
    "model": "test",
    "agents": [
        {"name": "researcher", "role": "Find facts.", "tools": ["lookup"]},
        {"name": "solver", "role": "Compute.", "tools": ["calculator"]},
        {"name": "reporter", "role": "Report."},
    ],
}


def arithmetic_brain(messages: list[ChatMessage]) -> str:
    """A stand-in for a model that does the demo's job right (so failures in tests are ours)."""
    delay = float(os.environ.get("CF_TEST_MODEL_DELAY", "0"))
    if delay:
        time.sleep(delay)
    system, last = messages[0].content, messages[-1].content
    task = re.search(r"Task: (.*)", "\n".join(m.content for m in messages if m.role == "user"))
    question = task.group(1) if task else ""
    if "Find facts" in system:
        if last.startswith("RESULT lookup"):
            values = re.findall(r"RESULT lookup: (\S+)", last)
            return "FACTS: " + "; ".join(values)
        keys = re.findall(r"population of [A-Z][a-z]+", question)
        return "\n".join(f'CALL lookup {{"key": "{k}"}}' for k in keys) or "FACTS: none needed"
    if "Compute" in system:
        if last.startswith("RESULT calculator"):
            return "RESULT: " + last.split(":", 1)[1].strip()
        numbers = re.findall(r"\d+", last.split("FACTS:")[-1])
        return f'CALL calculator {{"expression": "{" + ".join(numbers) or "0"}"}}'
    result = re.findall(r"RESULT: (\S+)", last)
    return f"FINAL ANSWER: {result[-1] if result else 'unknown'}"


def trio_spec() -> WorkflowSpec:
    return parse_workflow(PIPELINE_YAML)


def trio_pool() -> ModelPool:
    return ModelPool("test", {"test": ScriptedChatModel(arithmetic_brain, name="brain")})
