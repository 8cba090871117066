"""Replaying a recorded run from one step, with or without an intervention.

A replay forks the parent run just before the target step (`traces.fork_run`), applies the
edits, and resumes the graph as a child run. Edits of what an agent says or does at the step
(message, route, prefix, tool and activation edits) travel as directives that the step's node
honours when it runs again; edits of the state (plan edits, and message edits on nodes that
are not counterfact's) are written with LangGraph's `update_state` before resuming. Nothing
before the fork point runs again, and a tool call identical to a recorded one gets the
recorded result unless `live_tools` is set.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonpatch
from pydantic import BaseModel, Field

from counterfact.agents import ModelError
from counterfact.graphs import (
    Directives,
    ModelPool,
    StepDirectives,
    ToolChange,
    step_key,
    with_directives,
)
from counterfact.graphs._nodes import tool_call_key
from counterfact.graphs._runner import WorkflowRunner, rebuild
from counterfact.graphs._tasks import Task
from counterfact.interventions._specs import (
    ActivationIntervention,
    Intervention,
    InterventionError,
    MessageEdit,
    PlanEdit,
    PrefixEdit,
    RouteEdit,
    StepRef,
    ToolEdit,
)
from counterfact.traces import RunRecord, StepRecord, TraceStore
from counterfact.traces._fork import ForkPoint, fork_run
from counterfact.traces._models import utcnow
from counterfact.traces._recorder import NODE_METADATA_KEY


class StateUpdate(BaseModel):
    """A write into the state at the fork point, as if `as_node` had produced it."""

    values: dict[str, Any]
    as_node: str | None
    replaces_step: bool = False  # the target step's output is written, not re-executed


class ReplayPlan(BaseModel):
    """An intervention compiled against one run: what to write, what to tell the nodes, and
    what evidence shows that the edit reached the agents."""

    step: int
    intervention: Intervention | None = None
    directives: StepDirectives = Field(default_factory=StepDirectives)
    tool_changes: list[ToolChange] = Field(default_factory=list)
    updates: list[StateUpdate] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)  # texts a later agent must have seen
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


class Replayer:
    """Replays of one recorded run (made by `counterfact run`), rebuilt from its labels."""

    def __init__(
        self, store: TraceStore, run_ref: str, *, model: str | None = None, pool: ModelPool | None = None
    ) -> None:
        self.store = store
        self.parent: RunRecord = store.get_run(run_ref)
        self.runner: WorkflowRunner
        self.task: Task
        self.runner, self.task = rebuild(store, self.parent, model=model, pool=pool)
        self.steps: list[StepRecord] = store.steps(self.parent.id)
        self.graph = self.runner.recorded.graph
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
        names = sorted({s.node for s in self.steps}) if ref.node else sorted({s.agent or "" for s in self.steps})
        raise InterventionError(f"no {ref.describe()} in run {self.parent.id}; it has {', '.join(names)}")

    def compile(self, intervention: Intervention | None, default_step: StepRef | str | int | None) -> ReplayPlan:
        """Check an intervention against this run (before any replay) and compile it."""
        steps = set()
        for edit in intervention.edits if intervention else []:
            ref = edit.at if edit.at.given else default_step
            if ref is None:
                raise InterventionError("say where to edit: --at STEP, or `at:` in the edit file")
            steps.add(self.resolve_step(ref))
        if intervention is None:
            if default_step is None:
                raise InterventionError("say where to replay from: --at STEP")
            return ReplayPlan(step=self.resolve_step(default_step))
        if len(steps) != 1:
            raise InterventionError(f"all edits of one intervention must aim at the same step, got {sorted(steps)}")
        plan = ReplayPlan(step=steps.pop(), intervention=intervention)
        for edit in intervention.edits:
            self._compile_edit(edit, plan)
        return plan

    def _compile_edit(self, edit: Any, plan: ReplayPlan) -> None:
        target = self.steps[plan.step]
        ours = NODE_METADATA_KEY in (self._nodes[target.node].metadata or {})
        here = plan.directives
        if isinstance(edit, MessageEdit):
            original = _text_of(target.output)
            edited = _edited_text(edit, original)
            if ours:
                here.reply = edited
            else:
                plan.updates.append(self._replace_output(target, edited))
            plan.evidence.append(edit.text if edit.mode != "replace" and edit.text else edited)
        elif isinstance(edit, PlanEdit):
            current = self._state_before(plan.step).get("plan") or {}
            try:
                new = edit.plan if edit.plan is not None else jsonpatch.apply_patch(current, edit.patch or [])
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise InterventionError(f"plan patch does not apply at step {plan.step}: {exc}") from None
            previous = self.steps[plan.step - 1].node if plan.step > 0 else None
            plan.updates.append(StateUpdate(values={"plan": new}, as_node=previous))
            plan.evidence.extend(_new_texts(new, current))
        elif isinstance(edit, RouteEdit):
            if target.kind != "router" or not ours:
                raise InterventionError(f"step {plan.step} ({target.node}) is not a routing step")
            here.reply = f"NEXT: {edit.next}\nINSTRUCTION: {edit.instruction}".strip()
            plan.evidence.append(edit.instruction or edit.next)
        elif isinstance(edit, ToolEdit):
            self._require_ours(ours, plan.step, "tool")
            if edit.action == "result":
                here.tool_results[edit.tool] = edit.result
                plan.evidence.append(str(edit.result))
            else:
                agent = target.agent or target.node
                plan.tool_changes.append(
                    ToolChange(agent=agent, tool=edit.tool, action=edit.action, from_step=step_key(target.node, target.invocation))
                )
                plan.evidence.append(f"{'+' if edit.action == 'add' else '-'}tool:{edit.tool}")
        elif isinstance(edit, PrefixEdit):
            self._require_ours(ours, plan.step, "prefix")
            here.prefix = edit.text
            plan.evidence.append(f"prefix:{edit.text}")
        elif isinstance(edit, ActivationIntervention):
            self._require_ours(ours, plan.step, "activation")
            here.activation_edits.extend(self._activation_edits(edit, target))
            plan.activation = True

    def _require_ours(self, ours: bool, step: int, what: str) -> None:
        if not ours:
            raise InterventionError(f"a {what} edit needs a counterfact agent at step {step}")

    def _activation_edits(self, edit: ActivationIntervention, target: StepRecord) -> list[dict[str, Any]]:
        """Resolve the vector and check the edit against the step's model, before any replay."""
        from counterfact.interventions._vectors import resolve_vector

        model = self.model_of(target)
        if not model.white_box:
            raise InterventionError(
                f"step {target.index} runs on {model.name} ({model.backend}), a remote black-box "
                "model: activation edits need a local model"
            )
        vector = resolve_vector(edit, model, self.store) if edit.vector is not None else None
        resolved = edit.to_edit(vector)
        try:
            from counterfact.agents._activations import resolve_edits

            resolve_edits([resolved], model.geometry)  # type: ignore[attr-defined]
        except ModelError as exc:
            raise InterventionError(f"activation edit at step {target.index}: {exc}") from None
        return [resolved.model_dump(mode="json", exclude_none=True)]

    def model_of(self, step: StepRecord) -> Any:
        spec = self.runner.spec
        agent = next((a for a in spec.agents if a.name == step.agent), None)
        return self.runner.models(agent.model or spec.model if agent else spec.model)

    def _state_before(self, step: int) -> dict[str, Any]:
        checkpoint = self.runner.recorded.saver.get_tuple(
            {"configurable": {"thread_id": self.parent.id, "checkpoint_ns": "",
                              "checkpoint_id": self.steps[step].checkpoint_before}}
        )
        return dict(checkpoint.checkpoint["channel_values"]) if checkpoint else {}

    def _replace_output(self, target: StepRecord, text: str) -> StateUpdate:
        """The target's recorded update with its output message's text replaced (same id)."""
        delta = dict(target.delta or {})
        messages = list(delta.get("messages") or [])
        if not messages:
            raise InterventionError(f"step {target.index} wrote no message to edit")
        from langchain_core.messages import AIMessage

        last = messages[-1]
        messages[-1] = AIMessage(content=text, name=last.get("name"), id=last.get("id"))
        return StateUpdate(values={**delta, "messages": messages}, as_node=target.node, replaces_step=True)

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
    ) -> ReplayResult:
        """One child run from the plan's fork point; `arm` is "treatment" or "control"."""
        edited = arm == "treatment" and plan.intervention is not None
        child = RunRecord(
            id=uuid.uuid4().hex,
            workflow=self.parent.workflow,
            workflow_hash=self.parent.workflow_hash,
            task_input=self.parent.task_input,
            labels={**self.parent.labels, **(labels or {}), "arm": arm, "replay_seed": seed},
            intervention_id=intervention_id if edited else None,
        )
        fork = fork_run(self.store, self.parent.id, plan.step, child)
        directives = Directives(
            seed=seed,
            temperature=temperature,
            reuse_tool_results={} if live_tools else self._recorded_tool_results(),
        )
        if edited:
            directives.steps[step_key(fork.node, fork.invocation)] = plan.directives
            directives.tool_changes = plan.tool_changes
        config = with_directives({"recursion_limit": 100}, directives)
        recorded = self.runner.recorded
        if edited:
            self._write_updates(plan, fork, intervention_id)
        result = recorded.continue_run(fork.child_run_id, None, config=config)
        outcome = self.task.score(result.state) if result.error is None else None
        if outcome is not None:
            recorded.finish(fork.child_run_id, outcome)
        applied, detail = (None, "")
        if edited:
            applied, detail = self.check_applied(plan, fork.child_run_id)
        return ReplayResult(
            run_id=fork.child_run_id,
            arm=arm,
            seed=seed,
            status=self.store.get_run(fork.child_run_id).status,
            success=bool(outcome and outcome.success),
            score=outcome.score if outcome else 0.0,
            answer=(result.state or {}).get("final_answer"),
            milestones=outcome.milestones if outcome else [],
            applied=applied,
            applied_detail=detail,
        )

    def _write_updates(self, plan: ReplayPlan, fork: ForkPoint, intervention_id: str | None) -> None:
        recorded = self.runner.recorded
        config: Any = recorded.config(fork.child_run_id)
        config["configurable"].update(checkpoint_ns="", checkpoint_id=fork.checkpoint_id)
        for update in plan.updates:
            before = config["configurable"]["checkpoint_id"]
            config = self.graph.update_state(config, update.values, as_node=update.as_node)
            if update.replaces_step:  # the injected output stands as the target step
                target = self.steps[plan.step]
                step = StepRecord(
                    node=target.node,
                    agent=target.agent,
                    invocation=target.invocation,
                    kind=target.kind,
                    input=target.input,
                    output=_jsonable_message(update.values["messages"][-1]),
                    delta={k: v for k, v in update.values.items() if k != "messages"},
                    checkpoint_before=before,
                    checkpoint_after=config["configurable"]["checkpoint_id"],
                    task_id=f"edit:{intervention_id}",
                    started_at=utcnow(),
                    ended_at=utcnow(),
                )
                with self.store.begin() as conn:
                    self.store.run_writer(fork.child_run_id).write(conn, step)

    def _recorded_tool_results(self) -> dict[str, Any]:
        return {
            tool_call_key(call.name, call.arguments): call.result
            for step in self.steps
            for call in step.tool_calls
            if call.error is None
        }

    # -- did the edit take effect? -------------------------------------------------------------

    def check_applied(self, plan: ReplayPlan, child_id: str) -> tuple[bool, str]:
        """Whether the edited content reached the agents of the replay (activation edits are
        checked by the verifier, which compares next-token distributions)."""
        steps = self.store.steps(child_id)[plan.step :]
        if not steps:
            return False, "the replay recorded no step after the fork"
        seen = "\n".join(
            str(m.get("content", "")) for s in steps for call in s.model_calls for m in call.request
        )
        seen += "\n" + "\n".join(
            str(m.get("content", "")) for s in steps[1:] for m in (s.input or []) if isinstance(m, dict)
        )
        target = steps[0]
        missing = []
        for evidence in plan.evidence:
            if evidence.startswith("prefix:"):
                ok = _text_of(target.output).startswith(evidence.removeprefix("prefix:").strip())
            elif evidence.startswith(("+tool:", "-tool:")):
                name = evidence[6:]
                system = "\n".join(
                    str(m.get("content", "")) for c in target.model_calls for m in c.request if m.get("role") == "system"
                )
                present = f"- {name}:" in system or f'"{name}"' in system
                ok = present if evidence[0] == "+" else not present
            else:
                ok = evidence in seen or evidence in _text_of(target.output)
            if not ok:
                missing.append(evidence)
        if plan.activation and not any(s.model_calls for s in steps[:1]):
            missing.append("a model call at the edited step")
        if missing:
            return False, "not seen by the agents after the fork: " + "; ".join(m[:60] for m in missing)
        return True, f"{len(plan.evidence) or 1} edit(s) reached the agents after the fork"


def parse_step(text: str) -> StepRef:
    """`7`, `solver#1` (node, nth invocation), `agent:researcher#0`."""
    text = text.strip()
    if text.isdigit():
        return StepRef(step=int(text))
    match = re.fullmatch(r"(agent:)?([^#]+)(?:#(\d+))?", text)
    if not match:
        raise InterventionError(f"--at takes a step index, NODE#N or agent:NAME#N, not {text!r}")
    name, invocation = match.group(2), int(match.group(3) or 0)
    if match.group(1):
        return StepRef(agent=name, invocation=invocation)
    return StepRef(node=name, invocation=invocation)


def _text_of(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("content", ""))
    return "" if output is None else str(output)


def _edited_text(edit: MessageEdit, original: str) -> str:
    if edit.mode == "replace":
        return edit.text
    if edit.mode == "append":
        return original + edit.text
    edited = re.sub(edit.pattern or "", edit.text, original)
    if edited == original:
        raise InterventionError(f"pattern {edit.pattern!r} does not occur in the step's message")
    return edited


def _new_texts(new: Any, old: Any) -> list[str]:
    """Strings in the new plan that the old one did not have (what an agent should now see)."""

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


def _jsonable_message(message: Any) -> dict[str, Any]:
    from counterfact.traces._payloads import to_jsonable

    value = to_jsonable(message)
    return value if isinstance(value, dict) else {"content": str(value)}

