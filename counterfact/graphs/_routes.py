"""A route out of a node, sent elsewhere: one place for what a replay's route changes and the
fault benchmark's wrong branches both do to a routing function's choice and to a node's
`Command`, so that the two read the same routes the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from langgraph.graph import END
from langgraph.types import Command, Send

Reroute = Callable[[str], str]  # a destination node (or END) -> where it goes instead


def rerouted_choice(chosen: Any, ends: Mapping[Any, str] | None, to: Reroute) -> Any:
    """A routing function's choice (a key of its path map `ends`, a node, a `Send`, or a list
    of them) with each destination sent where `to` says, given back as the path map's key."""
    keys = {node: key for key, node in (ends or {}).items()}

    def one(choice: Any) -> Any:
        if isinstance(choice, Send):
            return choice
        node = (ends or {}).get(choice, choice)
        went = to(node)
        return choice if went == node else keys.get(went, went)

    return [one(c) for c in chosen] if isinstance(chosen, (list, tuple)) else one(chosen)


def redirected(result: Any, to: Reroute, *, ends_run: bool) -> Any:
    """A node's result with its route sent where `to` says: a `Command`'s goto (no goto is the
    end of the run), or, where a plain update ends the run (`ends_run`), that update as a
    `Command` to where the end goes instead."""
    if isinstance(result, Command):
        goto = result.goto or END
        if not isinstance(goto, str):
            return result  # several destinations or a Send: not one route
        went = to(goto)
        return result if went == goto else dataclasses.replace(result, goto=went)
    if ends_run and isinstance(result, (Mapping, type(None))):
        went = to(END)
        return result if went == END else Command(update=result, goto=went)
    return result
