"""What any recorded run provides so that it can be replayed, scored and debugged.

A `ReplayTarget` holds the three things a replay needs: the graph to resume (recorded into the
same store), a check of the final state, and the counterfact models its steps ran on (for
activation and prefix edits, and to know whether replays sample). counterfact's own workflows
are one provider of it (rebuilt from the spec in the run's labels); a user's LangGraph app is
another (imported from the reference `record()` stored, checked against the stored digest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, shared_model
from counterfact.capture import to_jsonable
from counterfact.graphs import (
    CHECK_LABEL,
    GRAPH_LABEL,
    GraphInfo,
    RecordedGraph,
    check_label,
    import_ref,
    record,
    score_state,
)
from counterfact.graphs._tasks import Checker, CheckerKind
from counterfact.store import Outcome, RunRecord, StepRecord, TraceStore


class TargetError(CounterfactError):
    """A recorded run that cannot be rebuilt for replay; names the graph, check or nodes."""


class ExpectCheck(BaseModel):
    """Success when the value at `answer` (a dotted path into the final state; list indices
    may be negative) matches `expect` by `checker`."""

    expect: str
    checker: CheckerKind = "normalized"
    answer: str = "messages.-1.content"

    def __call__(self, state: Any) -> Outcome:
        got = value_at(to_jsonable(state), self.answer)
        answer = None if got is None else str(got)
        success = Checker(kind=self.checker).check(answer, self.expect)
        return Outcome(success=success, score=float(success), detail=f"answer {answer!r}, expected {self.expect!r}")


def value_at(value: Any, path: str) -> Any:
    """The value at a dotted path (`messages.-1.content`); None where the path does not lead."""
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and _is_index(part) and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _text_at(state: Any, path: str) -> str | None:
    value = value_at(to_jsonable(state), path) if state is not None else None
    return None if value is None else str(value)


def _is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


@dataclass
class ReplayTarget:
    """A recorded run's graph, check and models, ready for replays."""

    recorded: RecordedGraph
    check: Callable[[Any], Outcome | None] | None
    question: str  # what the run was asked, as the debugger shows it (never the expectation)
    models: Callable[[StepRecord], ChatModel | None]
    answer: Callable[[Any], str | None] = lambda state: None
    same_input: dict[str, Any] = field(default_factory=dict)  # labels of runs of the same input
    expected: str | None = None  # for reports only: never shown to a hypothesis model
    counterfact_agents: bool = False  # every agent is counterfact's: temperature and seeds apply
    greedy: bool | None = None  # every agent decodes greedily (None: judge by the recorded calls)

    def score(self, state: Any) -> Outcome | None:
        return None if self.check is None else self.check(state)


def graph_target(
    store: TraceStore,
    run: RunRecord,
    *,
    graph: Any = None,
    check: Callable[[Any], Any] | str | ExpectCheck | None = None,
    force: bool = False,
) -> ReplayTarget:
    """The target of a run recorded from a user's graph: imported from its stored reference
    (or `graph`: an object or a reference), refused if its structure changed unless `force`."""
    stored = GraphInfo.model_validate(run.labels[GRAPH_LABEL]) if GRAPH_LABEL in run.labels else None
    source = graph if graph is not None else (stored.ref if stored else None)
    if source is None:
        raise TargetError(
            f"run {run.id} does not say where its graph comes from: pass the graph, or "
            "record it with record(graph, store, ref='module:attribute')"
        )
    built = _load_graph(source) if isinstance(source, str) else source
    recorded = record(built, store, workflow=run.workflow, ref=source if isinstance(source, str) else None)
    if stored is not None and stored.digest != recorded.info.digest and not force:
        raise TargetError(f"the graph changed since run {run.id[:12]} was recorded: {_differences(stored, recorded.info)}")
    scorer = _check(check if check is not None else run.labels.get(CHECK_LABEL))
    if check is not None and (label := check_label(check)) is not None:
        store.set_labels(run.id, {**run.labels, CHECK_LABEL: label})  # later replays reuse it
    if scorer is not None and run.outcome is None and run.status == "succeeded":
        final = recorded.graph.get_state(recorded.config(run.id)).values  # scored now, once
        recorded.finish(run.id, score_state(scorer, final))
    answer_path = scorer.answer if isinstance(scorer, ExpectCheck) else "messages.-1.content"
    return ReplayTarget(
        recorded=recorded,
        check=(lambda state: score_state(scorer, state)) if scorer is not None else None,
        question=question_of(run.task_input),
        answer=lambda state: _text_at(state, answer_path),
        models=_counterfact_model_of,
        same_input={"input_digest": run.labels["input_digest"]} if "input_digest" in run.labels else {},
        expected=scorer.expect if isinstance(scorer, ExpectCheck) else None,
    )


def _load_graph(ref: str) -> Any:
    try:
        value = import_ref(ref)
    except Exception as exc:
        raise TargetError(f"graph {ref!r} does not import: {type(exc).__name__}: {exc}") from None
    if callable(value) and not hasattr(value, "nodes"):
        try:
            value = value()  # a factory of the graph
        except Exception as exc:
            raise TargetError(f"graph factory {ref!r} failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(value, "nodes"):
        raise TargetError(f"{ref!r} is a {type(value).__name__}, not a StateGraph, compiled graph or factory")
    return value


def _differences(old: GraphInfo, new: GraphInfo) -> str:
    gone, added = sorted(set(old.nodes) - set(new.nodes)), sorted(set(new.nodes) - set(old.nodes))
    parts = [f"nodes removed: {', '.join(gone)}"] if gone else []
    parts += [f"nodes added: {', '.join(added)}"] if added else []
    if not parts:
        changed = {str(e[0]) for e in old.edges if e not in new.edges} | {str(e[0]) for e in new.edges if e not in old.edges}
        parts.append(f"edges changed at: {', '.join(sorted(changed))}")
    return "; ".join(parts) + " (pass force to replay anyway)"


def _check(check: Any) -> Callable[[Any], Any] | None:
    """A check from a callable, a "module:function" reference, or its stored description."""
    if check is None or callable(check):
        return check
    if isinstance(check, str):
        check = {"function": check}
    if isinstance(check, dict) and "function" in check:
        try:
            function = import_ref(check["function"])
        except Exception as exc:
            raise TargetError(f"check {check['function']!r} does not import: {type(exc).__name__}: {exc}") from None
        if not callable(function):
            raise TargetError(f"check {check['function']!r} is not callable")
        return function
    if isinstance(check, dict) and "expect" in check:
        return ExpectCheck.model_validate(check)
    raise TargetError(f"a check is a callable, 'module:function' or {{expect, checker, answer}}, not {check!r}")


def question_of(task_input: dict[str, Any]) -> str:
    """The run's input as one line of text, for the debugger's prompt."""
    for key in ("question", "input", "task", "query"):
        if isinstance(task_input.get(key), str):
            return task_input[key]
    messages = task_input.get("messages")
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, dict):
            return str(first.get("content", ""))
        if isinstance(first, (list, tuple)) and len(first) == 2:
            return str(first[1])
        return str(first)
    return str(task_input)


def _counterfact_model_of(step: StepRecord) -> ChatModel | None:
    """The counterfact model a step's model calls ran on (a spec they recorded), if any."""
    for call in step.model_calls:
        spec = call.params.get("counterfact_model")
        if isinstance(spec, str):
            return shared_model(spec)
    return None


def workflow_target(
    store: TraceStore, run: RunRecord, *, model: str | None = None, pool: Any = None
) -> ReplayTarget:
    """The target of a run made by `counterfact run`, rebuilt from its labels."""
    from counterfact.graphs._runner import rebuild

    runner, task = rebuild(store, run, model=model, pool=pool)
    spec = runner.spec

    def model_of(step: StepRecord) -> ChatModel | None:
        agent = next((a for a in spec.agents if a.name == step.agent), None)
        return runner.models(agent.model or spec.model if agent else spec.model)

    return ReplayTarget(
        recorded=runner.recorded,
        check=task.score if task.answer is not None else None,
        question=task.question,
        models=model_of,
        answer=lambda state: (state or {}).get("final_answer"),
        same_input={"task_id": str(run.labels.get("task_id"))},
        expected=task.answer,
        counterfact_agents=True,
        greedy=all(a.settings.temperature == 0.0 for a in spec.agents),
    )


def load_target(
    store: TraceStore,
    run: RunRecord,
    *,
    graph: Any = None,
    check: Any = None,
    model: str | None = None,
    pool: Any = None,
    force: bool = False,
) -> ReplayTarget:
    """The replay target of any recorded run: a counterfact workflow unless a graph is given."""
    if graph is None and "workflow_spec" in run.labels and "task" in run.labels:
        return workflow_target(store, run, model=model, pool=pool)
    return graph_target(store, run, graph=graph, check=check, force=force)

