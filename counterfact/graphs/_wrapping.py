"""Wrapping a graph's nodes and conditional edges for the recorder: each node execution is
recorded as a step and does what a replay directs at it, and a conditional edge obeys a route
forced at its source's step.

Apart from `RecordedGraph` so that what runs inside the graph, step by step, is one module,
and the graph that starts, resumes and finishes runs another.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.errors import GraphBubbleUp, ParentCommand
from langgraph.types import Command
from langgraph.utils.runnable import RunnableCallable

from counterfact.capture import (
    RouteChange,
    StepAddress,
    StepCalls,
    StepDirectives,
    at_step,
    collect_calls,
    directing,
    directives_of,
    from_jsonable_update,
    handoff_of,
    step_output,
    to_jsonable,
)
from counterfact.graphs._routes import redirected, rerouted_choice
from counterfact.store import (
    SQLAlchemySaver,
    StepKind,
    StepRecord,
    prepare_step,
    utcnow,
)


class NodeWrapper:
    """Wraps the nodes and conditional edges of one recorded graph."""

    def __init__(
        self,
        saver: SQLAlchemySaver,
        routed: set[str],  # nodes with a conditional edge
        invocations: dict[str, dict[str, tuple[str, int]]],  # run -> task -> (node, invocation)
        lock: threading.Lock,  # of `invocations`
    ) -> None:
        self.saver = saver
        self.routed = routed
        self.invocations = invocations
        self.lock = lock

    def node(self, node: str, inner: Runnable, *, agent: str | None, kind: StepKind) -> Runnable:
        """`inner` recording each execution as a step of the run whose thread it runs in."""
        saver = self.saver

        def begin(config: RunnableConfig) -> tuple[Any, StepRecord] | None:
            configurable = config.get("configurable", {})
            thread_id = configurable.get("thread_id")
            writer = saver.writer(str(thread_id)) if thread_id is not None else None
            execution = _execution_info(config)
            if writer is None or execution is None or "|" in execution.checkpoint_ns:
                return None  # not a recorded run, or inside a subgraph (the parent's step)
            step = StepRecord(
                node=node,
                agent=agent,
                kind=kind,
                invocation=writer.next_invocation(node),
                checkpoint_before=execution.checkpoint_id,
                task_id=execution.task_id,
            )
            if node in self.routed:
                with self.lock:
                    self.invocations.setdefault(str(thread_id), {})[execution.task_id] = (node, step.invocation)
            saver.start_task(str(thread_id), execution.checkpoint_id, execution.task_id)
            return (str(thread_id), step)

        def end(started: tuple[str, StepRecord], state: Any, calls: StepCalls, result: Any, error: str | None) -> None:
            thread_id, step = started
            _give_message_ids(result)
            delta = to_jsonable(result)
            handoff_tools = [c.name for c in calls.tool_calls if c.handoff]
            messages = state.get("messages") if isinstance(state, Mapping) else None
            step = step.model_copy(
                update={
                    "output": step_output(delta, handoff_tools, _ids(messages or [])),
                    "delta": delta,
                    "ended_at": utcnow(),
                    "error": error,
                    "model_calls": calls.model_calls,
                    "tool_calls": calls.tool_calls,
                }
            )
            prepared = prepare_step(
                saver.store, step, list(messages) if messages is not None else None
            )
            saver.stage_step(thread_id, step.task_id or "", prepared)

        @contextmanager
        def recorded_step(state: Any, config: RunnableConfig) -> Iterator[_Execution | None]:
            """Record the node execution inside the block, however it ends: a result (a
            `Command` too), a handoff raised to this graph as `ParentCommand`, or an error.
            An interrupt is left to LangGraph: the node runs again, and is recorded, when the
            run resumes."""
            started = begin(config)
            if started is None:
                yield None
                return
            address = _address(started)
            with collect_calls() as calls, at_step(address), directing(address, directives_of(config)) as scope:
                execution = _Execution(scope.here, routed=node in self.routed,
                                       changes=[c for c in scope.directives.route_changes if c.node == node])
                try:
                    yield execution
                except ParentCommand as exc:
                    command = execution.directed(exc.args[0])
                    exc.args = (command,)
                    _follow_redirect(calls, command)
                    end(started, state, calls, dataclasses.replace(command, graph=None), None)
                    raise
                except GraphBubbleUp:
                    raise
                except Exception as exc:
                    end(started, state, calls, None, f"{type(exc).__name__}: {exc}")
                    raise
            end(started, state, calls, execution.result, None)

        def run(state: Any, config: RunnableConfig) -> Any:
            with recorded_step(state, config) as execution:
                if execution is None:
                    return inner.invoke(state, config)
                if execution.replaced:
                    return execution.set(execution.replacement())
                return execution.set(inner.invoke(state, _nested(config)))

        async def arun(state: Any, config: RunnableConfig) -> Any:
            with recorded_step(state, config) as execution:
                if execution is None:
                    return await inner.ainvoke(state, config)
                if execution.replaced:
                    return execution.set(execution.replacement())
                return execution.set(await inner.ainvoke(state, _nested(config)))

        # Not functools.wraps: LangGraph would read the inner signature and stop injecting config.
        return RunnableCallable(run, arun, name=node, trace=False)

    def route(self, source: str, path: Runnable, ends: Mapping[Any, str] | None = None) -> Runnable:
        """A conditional edge that obeys a route forced at its source's step (a node, given as
        the key its path map has for it)."""
        keys = {node: key for key, node in (ends or {}).items()}

        def forced(config: RunnableConfig) -> Any:
            execution = _execution_info(config)
            thread_id = config.get("configurable", {}).get("thread_id")
            if execution is None or thread_id is None:
                return None
            with self.lock:
                step = self.invocations.get(str(thread_id), {}).get(execution.task_id)
            if step is None:
                return None
            here = directives_of(config).for_step(*step)
            return None if here is None or here.route is None else keys.get(here.route, here.route)

        def changed(chosen: Any, config: RunnableConfig) -> Any:
            """The routing function's choice under the replay's route changes."""
            directives = directives_of(config)
            if not directives.route_changes:
                return chosen
            return rerouted_choice(chosen, ends, lambda node: directives.rerouted(source, node))

        def route(state: Any, config: RunnableConfig) -> Any:
            chosen = forced(config)
            return chosen if chosen is not None else changed(path.invoke(state, config), config)

        async def aroute(state: Any, config: RunnableConfig) -> Any:
            chosen = forced(config)
            return chosen if chosen is not None else changed(await path.ainvoke(state, config), config)

        return RunnableCallable(route, aroute, name=getattr(path, "name", None) or "route", trace=False)


def _execution_info(config: RunnableConfig) -> Any:
    runtime = config.get("configurable", {}).get("__pregel_runtime")
    return getattr(runtime, "execution_info", None)


def _ids(messages: Sequence[Any]) -> set[str]:
    """The ids of the state's messages (a long history at every step: read without a Python
    frame per message when they are all message objects)."""
    try:
        ids = set(map(_ID, messages))
    except AttributeError:  # a state holding other things than messages
        ids = {getattr(m, "id", None) for m in messages}
    ids.discard(None)
    ids.discard("")
    return ids


_ID = operator.attrgetter("id")


def _give_message_ids(update: Any) -> None:
    """Give new messages their ids now, as `add_messages` would, so the recorded delta names
    the same message ids as the state (a replay replaces a message by its id)."""
    if isinstance(update, Command):
        update = update.update
    messages = update.get("messages") if isinstance(update, Mapping) else None
    for message in messages if isinstance(messages, list) else []:
        if getattr(message, "id", "") is None and hasattr(message, "content"):
            message.id = str(uuid.uuid4())


def _nested(config: RunnableConfig) -> RunnableConfig:
    """The config a node's own graph runs under: in a replay, the run's own recursion limit
    (the replay's top level runs under what the run had left at the fork)."""
    limit = directives_of(config).nested_recursion_limit
    return config if limit is None else {**config, "recursion_limit": limit}


class _Execution:
    """One recorded node execution in progress: the directives aimed at it, and its result."""

    def __init__(self, here: StepDirectives | None, *, routed: bool, changes: Sequence[RouteChange] = ()) -> None:
        self.here = here
        self.routed = routed  # its conditional edge obeys a forced route itself
        self.changes = {c.instead_of: c.to for c in changes}  # the replay's route changes out of this node
        self.result: Any = None

    @property
    def replaced(self) -> bool:
        """Whether a replay gives the step's output instead of running the node."""
        return self.here is not None and self.here.output is not None

    def replacement(self) -> Any:
        assert self.here is not None
        return from_jsonable_update(self.here.output)

    def directed(self, result: Any) -> Any:
        """The node's result as a replay directs it: a Command's goto (a handoff's too) goes
        to a forced route, and a handoff's message says what the replay gives it. A node
        without a conditional edge that returned a plain update (an agent that answered
        instead of handing off) goes to a forced route by a Command of its own."""
        result = self.rerouted(result)
        if self.here is None:
            return result
        if not isinstance(result, Command):
            if self.here.route is None or self.routed or not isinstance(result, (Mapping, type(None))):
                return result
            result = Command(update=result)  # its goto is the route, below
        if self.here.route is not None:
            result = dataclasses.replace(result, goto=self.here.route)
        if self.here.handoff_message is not None:
            result = dataclasses.replace(result, update=_with_last_text(result.update, self.here.handoff_message))
        return result

    def rerouted(self, result: Any) -> Any:
        """The node's result under the replay's route changes: a Command's goto changed, and a
        plain update of a node without a conditional edge (which ends the run) sent on."""
        if not self.changes:
            return result
        return redirected(result, lambda goto: self.changes.get(goto, goto), ends_run=not self.routed)

    def set(self, result: Any) -> Any:
        self.result = self.directed(result)
        return self.result


def _follow_redirect(calls: StepCalls, command: Command) -> None:
    """The step's own handoff tool call names where control went and with what message, also
    when a replay changed them from what the tool said."""
    if (handoff := handoff_of(command)) is None:
        return
    for n, call in enumerate(calls.tool_calls):
        if call.handoff is not None and call.agent is None:
            calls.tool_calls[n] = call.model_copy(update={"handoff": handoff.to, "result": handoff.text or call.result})


def _with_last_text(update: Any, text: str) -> Any:
    """A state update whose last message says `text` instead (same id, so it replaces)."""
    messages = update.get("messages") if isinstance(update, Mapping) else None
    if not isinstance(messages, list) or not messages or not hasattr(messages[-1], "model_copy"):
        return update
    return {**update, "messages": [*messages[:-1], messages[-1].model_copy(update={"content": text})]}


def _address(started: tuple[str, StepRecord]) -> StepAddress:
    thread_id, step = started
    return StepAddress(run_id=thread_id, node=step.node, invocation=step.invocation)
