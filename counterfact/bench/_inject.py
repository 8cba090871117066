"""Faults put into an app the way real ones arise: through its own model and its own tools.

`FaultyModel` stands where the app's chat model stood and changes what one call returns (or
what every call sends); `faulty_tool` stands where one of the app's tools stood and fails.
Neither leaves a mark a debugger could read: the recorded run is an ordinary run whose model
said something wrong or whose tool failed. Each keeps `events`, what it did, for the truth.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.errors import ParentCommand
from langgraph.graph import END, StateGraph
from langgraph.utils.runnable import RunnableCallable
from pydantic import BaseModel, ConfigDict, PrivateAttr

from counterfact.agents import Tool
from counterfact.graphs import redirected, rerouted_choice
from counterfact.capture import SELF_RECORDING


class FaultEvent(BaseModel):
    """One thing a fault did: which call it hit and what a trace will show of it."""

    where: str  # "model", the tool's name, or "route" (the route out of a node)
    call: int  # which call of that model or tool, or which step of that node (from 1)
    node: str | None = None  # for a route: the node whose step routed
    detail: str  # what changed
    shows: str  # text the recorded call carries because of it (a marker to find it by)


ReplyFault = Callable[[int, AIMessage, list[BaseMessage]], tuple[AIMessage, str, str] | None]
"""Given the call number, the reply and the messages sent: a changed reply, what changed, and
the text that shows it; or None to leave this call alone."""

RequestFault = Callable[[list[BaseMessage], list[dict[str, Any]]], tuple[list[BaseMessage], list[dict[str, Any]]]]
"""Rewrite what every call sends (the messages and the tools offered): a persistent fault."""


class FaultyModel(BaseChatModel):
    """The app's chat model with a fault: a reply changed once, or what every call sends
    rewritten (before it is recorded, as the app's own prompt). A model that records its own
    calls is refused: the trace would show its reply, not the one the app got."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    reply_fault: ReplyFault | None = None
    request_fault: RequestFault | None = None
    _calls: int = PrivateAttr(default=0)
    _events: list[FaultEvent] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        if (self.inner.metadata or {}).get(SELF_RECORDING):
            raise ValueError(f"{type(self.inner).__name__} records its own calls; serve it over HTTP and fault that client")

    @property
    def events(self) -> list[FaultEvent]:
        return self._events

    @property
    def _llm_type(self) -> str:
        return self.inner._llm_type

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """The inner model's settings (its temperature above all), as a trace of it shows them."""
        return self.inner._get_invocation_params(stop=stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        """The inner model's provider and name: the trace names the model the app thinks it
        calls, not this wrapper."""
        return self.inner._get_ls_params(stop=stop, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, BaseMessage]:
        """The tools as the inner model binds them, passed through this model's generation."""
        bound = self.inner.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def generate(self, messages: list[list[BaseMessage]], stop: list[str] | None = None, callbacks: Any = None,
                 **kwargs: Any) -> LLMResult:
        """What every call sends, rewritten before the call is made and recorded: a wrong
        sentence in the instructions is in the app's prompt, so the trace shows it, as it
        would show a prompt the app was written with."""
        if self.request_fault is not None:
            rewritten = [self.request_fault(list(batch), list(kwargs.get("tools") or [])) for batch in messages]
            messages = [batch for batch, _ in rewritten]
            if rewritten and rewritten[0][1]:
                kwargs["tools"] = rewritten[0][1]
        return super().generate(messages, stop=stop, callbacks=callbacks, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        self._calls += 1
        result = self.inner._generate(messages, stop=stop, **kwargs)
        reply = result.generations[0].message
        if self.reply_fault is not None and isinstance(reply, AIMessage):
            changed = self.reply_fault(self._calls, reply, list(messages))
            if changed is not None:
                message, detail, shows = changed
                result.generations[0].message = message
                result.generations[0].text = str(message.content)
                self._events.append(FaultEvent(where="model", call=self._calls, detail=detail, shows=shows))
        return result


class ToolFault(BaseModel):
    """What a faulty tool does on a call: raise, or answer something else."""

    error: str | None = None
    value: Any = None


ToolRule = Callable[[int, dict[str, Any], Any], ToolFault | None]
"""Given the call number, the arguments and the true result: the fault, or None."""


def _call_quietly(tool: BaseTool, arguments: dict[str, Any]) -> Any:
    """The tool's own function, not its `invoke`: the call the app makes is the faulty tool's,
    and a nested invocation would be recorded as a second call."""
    func = getattr(tool, "func", None)
    return func(**arguments) if func is not None else tool._run(**arguments)


AnyTool = BaseTool | Tool  # a LangChain tool (users' apps) or counterfact's own (built-in workflows)


def faulty_tool(tool: AnyTool, rule: ToolRule, events: list[FaultEvent]) -> AnyTool:
    """`tool` with the same name, description and arguments, failing where `rule` says."""
    calls = 0

    def faulted(arguments: dict[str, Any], true: Callable[[], Any]) -> Any:
        nonlocal calls
        calls += 1
        value = true()
        fault = rule(calls, arguments, value)
        if fault is None:
            return value
        if fault.error is not None:
            events.append(FaultEvent(where=tool.name, call=calls, detail=f"raised: {fault.error}", shows=fault.error))
            raise ValueError(fault.error)
        events.append(FaultEvent(where=tool.name, call=calls, detail=f"returned {fault.value!r} instead of {value!r}",
                                 shows=str(fault.value)))
        return fault.value

    if isinstance(tool, Tool):
        own = tool.function
        return tool.model_copy(update={"function": lambda args: faulted(args.model_dump(), lambda: own(args))})

    def run(**arguments: Any) -> Any:
        return faulted(arguments, lambda: _call_quietly(tool, arguments))

    return StructuredTool.from_function(func=run, name=tool.name, description=tool.description,
                                        args_schema=tool.args_schema)


def route_targets(graph: StateGraph, source: str) -> list[str]:
    """Where the route out of node `source` can go: its conditional edges' destinations, or
    the nodes its `Command` may go to; [] for a node whose successors are fixed."""
    branches = graph.branches.get(source, {})
    if any(b.ends is None for b in branches.values()):  # a routing function with no path map may go anywhere
        return [*graph.nodes, END]
    if branches:
        return list(dict.fromkeys(t for b in branches.values() for t in (b.ends or {}).values()))
    spec = graph.nodes.get(source)
    if spec is None or not spec.ends:
        return []
    ends_run = not any(start == source for start, _ in graph.edges)  # a node with no edge out ends the run
    return list(dict.fromkeys([*spec.ends, *([END] if ends_run else [])]))


def misrouted(graph: StateGraph, source: str, taken: str, wrong: str, events: list[FaultEvent]) -> StateGraph:
    """`graph` (changed in place) with the route out of `source` going to `wrong` wherever it
    would go to `taken`, every time: a routing function with a wrong branch, or a node whose
    `Command` (a handoff's too) goes astray. The n-th step of `source` that it misroutes is an
    event (`where="route"`, `call=n`)."""
    steps = 0
    detail = f"{source} routed to {wrong} instead of {taken}"

    def astray(destination: Any) -> Any:
        if destination == taken:
            events.append(FaultEvent(where="route", node=source, call=steps, detail=detail, shows=wrong))
            return wrong
        return destination

    branches = graph.branches.get(source, {})
    if branches:
        for name, branch in list(branches.items()):

            def route(state: Any, config: RunnableConfig, path: Any = branch.path, ends: Any = branch.ends) -> Any:
                nonlocal steps
                steps += 1
                return rerouted_choice(path.invoke(state, config), ends, astray)

            branches[name] = branch._replace(path=RunnableCallable(route, name=getattr(branch.path, "name", None),
                                                                   trace=False))
        return graph
    spec = graph.nodes[source]
    inner = spec.runnable
    ends_run = END in route_targets(graph, source)

    def run(state: Any, config: RunnableConfig) -> Any:
        nonlocal steps
        steps += 1
        try:
            return redirected(inner.invoke(state, config), astray, ends_run=ends_run)
        except ParentCommand as exc:  # a handoff from inside the node's own graph
            exc.args = (redirected(exc.args[0], astray, ends_run=ends_run),)
            raise

    graph.nodes[source] = dataclasses.replace(spec, runnable=RunnableCallable(run, name=source, trace=False))
    return graph


def changed_number(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    """`text` with one of its numbers changed (the last of them), what changed and the new
    number; None when it has no number."""
    import re

    found = list(re.finditer(r"\d+", text))
    if not found:
        return None
    match = found[-1]
    old = int(match.group())
    new = old + rng.choice([-1, 1]) * max(1, old // 10 or 7)
    return text[:match.start()] + str(new) + text[match.end():], f"{old} -> {new}", str(new)
