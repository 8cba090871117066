"""Replaying a recorded run from one step, with or without an intervention, on any graph.

A replay forks the parent run just before the target step (`traces.fork_run`), applies the
edits, and resumes the graph of the run's `ReplayTarget` as a child run. Edits of what happens
inside the step travel as directives that the recorder (and the models and tools running in
the step) honour when the step runs again: a replaced output, a forced route, a forced model
response or tool result, a prefix, activation edits, tools added or taken away. Edits of the
state (state and plan patches) are written with LangGraph's `update_state` before resuming.
Nothing before the fork point runs again, and a tool call identical to a recorded one gets the
recorded result unless `live_tools` is set.
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any, Literal

import jsonpatch
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.graph import END
from langgraph.types import Command, Overwrite
from pydantic import BaseModel, Field

from counterfact.agents import ModelError
from counterfact.capture import (
    Directives,
    ModelResponse,
    StepDirectives,
    ToolChange,
    from_jsonable_update,
    is_recorded_command,
    step_key,
    to_jsonable,
    tool_call_key,
    with_directives,
)
from counterfact.graphs import NODE_METADATA_KEY, ReplayTarget, RunConfig, load_target
from counterfact.interventions._applied import (
    Evidence,
    StateAt,
    missing_evidence,
    state_evidence,
)
from counterfact.interventions._specs import (
    ActivationIntervention,
    HandoffEdit,
    InstructionEdit,
    Intervention,
    InterventionError,
    MessageEdit,
    PlanEdit,
    PrefixEdit,
    ResponseEdit,
    ResumeEdit,
    RouteEdit,
    SampleEdit,
    StateEdit,
    StepRef,
    ToolEdit,
)
from counterfact.store import (
    ForkPoint,
    RunRecord,
    StepRecord,
    StoreError,
    TraceStore,
    fork_run,
    output_text,
    step_handoffs,
)


class StateUpdate(BaseModel):
    """A write into the state at the fork point, as if `as_node` had produced it."""

    model_config = {"arbitrary_types_allowed": True}

    values: dict[str, Any]
    as_node: str | None


class ReplayPlan(BaseModel):
    """An intervention compiled against one run: what to write, what to tell the step, and
    what evidence shows that the edit reached the agents."""

    model_config = {"arbitrary_types_allowed": True}

    step: int
    intervention: Intervention | None = None
    directives: StepDirectives = Field(default_factory=StepDirectives)
    tool_changes: list[ToolChange] = Field(default_factory=list)
    updates: list[StateUpdate] = Field(default_factory=list)
    resume: Any = None
    resumes: bool = False  # answer the step's interrupt() with `resume`
    evidence: list[Evidence] = Field(default_factory=list)
    activation: bool = False


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

    def build(self, store: TraceStore) -> Replayer:
        return Replayer(
            store, self.run_id, graph=self.graph, check=self.check, model=self.model, force=self.force,
            recursion_limit=self.recursion_limit,
        )


class Replayer:
    """Replays of one recorded run: a counterfact workflow's, or any recorded LangGraph app's.

    `graph` (an object or "module:attribute") and `check` override what the run stored;
    `force` replays a graph whose structure changed since the run was recorded. Replays run
    under the run's own LangGraph config (its configurable keys and recursion limit);
    `recursion_limit` replaces the limit, counted as the run would have counted it.
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
        for edit in intervention.edits:
            self._compile_edit(edit, plan)
        return plan

    def _ours(self, step: StepRecord) -> bool:
        """Whether the step's node is one of counterfact's agent nodes (it takes replies)."""
        return NODE_METADATA_KEY in (self._nodes[step.node].metadata or {})

    def _compile_edit(self, edit: Any, plan: ReplayPlan) -> None:
        target = self.steps[plan.step]
        ours = self._ours(target)
        here = plan.directives
        if isinstance(edit, MessageEdit):
            edited = _edited_text(edit, output_text(target.output))
            if ours:
                here.reply = edited
            else:
                here.output = _with_last_message(target, edited, keep_tool_calls=edit.mode != "replace")
            plan.evidence.append(Evidence(kind="seen", value=edit.text if edit.mode != "replace" and edit.text else edited))
        elif isinstance(edit, (StateEdit, PlanEdit)):
            self._compile_state_edit(edit, plan)
        elif isinstance(edit, RouteEdit):
            self._compile_route(edit, target, ours, plan)
        elif isinstance(edit, HandoffEdit):
            self._compile_handoff(edit, target, plan)
        elif isinstance(edit, ResponseEdit):
            calls = [
                {"name": c["name"], "args": c.get("args", c.get("arguments", {})), "id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}"}
                for c in edit.tool_calls
            ]
            here.model_responses.append(ModelResponse(call=edit.call, content=edit.text, tool_calls=calls))
            plan.evidence.append(Evidence(kind="response", value=edit.text, tool=str(edit.call)))
        elif isinstance(edit, ResumeEdit):
            plan.resume, plan.resumes = edit.value, True
        elif isinstance(edit, ToolEdit):
            if edit.action == "result":
                here.tool_results[edit.tool] = edit.result
                plan.evidence.append(Evidence(kind="tool_result", value=str(edit.result), tool=edit.tool))
            else:
                if edit.action == "add" and not ours:
                    raise InterventionError(
                        f"step {plan.step} ({target.node}) is not a counterfact agent: on a user's node a "
                        "tool can be removed or its result forced, not added (the edit names no tool object)"
                    )
                owner = target.agent if ours and target.agent else target.node
                plan.tool_changes.append(
                    ToolChange(agent=owner, tool=edit.tool, action=edit.action, from_step=step_key(target.node, target.invocation))
                )
                kind: Literal["tool_offered", "tool_withdrawn"] = "tool_offered" if edit.action == "add" else "tool_withdrawn"
                plan.evidence.append(Evidence(kind=kind, tool=edit.tool))
        elif isinstance(edit, PrefixEdit):
            self._require_local(target, "prefix")
            here.prefix = edit.text
            plan.evidence.append(Evidence(kind="prefix", value=edit.text))
        elif isinstance(edit, InstructionEdit):
            here.instruction = edit.text
            plan.evidence.append(Evidence(kind="seen", value=edit.text))
        elif isinstance(edit, SampleEdit):
            here.temperature, here.seed = edit.temperature, edit.seed
            plan.evidence.append(Evidence(kind="sampled", value=f"{edit.temperature}:{edit.seed}"))
        elif isinstance(edit, ActivationIntervention):
            here.activation_edits.extend(self._activation_edits(edit, target))
            plan.activation = True

    def _compile_route(self, edit: RouteEdit, target: StepRecord, ours: bool, plan: ReplayPlan) -> None:
        if ours:
            if target.kind != "router":
                raise InterventionError(f"step {plan.step} ({target.node}) is not a routing step")
            plan.directives.reply = f"NEXT: {edit.next}\nINSTRUCTION: {edit.instruction}".strip()
            plan.evidence.append(Evidence(kind="seen", value=edit.instruction or edit.next))
            return
        builder = self.graph.builder
        if target.node not in builder.branches and not self._nodes[target.node].ends:
            raise InterventionError(
                f"step {plan.step} ({target.node}) has no conditional edge or Command to route: its successors are fixed"
            )
        if edit.next not in self._nodes and edit.next != END:
            raise InterventionError(f"route: no node {edit.next!r} in the graph; it has {', '.join(sorted(self._nodes))}")
        plan.directives.route = edit.next
        plan.evidence.append(Evidence(kind="route", value=edit.next))

    def _compile_handoff(self, edit: HandoffEdit, target: StepRecord, plan: ReplayPlan) -> None:
        """A handoff the step made goes elsewhere, is not made, or carries another message.
        Redirecting replaces the goto of the step's Command (as a route edit does); keeping
        control answers the handoff tool with a note instead of its Command, so the agent goes
        on (a node that handed off by itself runs again instead)."""
        edges = [e for e in step_handoffs(target) if not e.nested]
        if not edges:
            nested = [f"{e.source} -> {e.to}" for e in step_handoffs(target)]
            where = f" (handoffs nested in it: {', '.join(nested)}; edit the step of the team that made them)" if nested else ""
            raise InterventionError(f"step {plan.step} ({target.node}) made no handoff of its own{where}; use a route edit")
        made = edges[-1]
        if edit.keeps_control:
            note = edit.message or f"The handoff to {made.to} was not made: go on with the task yourself."
            if made.tool:
                plan.directives.kept_handoffs[made.tool] = note
                plan.evidence.append(Evidence(kind="tool_result", value=note, tool=made.tool))
            else:
                plan.directives.route = target.node
                plan.evidence.append(Evidence(kind="route", value=target.node))
            return
        if edit.to:
            if edit.to not in self._nodes:
                raise InterventionError(f"handoff: no agent {edit.to!r} in the graph; it has {', '.join(sorted(self._nodes))}")
            plan.directives.route = edit.to
            plan.evidence.append(Evidence(kind="route", value=edit.to))
        message = edit.message
        if message is None and edit.to and made.to in made.text:
            message = made.text.replace(made.to, edit.to)  # "transferred to X" names the new agent
        if message is not None:
            plan.directives.handoff_message = message
            plan.evidence.append(Evidence(kind="seen", value=message))

    def _compile_state_edit(self, edit: StateEdit | PlanEdit, plan: ReplayPlan) -> None:
        before = self._state_before(plan.step)
        current = to_jsonable(before)
        if isinstance(edit, PlanEdit):
            plan_now = current.get("plan") or {}
            patch = [{"op": "add", "path": "/plan", "value": edit.plan}] if edit.plan is not None else [
                {**op, "path": "/plan" + op.get("path", "")} for op in edit.patch or []
            ]
            current.setdefault("plan", plan_now)
        else:
            patch = edit.patch
        channels = sorted(k for k in self.graph.channels if not k.startswith(("__", "branch:")))
        for op in patch:
            channel = str(op.get("path", "")).lstrip("/").split("/")[0]
            if channel not in channels:
                raise InterventionError(
                    f"state patch at step {plan.step}: no channel {channel!r} in the graph's state (channels: {', '.join(channels)})"
                )
        try:
            patched = jsonpatch.apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise InterventionError(f"state patch does not apply at step {plan.step}: {exc}") from None
        values: dict[str, Any] = {}
        # Models from the fork on must be sent the new texts; every node must run on the new state.
        models_follow = any(step.model_calls for step in self.steps[plan.step :])
        for channel in channels:
            if patched.get(channel) == current.get(channel):
                continue
            value = from_jsonable_update({channel: patched.get(channel)})[channel]
            reducer = isinstance(self.graph.channels[channel], BinaryOperatorAggregate)
            values[channel] = Overwrite(value) if reducer else value
            plan.evidence.append(state_evidence(channel, patched.get(channel)))
            if models_follow:
                new_texts = _new_texts(patched.get(channel), current.get(channel))
                plan.evidence.extend(Evidence(kind="seen", value=t) for t in new_texts)
        if not values:
            raise InterventionError(f"state patch at step {plan.step} changes nothing")
        previous = self.steps[plan.step - 1].node if plan.step > 0 else None
        plan.updates.append(StateUpdate(values=values, as_node=previous))

    def _require_local(self, target: StepRecord, what: str) -> Any:
        model = self.target.models(target) if (self._ours(target) or target.model_calls) else None
        if model is None:
            raise InterventionError(
                f"a {what} edit needs a counterfact model at step {target.index} ({target.node}): "
                "a counterfact agent, or ChatCounterfact in your graph"
            )
        return model

    def _activation_edits(self, edit: ActivationIntervention, target: StepRecord) -> list[dict[str, Any]]:
        """Resolve the vector and check the edit against the step's model, before any replay."""
        from counterfact.interventions._vectors import resolve_vector

        model = self._require_local(target, "activation")
        if not model.white_box:
            raise InterventionError(
                f"step {target.index} runs on {model.name} ({model.backend}), a remote black-box "
                "model: activation edits need a local model"
            )
        vector = resolve_vector(edit, model, self.store) if edit.vector is not None else None
        resolved = edit.to_edit(vector)
        try:
            from counterfact.agents._activations import resolve_edits

            resolve_edits([resolved], model.geometry)
        except ModelError as exc:
            raise InterventionError(f"activation edit at step {target.index}: {exc}") from None
        return [resolved.model_dump(mode="json", exclude_none=True)]

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
        live_tools: bool = False,
        intervention_id: str | None = None,
        labels: dict[str, Any] | None = None,
        child_id: str | None = None,
    ) -> ReplayResult:
        """One child run from the plan's fork point; `arm` is "treatment" or "control"."""
        edited = arm == "treatment" and plan.intervention is not None
        settings: dict[str, Any] = {"replay_seed": seed}
        if temperature is not None:
            settings["replay_temperature"] = temperature
        if live_tools:
            settings["replay_live_tools"] = True
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
            reuse_tool_results={} if labels.get("replay_live_tools") else self._recorded_tool_results(),
            nested_recursion_limit=self.recursion_limit,
        )
        if edited:
            target = self.steps[plan.step]
            directives.steps[step_key(target.node, target.invocation)] = plan.directives
            directives.tool_changes = plan.tool_changes
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

    def _recorded_tool_results(self) -> dict[str, Any]:
        """Recorded results to reuse, by call. A handoff's is not: its tool returned a `Command`
        (the recorded text is only its message), so the tool runs again and hands off as it did."""
        return {
            tool_call_key(call.name, call.arguments): call.result
            for step in self.steps
            for call in step.tool_calls
            if call.error is None and call.handoff is None
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


def _edited_text(edit: MessageEdit, original: str) -> str:
    if edit.mode == "replace":
        return edit.text
    if edit.mode == "append":
        return original + edit.text
    edited = re.sub(edit.pattern or "", edit.text, original)
    if edited == original:
        raise InterventionError(f"pattern {edit.pattern!r} does not occur in the step's message")
    return edited


def _with_last_message(target: StepRecord, text: str, *, keep_tool_calls: bool) -> Any:
    """The step's recorded update with the text of its last message replaced (same id, so
    `add_messages` replaces rather than appends), in whichever channel holds it."""
    delta = copy.deepcopy(target.delta)
    update = delta.get("update") if is_recorded_command(delta) else delta
    if isinstance(update, dict):
        for channel in sorted(update, key=lambda k: k != "messages"):
            value = update[channel]
            message = value[-1] if isinstance(value, list) and value else value
            if isinstance(message, dict) and "content" in message and "role" in message:
                message["content"] = text
                if not keep_tool_calls:
                    message.pop("tool_calls", None)
                return delta
    raise InterventionError(f"step {target.index} ({target.node}) wrote no message to edit; use a state edit")


def _new_texts(new: Any, old: Any) -> list[str]:
    """Strings in the new value that the old one did not have (what an agent should now see)."""

    def strings(value: Any) -> set[str]:
        if isinstance(value, str):
            return {value}
        if isinstance(value, dict):
            return set().union(*(strings(v) for v in value.values())) if value else set()
        if isinstance(value, list):
            return set().union(*(strings(v) for v in value)) if value else set()
        return set()

    fresh = strings(new) - strings(old)
    return sorted(s for s in fresh if len(s) > 3 and s not in ("pending", "in_progress", "done"))


def resume_replay(store: TraceStore, run_ref: str, *, model: str | None = None) -> ReplayResult:
    """Finish a cut-off replay (see `Replayer.resume`) of whatever run it forked from."""
    child = store.get_run(run_ref)
    if child.parent_run_id is None:
        raise InterventionError(f"run {child.id} is not a replay: resume it as a run")
    return Replayer(store, child.parent_run_id, model=model).resume(child.id)
