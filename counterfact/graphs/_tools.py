"""Tools by name, made per task: `lookup` serves the table of facts of the task at hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from counterfact.agents import Tool, calculator_tool, lookup_tool

TOOLS: dict[str, Callable[[Mapping[str, Any]], Tool]] = {
    "calculator": lambda task: calculator_tool(),
    "lookup": lambda task: lookup_tool({str(k): str(v) for k, v in task.get("facts", {}).items()}),
}


def task_tools(names: list[str], task: Mapping[str, Any]) -> list[Tool]:
    return [TOOLS[name](task) for name in names]
