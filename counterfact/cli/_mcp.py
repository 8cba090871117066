"""Serving counterfact to coding agents: mcp."""

from __future__ import annotations

from counterfact._errors import CounterfactError
from counterfact.cli._common import DbOption, _open


def mcp_command(db: DbOption = None) -> None:
    """Serve counterfact's tools over the Model Context Protocol on stdio (for a coding agent
    to start: list, show, diff, replay, debug and attribute runs)."""
    try:
        from counterfact.mcp import serve
    except ImportError as exc:
        raise CounterfactError(f"`counterfact mcp` needs the MCP SDK: pip install 'counterfact[mcp]' ({exc})") from None
    serve(_open(db))
