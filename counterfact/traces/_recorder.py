"""Recording a LangGraph graph: every node execution becomes a step of a run in the store.

`record(graph, store)` takes a user's own `StateGraph` (or a compiled graph) written in plain
LangGraph style, wraps each node once, and compiles it with the store's checkpointer. Each run
is one LangGraph thread whose id is the run id, so a recorded run can be resumed after a crash
and forked by replays.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.utils.runnable import RunnableCallable
from pydantic import BaseModel

from counterfact.traces._checkpointer import SQLAlchemySaver
from counterfact.traces._models import Outcome, RunRecord, RunStatus, StepKind, StepRecord, utcnow
from counterfact.traces._payloads import digest_of, step_output, to_jsonable
from counterfact.traces._records import StepAddress, at_step, collect_calls
from counterfact.traces._store import StoreError, TraceStore, prepare_step

NODE_METADATA_KEY = "counterfact"  # node metadata: {"counterfact": {"agent": ..., "kind": ...}}


class RunResult(BaseModel):
    """What a recorded invocation returns: the run's id and status, and the final state."""

    model_config = {"arbitrary_types_allowed": True}

    run_id: str
    status: RunStatus
    state: dict[str, Any] | None = None
    error: str | None = None


class RecordedGraph:
    """A compiled graph whose runs are recorded into a trace store."""

    def __init__(
        self,
        builder: StateGraph,
        store: TraceStore,
        *,
        workflow: str,
        compile_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.saver = SQLAlchemySaver(store)
        self.workflow = workflow
        wrapped = _copy_builder(builder)
        for name, spec in list(wrapped.nodes.items()):
            wrapped.nodes[name] = dataclasses.replace(
                spec, runnable=self._wrap(name, spec.runnable, spec.metadata or {})
            )
        self.graph: CompiledStateGraph = wrapped.compile(
            checkpointer=self.saver, **dict(compile_kwargs or {})
        )
        self.workflow_hash = _graph_digest(self.graph)

    # -- running --------------------------------------------------------------------------

    def start_run(
        self,
        task_input: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        labels: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        fork_step: int | None = None,
        intervention_id: str | None = None,
    ) -> str:
        """Create the run row; steps arrive as the graph executes under this run's thread."""
        record = RunRecord(
            id=run_id or uuid.uuid4().hex,
            workflow=self.workflow,
            workflow_hash=self.workflow_hash,
            task_input=dict(task_input or {}),
            labels=dict(labels or {}),
            parent_run_id=parent_run_id,
            fork_step=fork_step,
            intervention_id=intervention_id,
        )
        self.store.create_run(record)
        return record.id

    def config(self, run_id: str, extra: RunnableConfig | None = None) -> RunnableConfig:
        config: dict[str, Any] = dict(extra or {})
        configurable = {**config.get("configurable", {}), "thread_id": run_id}
        return {**config, "configurable": configurable}

    def invoke(
        self,
        graph_input: Any,
        *,
        task_input: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        labels: Mapping[str, Any] | None = None,
        config: RunnableConfig | None = None,
        raise_errors: bool = False,
    ) -> RunResult:
        """Start a new recorded run of the graph on `graph_input`."""
        run_id = self.start_run(
            task_input if task_input is not None else _as_task_input(graph_input),
            run_id=run_id,
            labels=labels,
        )
        return self.continue_run(run_id, graph_input, config=config, raise_errors=raise_errors)

    def resume(self, run_ref: str, *, config: RunnableConfig | None = None) -> RunResult:
        """Continue a run that stopped (crash, Ctrl-C) from its last checkpoint."""
        run = self.store.get_run(run_ref)
        if run.status == "succeeded" or run.status == "failed":
            raise StoreError(f"run {run.id} already finished ({run.status}); nothing to resume")
        if self.saver.get_tuple(self.config(run.id)) is None:
            raise StoreError(f"run {run.id} has no checkpoint to resume from")
        return self.continue_run(run.id, None, config=config)

    def continue_run(
        self,
        run_id: str,
        graph_input: Any,
        *,
        config: RunnableConfig | None = None,
        raise_errors: bool = False,
        finish: bool = True,
    ) -> RunResult:
        """Execute the graph under run `run_id` (input None continues from its checkpoint)."""
        self.saver.attach(run_id, self.store.run_writer(run_id))
        error: BaseException | None = None
        state: dict[str, Any] | None = None
        try:
            result = self.graph.invoke(
                graph_input, self.config(run_id, config), durability="sync"
            )
            state = dict(result) if isinstance(result, Mapping) else {"result": result}
        except Exception as exc:  # recorded as the run's error; re-raised on request
            error = exc
        finally:
            self.saver.detach(run_id)
        status: RunStatus = "error" if error else "succeeded"
        message = f"{type(error).__name__}: {error}" if error else None
        if finish:
            self.store.finish_run(run_id, status, error=message)
        if error is not None and raise_errors:
            raise error
        return RunResult(run_id=run_id, status=status, state=state, error=message)

    def finish(self, run_id: str, outcome: Outcome) -> None:
        """Store a checker's outcome: a run that completed but missed its answer has failed."""
        self.store.set_outcome(run_id, outcome, "succeeded" if outcome.success else "failed")

    # -- wrapping nodes --------------------------------------------------------------------

    def _wrap(self, node: str, inner: Runnable, metadata: Mapping[str, Any]) -> Runnable:
        info = dict(metadata.get(NODE_METADATA_KEY, {}))
        agent: str | None = info.get("agent", node)
        # by name: importing langgraph.prebuilt just for isinstance costs half a second
        is_tool_node = type(inner).__name__ == "ToolNode"
        kind: StepKind = info.get("kind", "tool" if is_tool_node else "agent")
        saver = self.saver

        def begin(config: RunnableConfig) -> tuple[Any, StepRecord] | None:
            configurable = config.get("configurable", {})
            thread_id = configurable.get("thread_id")
            writer = saver.writer(str(thread_id)) if thread_id is not None else None
            runtime = configurable.get("__pregel_runtime")
            execution = getattr(runtime, "execution_info", None)
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
            return (str(thread_id), step)

        def end(
            started: tuple[Any, StepRecord], state: Any, calls: Any, result: Any, error: str | None
        ) -> None:
            thread_id, step = started
            _give_message_ids(result)
            delta = to_jsonable(result)
            step = step.model_copy(
                update={
                    "output": step_output(delta),
                    "delta": delta,
                    "ended_at": utcnow(),
                    "error": error,
                    "model_calls": calls.model_calls,
                    "tool_calls": calls.tool_calls,
                }
            )
            messages = state.get("messages") if isinstance(state, Mapping) else None
            prepared = prepare_step(
                saver.store, step, list(messages) if messages is not None else None
            )
            saver.stage_step(thread_id, step.task_id or "", prepared)

        def run(state: Any, config: RunnableConfig) -> Any:
            started = begin(config)
            if started is None:
                return inner.invoke(state, config)
            with collect_calls() as calls, at_step(_address(started)):
                try:
                    result = inner.invoke(state, config)
                except GraphBubbleUp:
                    raise
                except Exception as exc:
                    end(started, state, calls, None, f"{type(exc).__name__}: {exc}")
                    raise
            end(started, state, calls, result, None)
            return result

        async def arun(state: Any, config: RunnableConfig) -> Any:
            started = begin(config)
            if started is None:
                return await inner.ainvoke(state, config)
            with collect_calls() as calls, at_step(_address(started)):
                try:
                    result = await inner.ainvoke(state, config)
                except GraphBubbleUp:
                    raise
                except Exception as exc:
                    end(started, state, calls, None, f"{type(exc).__name__}: {exc}")
                    raise
            end(started, state, calls, result, None)
            return result

        # Not functools.wraps: LangGraph would read the inner signature and stop injecting config.
        return RunnableCallable(run, arun, name=node, trace=False)


def record(
    graph: StateGraph | CompiledStateGraph,
    store: TraceStore,
    *,
    workflow: str | None = None,
) -> RecordedGraph:
    """Record every run of `graph` (a user's StateGraph, compiled or not) into `store`."""
    if isinstance(graph, CompiledStateGraph):
        builder = graph.builder
        compile_kwargs: dict[str, Any] = {
            "interrupt_before": graph.interrupt_before_nodes or None,
            "interrupt_after": graph.interrupt_after_nodes or None,
            "name": graph.name,
        }
        name = workflow or graph.name
    elif isinstance(graph, StateGraph):
        builder, compile_kwargs, name = graph, {}, workflow or "graph"
    else:
        raise TypeError(f"record() takes a StateGraph or compiled graph, not {type(graph).__name__}")
    return RecordedGraph(builder, store, workflow=name, compile_kwargs=compile_kwargs)


def _copy_builder(builder: StateGraph) -> StateGraph:
    """A shallow copy whose node table can be replaced without touching the user's graph."""
    import copy

    clone = copy.copy(builder)
    clone.nodes = dict(builder.nodes)
    clone.compiled = False
    return clone


def _graph_digest(graph: CompiledStateGraph) -> str:
    drawable = graph.get_graph()
    return digest_of(
        {
            "nodes": sorted(drawable.nodes),
            "edges": sorted(
                [e.source, e.target, bool(e.conditional), str(e.data or "")] for e in drawable.edges
            ),
        }
    )


def _give_message_ids(update: Any) -> None:
    """Give new messages their ids now, as `add_messages` would, so the recorded delta names
    the same message ids as the state (a replay replaces a message by its id)."""
    messages = update.get("messages") if isinstance(update, Mapping) else None
    for message in messages if isinstance(messages, list) else []:
        if getattr(message, "id", "") is None and hasattr(message, "content"):
            message.id = str(uuid.uuid4())


def _address(started: tuple[str, StepRecord]) -> StepAddress:
    thread_id, step = started
    return StepAddress(run_id=thread_id, node=step.node, invocation=step.invocation)


def _as_task_input(graph_input: Any) -> dict[str, Any]:
    value = to_jsonable(graph_input)
    return value if isinstance(value, dict) else {"input": value}

