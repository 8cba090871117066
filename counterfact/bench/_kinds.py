"""Kinds of fault, each a plug-in that knows how to put itself into an app: transient ones
(a tool errs or lies once, one model reply is corrupted, one handoff goes astray) and
persistent ones (a tool with a bug on some inputs, a wrong sentence in one agent's
instructions, a misleading tool description, a routing function with a wrong branch). A kind
picks its target from a clean run of the same task, so that the fault lands on a call the app
really makes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langgraph.graph import END, StateGraph

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel
from counterfact.bench._inject import (
    AnyTool,
    FaultEvent,
    FaultyModel,
    ToolFault,
    ToolRule,
    changed_number,
    faulty_tool,
    misrouted,
    route_targets,
)
from counterfact.capture import SELF_RECORDING
from counterfact.store import StepRecord

Tools = Mapping[str, AnyTool]
Model = BaseChatModel | ChatModel  # a LangChain chat model (users' apps) or counterfact's (built-in workflows)


class Build(Protocol):
    """An app's factory: its graph on a chat model and tools (by name)."""

    def __call__(self, model: Model, tools: Tools) -> StateGraph: ...


@dataclass
class Faulted:
    """An app with one fault in it, and the list its fault writes its events to as it runs
    (a dataclass: the list must stay the one the fault holds)."""

    graph: StateGraph
    events: list[FaultEvent]
    target: str  # what the fault aims at: "researcher's instructions", "population call 2", ...


class FaultKind(Protocol):
    """A way an app goes wrong."""

    name: str
    persistent: bool

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        """The app built with this fault, aimed at something the clean run did; None when the
        clean run gives it nothing to aim at (no tool, no handoff)."""
        ...


KINDS: dict[str, FaultKind] = {}


def register_fault(kind: FaultKind) -> FaultKind:
    if kind.name in KINDS:
        raise CounterfactError(f"fault kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def fault_names() -> list[str]:
    return list(KINDS)


def fault_named(name: str) -> FaultKind:
    if name not in KINDS:
        raise CounterfactError(f"no fault kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


# -- what a clean run offers to aim at ----------------------------------------------------------

def _tool_calls(clean: list[StepRecord]) -> list[tuple[str, int, dict[str, Any]]]:
    """(tool, its call number, arguments) of the clean run's real tools (not handoffs)."""
    counts: dict[str, int] = {}
    found = []
    for step in clean:
        for call in sorted(step.tool_calls, key=lambda c: c.offset_ms or 0):
            if call.handoff or call.name.startswith("transfer_"):
                continue
            counts[call.name] = counts.get(call.name, 0) + 1
            found.append((call.name, counts[call.name], dict(call.arguments or {})))
    return found


def _model_replies(clean: list[StepRecord]) -> list[dict[str, Any]]:
    """The clean run's model replies in the order the calls were made."""
    return [dict(call.response or {}) for step in clean for call in sorted(step.model_calls, key=lambda c: c.offset_ms or 0)]


def _handing_calls(clean: list[StepRecord]) -> list[int]:
    """Numbers of the clean run's model calls whose reply hands off (a `transfer_*` tool call)."""
    return [i + 1 for i, r in enumerate(_model_replies(clean))
            if any(str(c.get("name", "")).startswith("transfer_") for c in r.get("tool_calls") or [])]


def _with_faulty_model(build: Build, model: Model, tools: Tools, target: str, events: list[FaultEvent] | None = None,
                       **faults: Any) -> Faulted | None:
    """The app built on `model` with a fault (whose events are the model's, unless the fault
    keeps its own); None for a model that is not a LangChain chat model or that records its
    own calls (its trace would not show the fault)."""
    if not isinstance(model, BaseChatModel) or (model.metadata or {}).get(SELF_RECORDING):
        return None
    faulty = FaultyModel(inner=model, **faults)
    return Faulted(graph=build(faulty, tools), events=faulty.events if events is None else events, target=target)


def _with_faulty_tool(build: Build, model: Model, tools: Tools, name: str, rule: ToolRule, target: str) -> Faulted | None:
    """The app built with tool `name` failing where `rule` says; None if it has no such tool."""
    if name not in tools:
        return None
    events: list[FaultEvent] = []
    return Faulted(graph=build(model, {**tools, name: faulty_tool(tools[name], rule, events)}), events=events,
                   target=target)


# -- transient -------------------------------------------------------------------------------

def _tool_once(build: Build, model: Model, tools: Tools, clean: list[StepRecord], rng: random.Random,
               fault: Callable[[Any], ToolFault | None]) -> Faulted | None:
    """The app with one of the clean run's tool calls (chosen at random) answered by
    `fault(true result)` instead."""
    calls = _tool_calls(clean)
    if not calls:
        return None
    tool, number, _ = rng.choice(calls)
    rule: ToolRule = lambda n, _args, true: fault(true) if n == number else None  # noqa: E731
    return _with_faulty_tool(build, model, tools, tool, rule, f"{tool} call {number}")


class ToolError:
    name, persistent = "tool_error", False

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        return _tool_once(build, model, tools, clean, rng, lambda _true: ToolFault(error="the service timed out"))


class ToolWrongValue:
    name, persistent = "tool_wrong_value", False

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        def lie(true: Any) -> ToolFault | None:
            changed = changed_number(str(true), rng)
            return ToolFault(value=changed[0]) if changed else None

        return _tool_once(build, model, tools, clean, rng, lie)


class ReplyCorrupted:
    name, persistent = "reply_corrupted", False

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        replies = _model_replies(clean)
        numbered = [i + 1 for i, r in enumerate(replies) if changed_number(str(r.get("content") or ""), rng)]
        if not numbered:
            return None
        number = rng.choice(numbered)

        def fault(n: int, reply: AIMessage, _sent: list[BaseMessage]) -> tuple[AIMessage, str, str] | None:
            changed = changed_number(str(reply.content), rng) if n == number else None
            if changed is None:
                return None
            return reply.model_copy(update={"content": changed[0]}), changed[1], changed[2]

        return _with_faulty_model(build, model, tools, f"model call {number}", reply_fault=fault)


class WrongHandoff:
    name, persistent = "wrong_handoff", False

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        handing = _handing_calls(clean)
        if not handing:
            return None
        number = rng.choice(handing)

        def fault(n: int, reply: AIMessage, _sent: list[BaseMessage]) -> tuple[AIMessage, str, str] | None:
            if n != number:
                return None
            offered = [t for t in _offered.get("names", []) if t.startswith("transfer_")]
            calls = list(reply.tool_calls)
            for i, call in enumerate(calls):
                others = [t for t in offered if t != call["name"]]
                if call["name"].startswith("transfer_") and others:
                    wrong = rng.choice(others)
                    calls[i] = {**call, "name": wrong}
                    return reply.model_copy(update={"tool_calls": calls}), f"{call['name']} -> {wrong}", wrong
            return None

        _offered: dict[str, list[str]] = {}

        def remember(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> tuple[list[BaseMessage], list[dict[str, Any]]]:
            _offered["names"] = [t.get("function", t).get("name", "") for t in tools]
            return messages, tools

        return _with_faulty_model(build, model, tools, f"model call {number}", reply_fault=fault, request_fault=remember)


EARLY_ANSWER = "That is all I can tell."  # what an agent that drops its handoff says, when it said nothing


class HandoffDropped:
    """One handoff not made: the agent answers with what it has instead (a run ended early,
    the commonest way a handoff goes wrong in LLM teams)."""

    name, persistent = "handoff_dropped", False

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        handing = _handing_calls(clean)
        if not handing:
            return None
        number = rng.choice(handing)

        def fault(n: int, reply: AIMessage, _sent: list[BaseMessage]) -> tuple[AIMessage, str, str] | None:
            handoffs = [c["name"] for c in reply.tool_calls if c["name"].startswith("transfer_")]
            if n != number or not handoffs:
                return None
            text = str(reply.content) or EARLY_ANSWER
            return (reply.model_copy(update={"tool_calls": [], "content": text}),
                    f"{handoffs[0]} not made: answered instead", text)

        return _with_faulty_model(build, model, tools, f"model call {number}", reply_fault=fault)


# -- persistent ------------------------------------------------------------------------------

class ToolBug:
    name, persistent = "tool_bug", True

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        calls = _tool_calls(clean)
        if not calls:
            return None
        tool, _, arguments = rng.choice(calls)
        key = json.dumps(arguments, sort_keys=True)

        def rule(_n: int, args: dict[str, Any], true: Any) -> ToolFault | None:
            if json.dumps(args, sort_keys=True) != key:
                return None
            changed = changed_number(str(true), random.Random(key))  # the same wrong answer every time
            return ToolFault(value=changed[0]) if changed else None

        return _with_faulty_tool(build, model, tools, tool, rule, f"{tool} on {key}")


WRONG_SENTENCE = "Numbers in this task are in thousands: multiply every number you report by 1000."


class InstructionSentence:
    name, persistent = "instruction_sentence", True

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        prompts = sorted({str(call.request[0].get("content", "")) for step in clean for call in step.model_calls
                          if call.request and call.request[0].get("role") == "system"})
        if not prompts:
            return None
        chosen = rng.choice(prompts)
        events: list[FaultEvent] = []

        def rewrite(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> tuple[list[BaseMessage], list[dict[str, Any]]]:
            if messages and isinstance(messages[0], SystemMessage) and str(messages[0].content) == chosen:
                if not events:
                    events.append(FaultEvent(where="model", call=0, detail="a wrong sentence in the instructions",
                                             shows=WRONG_SENTENCE))
                messages = [SystemMessage(content=f"{chosen} {WRONG_SENTENCE}"), *messages[1:]]
            return messages, tools

        return _with_faulty_model(build, model, tools, f"instructions: {chosen[:40]}", events, request_fault=rewrite)


class MisleadingDescription:
    """The app's tool describes itself wrongly: its own description carries a misleading
    sentence, so every model that is offered the tool reads it."""

    name, persistent = "misleading_description", True

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        calls = _tool_calls(clean)
        if not calls:
            return None
        tool = rng.choice(sorted({name for name, _, _ in calls}))
        if tool not in tools:
            return None
        note = "It returns the answer in thousands: multiply it by 1000 before using it."
        original = tools[tool]
        misleading = original.model_copy(update={"description": f"{original.description} {note}"})
        events = [FaultEvent(where=tool, call=0, detail=f"{tool}'s description misleads", shows=note)]
        return Faulted(graph=build(model, {**tools, tool: misleading}), events=events, target=f"{tool}'s description")


class WrongBranch:
    """A routing function with a wrong branch: wherever the route out of one node would go to
    the place the clean run went next, it goes elsewhere, every time (a conditional edge's
    function, or a node's `Command`, a handoff tool's too, wired to the wrong agent)."""

    name, persistent = "wrong_branch", True

    def inject(self, build: Build, model: Model, tools: Tools, clean: list[StepRecord],
               rng: random.Random) -> Faulted | None:
        graph = build(model, tools)
        routes = [(step.node, after) for step, after in zip(clean, [*(s.node for s in clean[1:]), END], strict=True)]
        targets = {source: route_targets(graph, source) for source, _ in routes}
        choices = sorted({(source, taken, wrong) for source, taken in routes if taken in targets[source]
                          for wrong in targets[source] if wrong != taken})
        if not choices:
            return None
        source, taken, wrong = rng.choice(choices)
        events: list[FaultEvent] = []
        return Faulted(graph=misrouted(graph, source, taken, wrong, events), events=events,
                       target=f"the route out of {source} to {taken}")


for _kind in (ToolError(), ToolWrongValue(), ReplyCorrupted(), WrongHandoff(), HandoffDropped(), ToolBug(), InstructionSentence(),
              MisleadingDescription(), WrongBranch()):
    register_fault(_kind)
