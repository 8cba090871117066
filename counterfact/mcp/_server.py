"""The MCP server: the tools of `Tools`, named and described for a model, served over stdio
with the MCP SDK's `MCPServer`. A user error (an unknown run, a bad edit) is a tool error
whose one line says what was wrong; anything else is the SDK's generic failure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from counterfact._errors import CounterfactError, validation_message
from counterfact.mcp._pages import CLIP, TEXT_PAGE
from counterfact.mcp._tools import MAX_ITEMS, Tools
from counterfact.store import TraceStore

INSTRUCTIONS = (
    "counterfact records multi-agent LangGraph runs and debugs failed ones by replaying them with an edit. "
    "Start with list_runs (filter by status='failed', or search with text), then show_run and show_step to read "
    "a run, diff_runs to compare two, replay to test an edit at a step, start_debug and debug_report to let the "
    "debugger find and verify a cause, attribute to name the agent and step at fault from the log alone. "
    f"Lists come in pages of at most {MAX_ITEMS} (next_cursor / next_offset); large values come as JSON text in "
    f"pages of {TEXT_PAGE} characters (read on from next_offset); texts in lists are cut at {CLIP} characters."
)

DESCRIPTIONS = {
    "list_runs": "List or search recorded runs, newest first: text matches id, workflow or input; status, workflow, "
                 "agent and labels (exact KEY: VALUE) filter. Page on with next_cursor.",
    "show_run": "A run's record and its steps (node, agent, kind, clipped output, error, calls), `limit` steps from `offset`.",
    "show_step": "One step whole (the messages it saw, its model and tool calls), as JSON text paged from `offset`.",
    "diff_runs": "Two runs' steps aligned by index with what changed, `limit` rows from `offset`.",
    "replay": "Replay a run from step `at` (an index, NODE#N or agent:NAME#N). With `edit` (an edit as an edit file "
              "holds it, e.g. {kind: message, text: ...}): `pairs` treatment and control replays and a verdict. "
              "Without: one unchanged replay. `expect` (with `answer`, a dotted path into the final state) or `check` "
              "(module:function) scores runs recorded without a check.",
    "start_debug": "Start a debug session of a failed run: hypotheses from `strategies` (default all), each verified by "
                   "replay within `budget` replays. Returns at once with the session id: read debug_report.",
    "debug_report": "A debug session's report: status (running or done), hypotheses with verdicts, spend; JSON text "
                    "paged from `offset`.",
    "attribute": "Log-only failure attribution: which agent and step caused each run's failure, by a judge model "
                 "(`model`: embedded, openai:NAME or local:PATH) reading the log with `method`; scored against the "
                 "runs' labelled mistakes where they have them.",
}


def _user_errors(tool: Callable[..., Any]) -> Callable[..., Any]:
    """The tool with counterfact's user errors turned into tool errors the model reads."""

    @functools.wraps(tool)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return tool(*args, **kwargs)
        except CounterfactError as exc:
            raise ToolError(str(exc)) from None
        except ValidationError as exc:
            raise ToolError(validation_message(exc)) from None

    return call


def build_server(store: TraceStore) -> MCPServer:
    """An MCP server of counterfact's tools over `store`."""
    tools = Tools(store)
    server = MCPServer(name="counterfact", instructions=INSTRUCTIONS, log_level="WARNING")
    for name, description in DESCRIPTIONS.items():
        server.add_tool(_user_errors(getattr(tools, name)), name=name, description=description)
    return server


def serve(store: TraceStore) -> None:
    """Serve over stdio until the client closes the connection."""
    build_server(store).run("stdio")
