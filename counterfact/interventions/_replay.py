"""Replaying a recorded run from one step, with or without an intervention, on any graph.

A replay forks the parent run just before the target step (`traces.fork_run`), applies the
edits (each compiled by its kind's module in `edits/`), and resumes the graph of the run's
`ReplayTarget` as a child run. Edits of what happens inside the step travel as directives that
the recorder (and the models and tools running in the step) honour when the step runs again: a
replaced output, a forced route, a forced model response or tool result, a prefix, activation
edits, tools added or taken away. Edits of the state (state and plan patches) are written with
LangGraph's `update_state` before resuming. Nothing before the fork point runs again, and a
tool call identical to a recorded one gets the recorded result unless `live_tools` is set.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Sequence
from typing import Any

from langgraph.types import Command
from pydantic import BaseModel, Field

from counterfact.capture import (
    Directives,
    step_key,
    to_jsonable,
    tool_call_key,
    with_directives,
)
from counterfact.graphs import NODE_METADATA_KEY, ReplayTarget, RunConfig, load_target
from counterfact.interventions._applied import StateAt, missing_evidence
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import (
    CompileContext,
    InterventionError,
    StepPlan,
    StepRef,
    edit_kind,
)
from counterfact.store import (
    ForkPoint,
    RunRecord,
    StepRecord,
    StoreError,
    TraceStore,
    fork_run,
)


class ReplayPlan(StepPlan):
    """An intervention compiled against one run: the step it forks at, and what its edits
    compiled to there (what to write, what to tell the step, the evidence to look for)."""

    step: int
    intervention: Intervention | None = None


class ReplayResult(BaseModel):
    run_id: str
    arm: str
    seed: int | None
    status: str
    success: bool
    score: float
    answer: str | None
    milestones: list[str] = Field(default_factory=list)
    applied: bool | None = None  # None: nothing to check (a control replay)
    applied_detail: str = ""


class ReplayerSpec(BaseModel):
    """What a worker needs to build the same replayer: the run and the overrides given as
    data (a graph or check given as an object is not: workers use what the run stored)."""

    run_id: str
    graph: str | None = None
    check: str | dict[str, Any] | None = None
    model: str | None = None
    force: bool = False
    recursion_limit: int | None = None
    drafts: bool = True

    def build(self, store: TraceStore) -> Replayer:
        return Replayer(
            store, self.run_id, graph=self.graph, check=self.check, model=self.model, force=self.force,
            recursion_limit=self.recursion_limit, drafts=self.drafts,
        )


class Replayer:
    """Replays of one recorded run: a counterfact workflow's, or any recorded LangGraph app's.

    `graph` (an object or "module:attribute") and `check` override what the run stored;
    `force` replays a graph whose structure changed since the run was recorded. Replays run
    under the run's own LangGraph config (its configurable keys and recursion limit);
    `recursion_limit` replaces the limit, counted as the run would have counted it.
    `drafts` hands each re-executed step the replies the run recorded there, which a local
    model checks in a few passes where it would answer the same (off: it decodes them).
    """

    def __init__(
        self,
        store: TraceStore,
        run_ref: str,
        *,
        target: ReplayTarget | None = None,
        graph: Any = None,
        check: Any = None,
        model: str | None = None,
        pool: Any = None,
        force: bool = False,
        recursion_limit: int | None = None,
        drafts: bool = True,
    ) -> None:
        if recursion_limit is not None and recursion_limit < 1:
            raise InterventionError(f"the recursion limit must be at least 1, not {recursion_limit}")
        self.store = store
        run = store.get_run(run_ref)
        self.target = target or load_target(
            store, run, graph=graph, check=check, model=model, pool=pool, force=force
        )
        self.parent: RunRecord = store.get_run(run.id)  # as the target may have scored it
        check_data = check.model_dump() if isinstance(check, BaseModel) else check
        self.spec = ReplayerSpec(
            run_id=run.id,
            graph=graph if isinstance(graph, str) else None,
            check=check_data if isinstance(check_data, (str, dict)) else None,
            model=model,
            force=force,
            recursion_limit=recursion_limit,
            drafts=drafts,
        )
        self.run_config = RunConfig.of_run(self.parent)
        self.recursion_limit = recursion_limit if recursion_limit is not None else self.run_config.limit()
        self.steps: list[StepRecord] = store.steps(self.parent.id)
        self.graph = self.target.recorded.graph
        self._nodes = self.graph.builder.nodes

    # -- addressing and compiling -------------------------------------------------------------

    def resolve_step(self, ref: StepRef | str | int) -> int:
        """A trace index from an index, "node#n", "agent:name#n" or a StepRef."""
        if isinstance(ref, int):
            ref = StepRef(step=ref)
        elif isinstance(ref, str):
            ref = parse_step(ref)
        last = len(self.steps) - 1
        if ref.step is not None:
            if not 0 <= ref.step <= last:
                raise InterventionError(f"step {ref.step} is out of range: the run has steps 0..{last}")
            return ref.step
        for step in self.steps:
            matches = step.node == ref.node if ref.node is not None else step.agent == ref.agent
            if matches and step.invocation == ref.invocation:
                return step.index or 0
        if ref.agent is not None:  # an agent nested in steps: its nth step with calls of its own
            working = [s for s in self.steps if ref.agent in nested_agents(s)]
            if ref.invocation < len(working):
                return working[ref.invocation].index or 0
        nested = {a for s in self.steps for a in nested_agents(s)}
        names = sorted({s.node for s in self.steps}) if ref.node else sorted({s.agent or "" for s in self.steps} | nested)
        raise InterventionError(f"no {ref.describe()} in run {self.parent.id}; it has {', '.join(names)}")

    def compile(self, intervention: Intervention | None, default_step: StepRef | str | int | None) -> ReplayPlan:
        """Check an intervention against this run (before any replay) and compile it."""
        steps = set()
        for edit in intervention.edits if intervention else []:
            ref = edit.at if edit.at.given else default_step
            if ref is None:
                raise InterventionError("say where to edit: a step, or `at:` in the edit")
            steps.add(self.resolve_step(ref))
        if intervention is None:
            if default_step is None:
                raise InterventionError("say where to replay from: a step")
            return ReplayPlan(step=self.resolve_step(default_step))
        if len(steps) != 1:
            raise InterventionError(f"all edits of one intervention must aim at the same step, got {sorted(steps)}")
        plan = ReplayPlan(step=steps.pop(), intervention=intervention)
        target = self.steps[plan.step]
        context = CompileContext(
            index=plan.step, step=target, ours=self._ours(target), graph=self.graph, steps=self.steps,
            store=self.store, state_before=lambda: self._state_before(plan.step), models=self.target.models,
        )
        for edit in intervention.edits:
            edit_kind(edit.kind).compile_edit(edit, context, plan)
        return plan

    def _ours(self, step: StepRecord) -> bool:
        """Whether the step's node is one of counterfact's agent nodes (it takes replies)."""
        return NODE_METADATA_KEY in (self._nodes[step.node].metadata or {})

    def model_of(self, step: StepRecord) -> Any:
        """The counterfact model a step ran on (None for other models)."""
        return self.target.models(step)

    def _state_before(self, step: int) -> dict[str, Any]:
        return self._channel_values(self.parent.id, self.steps[step].checkpoint_before)

    def _channel_values(self, run_id: str, checkpoint_id: str | None) -> dict[str, Any]:
        """The state a run's checkpoint holds ({} when there is none)."""
        checkpoint = self.target.recorded.saver.get_tuple(
            {"configurable": {"thread_id": run_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}
        )
        return dict(checkpoint.checkpoint["channel_values"]) if checkpoint else {}

    # -- running ------------------------------------------------------------------------------

    def replay(
        self,
        plan: ReplayPlan,
        *,
        arm: str,
        seed: int | None = None,
        temperature: float | None = None,
        live_tools: bool | Sequence[str] = False,
        intervention_id: str | None = None,
        labels: dict[str, Any] | None = None,
        child_id: str | None = None,
    ) -> ReplayResult:
        """One child run from the plan's fork point; `arm` is "treatment" or "control".
        `live_tools`: every tool runs again (True), or those named (tools the app declares safe
        to repeat), instead of answering with its recorded result."""
        edited = arm == "treatment" and plan.intervention is not None
        settings: dict[str, Any] = {"replay_seed": seed}
        if temperature is not None:
            settings["replay_temperature"] = temperature
        if live_tools:
            settings["replay_live_tools"] = True if live_tools is True else sorted(live_tools)
        child = RunRecord(
            id=child_id or uuid.uuid4().hex,
            workflow=self.parent.workflow,
            workflow_hash=self.parent.workflow_hash,
            task_input=self.parent.task_input,
            labels={**self.parent.labels, **(labels or {}), "arm": arm, **settings},
            intervention_id=intervention_id if edited else None,
        )
        fork = fork_run(self.store, self.parent.id, plan.step, child)
        if edited:
            self._write_updates(plan, fork)
        graph_input = Command(resume=plan.resume) if edited and plan.resumes else None
        return self._run(plan, child, edited, graph_input)

    def resume(self, child_ref: str) -> ReplayResult:
        """Finish a replay of this run that was cut off (a crash, a kill) from its last
        checkpoint, with the edit, seed, temperature and tool setting it was started with."""
        child = self.store.get_run(child_ref)
        if child.parent_run_id != self.parent.id or child.fork_step is None:
            raise InterventionError(f"run {child.id} is not a replay of run {self.parent.id}")
        if child.status != "running":
            raise StoreError(f"run {child.id} already finished ({child.status}); nothing to resume")
        spec = self.store.get_intervention(child.intervention_id).spec if child.intervention_id else None
        plan = self.compile(Intervention.model_validate(spec) if spec else None, child.fork_step)
        edited = spec is not None
        # an interrupt's answer goes in only if the replay stopped before the edited step ran
        before_edit = len(self.store.steps(child.id, payloads=False)) <= plan.step
        graph_input = Command(resume=plan.resume) if edited and plan.resumes and before_edit else None
        return self._run(plan, child, edited, graph_input)

    def _run(self, plan: ReplayPlan, child: RunRecord, edited: bool, graph_input: Any) -> ReplayResult:
        """Run (or go on running) the child from its thread's checkpoint, then score it."""
        labels = child.labels
        seed = labels.get("replay_seed")
        directives = Directives(
            seed=seed,
            temperature=labels.get("replay_temperature"),
            reuse_tool_results=self._recorded_tool_results(labels.get("replay_live_tools") or ()),
            recorded_replies=self._recorded_replies(plan.step) if self.spec.drafts else {},
            nested_recursion_limit=self.recursion_limit,
        )
        if edited:
            target = self.steps[plan.step]
            directives.steps[step_key(target.node, target.invocation)] = plan.directives
            directives.tool_changes = plan.tool_changes
            directives.prompt_changes = plan.prompt_changes
            directives.route_changes = plan.route_changes
        recorded = self.target.recorded
        config = with_directives(self._config(child.id, shifted=bool(edited and plan.updates)), directives)
        result = recorded.continue_run(child.id, graph_input, config=config)
        finished = result.error is None and result.status != "running"  # not waiting at an interrupt or breakpoint
        outcome = self.target.score(result.state) if finished else None
        if outcome is not None:
            recorded.finish(child.id, outcome)
        applied, detail = (None, "")
        if edited:
            applied, detail = self.check_applied(plan, child.id)
        return ReplayResult(
            run_id=child.id,
            arm=labels["arm"],
            seed=seed,
            status=self.store.get_run(child.id).status,
            success=bool(outcome and outcome.success),
            score=outcome.score if outcome else 0.0,
            answer=self.target.answer(result.state),
            milestones=outcome.milestones if outcome else [],
            applied=applied,
            applied_detail=detail,
        )

    def _config(self, child_id: str, *, shifted: bool) -> dict[str, Any]:
        """The run's own config for a child resuming from its newest checkpoint, with the
        recursion limit left as the run had it: LangGraph counts a limit from where an invoke
        starts, so the child gets the super-steps the run had left at that point (`shifted`:
        a state edit wrote one checkpoint more)."""
        latest = self.target.recorded.saver.get_tuple({"configurable": {"thread_id": child_id, "checkpoint_ns": ""}})
        step = int((latest.metadata if latest else {}).get("step", -1)) - int(shifted)
        return {
            "recursion_limit": max(1, self.recursion_limit - step - 2),
            "configurable": dict(self.run_config.configurable),
        }

    def _write_updates(self, plan: ReplayPlan, fork: ForkPoint) -> None:
        recorded = self.target.recorded
        config: Any = recorded.config(fork.child_run_id)
        config["configurable"].update(checkpoint_ns="", checkpoint_id=fork.checkpoint_id)
        for update in plan.updates:
            config = self.graph.update_state(config, copy.deepcopy(update.values), as_node=update.as_node)

    def _recorded_replies(self, fork_step: int) -> dict[str, list[str]]:
        """What the run's model calls answered at each step the replay executes again, by step:
        a local model checks these drafts in a few passes where its answer is the same (the control,
        and every step an edit has not changed yet), instead of decoding them token by token."""
        return {
            step_key(step.node, step.invocation): [str(call.response.get("content") or "") for call in step.model_calls]
            for step in self.steps[fork_step:]
            if step.model_calls
        }

    def _recorded_tool_results(self, live: bool | Sequence[str]) -> dict[str, Any]:
        """Recorded results to reuse, by call: none when every tool runs live, else all but
        those of the `live` tools. A handoff's is not reused either: its tool returned a
        `Command` (the recorded text is only its message), so it runs again and hands off."""
        if live is True:
            return {}
        return {
            tool_call_key(call.name, call.arguments): call.result
            for step in self.steps
            for call in step.tool_calls
            if call.error is None and call.handoff is None and call.name not in live
        }

    # -- did the edit take effect? -------------------------------------------------------------

    def check_applied(self, plan: ReplayPlan, child_id: str) -> tuple[bool, str]:
        """Whether the edit reached the agents of the replay, by the evidence the plan expects."""
        steps = self.store.steps(child_id)[plan.step :]
        missing = missing_evidence(plan.evidence, steps, self._state_of(child_id), activation=plan.activation)
        if missing:
            return False, "not seen in the replay: " + "; ".join(m[:80] for m in missing)
        return True, f"{len(plan.evidence) or 1} edit(s) reached the agents after the fork"

    def _state_of(self, run_id: str) -> StateAt:
        """The JSON-able state a step of `run_id` ran on, read from its checkpoint."""
        return lambda step: to_jsonable(self._channel_values(run_id, step.checkpoint_before))


def nested_agents(step: StepRecord) -> set[str]:
    """The names of the agents nested in a step (inside its subgraphs) that made calls."""
    return {call.agent.rsplit("/", 1)[-1] for call in [*step.model_calls, *step.tool_calls] if call.agent}


def parse_step(text: str) -> StepRef:
    """`7`, `solver#1` (node, nth invocation), `agent:researcher#0`."""
    text = text.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() too, but int() refuses it
        return StepRef(step=int(text))
    match = re.fullmatch(r"(agent:)?([^#]+)(?:#(\d+))?", text)
    if not match:
        raise InterventionError(f"a step is an index, NODE#N or agent:NAME#N, not {text!r}")
    name, invocation = match.group(2), int(match.group(3) or 0)
    if match.group(1):
        return StepRef(agent=name, invocation=invocation)
    return StepRef(node=name, invocation=invocation)


def resume_replay(store: TraceStore, run_ref: str, *, model: str | None = None) -> ReplayResult:
    """Finish a cut-off replay (see `Replayer.resume`) of whatever run it forked from."""
    child = store.get_run(run_ref)
    if child.parent_run_id is None:
        raise InterventionError(f"run {child.id} is not a replay: resume it as a run")
    return Replayer(store, child.parent_run_id, model=model).resume(child.id)
