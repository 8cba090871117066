"""Recording a LangGraph graph: every node execution becomes a step of a run in the store.

`record(graph, store)` takes a user's own `StateGraph` (or a compiled graph) written in plain
LangGraph style, wraps each node once, and compiles it with the store's checkpointer. Each run
is one LangGraph thread whose id is the run id, so a recorded run can be resumed after a crash
and forked by replays.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

from counterfact.capture import (
    CallCapture,
    digest_of,
    install_langchain_hooks,
    to_jsonable,
)
from counterfact.graphs._refs import (
    CHECK_LABEL,
    GRAPH_LABEL,
    Check,
    check_label,
    find_ref,
    graph_info,
    import_ref,
    score_state,
)
from counterfact.graphs._wrapping import NodeWrapper
from counterfact.store import (
    Outcome,
    RunRecord,
    RunStatus,
    SQLAlchemySaver,
    StepKind,
    StoreError,
    TraceStore,
)

NODE_METADATA_KEY = "counterfact"  # node metadata: {"counterfact": {"agent": ..., "kind": ...}}


CONFIG_LABEL = "config"  # run label: the LangGraph config it was invoked with (RunConfig)
# configurable keys that belong to one thread or to LangGraph itself, never kept with a run
_THREAD_KEYS = {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint_map"}


class RunConfig(BaseModel):
    """What of a run's LangGraph config a replay must run under again: the recursion limit (it
    decides how a looping run ends) and the app's own configurable keys (JSON values only)."""

    recursion_limit: int | None = None
    configurable: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> RunConfig:
        config = config or {}
        kept: dict[str, Any] = {}
        for key, value in dict(config.get("configurable") or {}).items():
            if key in _THREAD_KEYS or key.startswith("__"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue  # an object (a client, a callback): not storable, not replayable
            kept[key] = value
        limit = config.get("recursion_limit")
        return cls(recursion_limit=int(limit) if isinstance(limit, int) else None, configurable=kept)

    @classmethod
    def of_run(cls, run: RunRecord) -> RunConfig:
        return cls.model_validate(run.labels.get(CONFIG_LABEL) or {})

    def label(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True)

    def limit(self) -> int:
        """The recursion limit the run had: its own, else LangGraph's default."""
        if self.recursion_limit is not None:
            return self.recursion_limit
        from langgraph._internal._config import (
            DEFAULT_RECURSION_LIMIT,  # no public name for it
        )

        return int(DEFAULT_RECURSION_LIMIT)


class RunResult(BaseModel):
    """What a recorded invocation returns: the run's id and status, and the final state."""

    model_config = {"arbitrary_types_allowed": True}

    run_id: str
    status: RunStatus
    state: dict[str, Any] | None = None
    error: str | None = None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions it arose from (a few levels: enough for wrapped store errors)."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _database_error(error: BaseException) -> BaseException:
    """The driver's own error behind a store failure (what the database said), else `error`."""
    return next((e.orig for e in _chain(error) if isinstance(e, DBAPIError) and e.orig is not None), error)


def lost_database(error: BaseException) -> bool:
    """Whether an exception (or one it arose from) is the store's connection failing, not the
    graph: SQLAlchemy reports a lost connection as an OperationalError, or, once a transaction
    on it is broken, as a PendingRollbackError."""
    return any(
        isinstance(e, (OperationalError, PendingRollbackError)) or (isinstance(e, DBAPIError) and e.connection_invalidated)
        for e in _chain(error)
    )


class RecordedGraph:
    """A compiled graph whose runs are recorded into a trace store."""

    def __init__(
        self,
        builder: StateGraph,
        store: TraceStore,
        *,
        workflow: str,
        compile_kwargs: Mapping[str, Any] | None = None,
        ref: str | None = None,
        check: Check | str | None = None,
    ) -> None:
        install_langchain_hooks()  # replays reach the LangChain models and tools inside nodes
        self.store = store
        self.saver = SQLAlchemySaver(store)
        self.workflow = workflow
        # run -> task -> (node, invocation) of branch sources' steps, for forced routes; a run's
        # entries go when its invocation ends
        self._invocations: dict[str, dict[str, tuple[str, int]]] = {}
        self._invocations_lock = threading.Lock()
        wrapped = _copy_builder(builder)
        wrapper = NodeWrapper(self.saver, set(wrapped.branches), self._invocations, self._invocations_lock)
        for name, spec in list(wrapped.nodes.items()):
            agent, kind = _role(name, spec.runnable, spec.metadata or {})
            runnable = wrapper.node(name, spec.runnable, agent=agent, kind=kind)
            wrapped.nodes[name] = dataclasses.replace(spec, runnable=runnable)
        for source, branches in list(wrapped.branches.items()):
            wrapped.branches[source] = {
                name: branch._replace(path=wrapper.route(source, branch.path, branch.ends))
                for name, branch in branches.items()
            }
        self.graph: CompiledStateGraph = wrapped.compile(
            checkpointer=self.saver, **dict(compile_kwargs or {})
        )
        self.info = graph_info(self.graph, ref)
        self.workflow_hash = self.info.digest
        self.check: Check | None = import_ref(check) if isinstance(check, str) else check
        self.check_label = check_label(check)

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
            labels={
                GRAPH_LABEL: self.info.model_dump(mode="json"),
                "input_digest": digest_of(to_jsonable(dict(task_input or {}))),
                **({CHECK_LABEL: self.check_label} if self.check_label else {}),
                **dict(labels or {}),
            },
            parent_run_id=parent_run_id,
            fork_step=fork_step,
            intervention_id=intervention_id,
        )
        self.store.create_run(record)
        return record.id

    def config(self, run_id: str, extra: RunnableConfig | None = None) -> RunnableConfig:
        """The run's config; its callbacks capture the LangChain model and tool calls that
        nodes make (LangGraph hands them to everything a node runs)."""
        config: dict[str, Any] = dict(extra or {})
        configurable = {**config.get("configurable", {}), "thread_id": run_id}
        callbacks = config.get("callbacks")
        if isinstance(callbacks, BaseCallbackManager):
            callbacks = callbacks.copy()
            callbacks.add_handler(CallCapture(), inherit=True)
        else:
            callbacks = [*(callbacks or []), CallCapture()]
        return {**config, "configurable": configurable, "callbacks": callbacks}

    def invoke(
        self,
        graph_input: Any,
        config: RunnableConfig | None = None,
        *,
        task_input: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        labels: Mapping[str, Any] | None = None,
        raise_errors: bool = False,
    ) -> RunResult:
        """Start a new recorded run of the graph on `graph_input`, with LangGraph's `config`
        (its recursion limit and configurable keys are kept with the run for replays)."""
        kept = RunConfig.of(config)
        run_id = self.start_run(
            task_input if task_input is not None else _as_task_input(graph_input),
            run_id=run_id,
            labels={**({CONFIG_LABEL: kept.label()} if kept.label() else {}), **dict(labels or {})},
        )
        return self.continue_run(run_id, graph_input, config=config, raise_errors=raise_errors)

    def resume(self, run_ref: str, *, config: RunnableConfig | None = None) -> RunResult:
        """Continue a run that stopped (crash, Ctrl-C) from its last checkpoint, under the
        config it was started with (`config` adds to it)."""
        run = self.store.get_run(run_ref)
        if run.status == "succeeded" or run.status == "failed":
            raise StoreError(f"run {run.id} already finished ({run.status}); nothing to resume")
        if self.saver.get_tuple(self.config(run.id)) is None:
            raise StoreError(f"run {run.id} has no checkpoint to resume from")
        kept = RunConfig.of_run(run)
        base: dict[str, Any] = {"configurable": dict(kept.configurable)}
        if kept.recursion_limit is not None:
            base["recursion_limit"] = kept.recursion_limit
        given = dict(config or {})
        merged = {**base, **given, "configurable": {**base["configurable"], **given.get("configurable", {})}}
        return self.continue_run(run.id, None, config=merged)

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
            with self._invocations_lock:
                self._invocations.pop(run_id, None)
        message = f"{type(error).__name__}: {error}" if error else None
        if error is None and state is not None and ("__interrupt__" in state or self._at_breakpoint(run_id)):
            # waiting for a human: the run goes on when invoked with Command(resume=...), or,
            # stopped at a breakpoint (interrupt_before/after), with None
            return RunResult(run_id=run_id, status="running", state=state)
        if error is not None and lost_database(error):
            # the database went away, not the graph: the run is not an error of its own but
            # cut off, and stays `running` for `resume` (its steps so far are committed whole)
            if raise_errors:
                raise error
            cause = _database_error(error)
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            return RunResult(
                run_id=run_id, status="running", state=None,
                error=f"the store failed in the middle of the run ({reason}): resume it once the database is back",
            )
        status: RunStatus = "error" if error else "succeeded"
        if finish:
            self.store.finish_run(run_id, status, error=message)
            if error is None and self.check is not None:
                outcome = score_state(self.check, state)
                self.finish(run_id, outcome)
                status = "succeeded" if outcome.success else "failed"
        if error is not None and raise_errors:
            raise error
        return RunResult(run_id=run_id, status=status, state=state, error=message)

    def _at_breakpoint(self, run_id: str) -> bool:
        """Whether the run stopped at one of the graph's breakpoints with nodes still to run
        (LangGraph returns the state so far then, without an `__interrupt__`)."""
        if not (self.graph.interrupt_before_nodes or self.graph.interrupt_after_nodes):
            return False
        return bool(self.graph.get_state({"configurable": {"thread_id": run_id}}).next)

    def finish(self, run_id: str, outcome: Outcome) -> None:
        """Store a checker's outcome: a run that completed but missed its answer has failed."""
        self.store.set_outcome(run_id, outcome, "succeeded" if outcome.success else "failed")


def record(
    graph: StateGraph | CompiledStateGraph,
    store: TraceStore,
    *,
    workflow: str | None = None,
    ref: str | None = None,
    check: Check | str | None = None,
) -> RecordedGraph:
    """Record every run of `graph` (a user's StateGraph, compiled or not) into `store`.

    `ref` says where a replay imports the graph from ("module:attribute" of the builder, the
    compiled graph or a factory of either); it is found by itself when the graph is a
    module-level name. `check` scores a finished run's final state (bool, score or Outcome;
    a "module:function" reference is stored with each run so replays reuse it).
    """
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
    return RecordedGraph(
        builder, store, workflow=name, compile_kwargs=compile_kwargs,
        ref=ref or find_ref(graph), check=check,
    )


def _role(node: str, inner: Runnable, metadata: Mapping[str, Any]) -> tuple[str | None, StepKind]:
    """The agent a node's steps are of, and their kind: as its metadata says, else by the node."""
    info = dict(metadata.get(NODE_METADATA_KEY, {}))
    # by name: importing langgraph.prebuilt just for isinstance costs half a second
    is_tool_node = type(inner).__name__ == "ToolNode"
    return info.get("agent", node), info.get("kind", "tool" if is_tool_node else "agent")


def _copy_builder(builder: StateGraph) -> StateGraph:
    """A shallow copy whose node table can be replaced without touching the user's graph."""
    import copy

    clone = copy.copy(builder)
    clone.nodes = dict(builder.nodes)
    clone.compiled = False
    return clone


def _as_task_input(graph_input: Any) -> dict[str, Any]:
    value = to_jsonable(graph_input)
    return value if isinstance(value, dict) else {"input": value}

