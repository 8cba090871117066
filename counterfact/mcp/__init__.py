"""counterfact for coding agents: its capabilities served over the Model Context Protocol.

Sits above the library layers, beside `ui`: it adapts what the store, graphs and interventions
already do into MCP tools, and nothing below imports it.
"""

from counterfact.mcp._pages import TextPage
from counterfact.mcp._server import build_server, serve
from counterfact.mcp._tools import (
    Attributions,
    DebugStarted,
    DiffPage,
    RunBrief,
    RunsPage,
    RunView,
    StepBrief,
    Tools,
)

__all__ = [
    "Attributions",
    "DebugStarted",
    "DiffPage",
    "RunBrief",
    "RunView",
    "RunsPage",
    "StepBrief",
    "TextPage",
    "Tools",
    "build_server",
    "serve",
]
