"""The fault benchmark: known faults in live runs, and how well the debugger finds and repairs
them against log-only baselines.

For each app shape and fault kind, a task is run clean (it must succeed), then run again with
one fault put into the app's own model or tools (`_kinds`). A faulted run that now fails is an
ordinary recorded run; the truth (kind, step, agent) is kept apart, in what this module
returns and in the file the caller writes, never in the store. The debugger then debugs the
run on the faulted app, and its ranking of suspect steps is scored against the truth, beside
baselines that read the log only: the last step, the first step with an error, a random step.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langgraph.graph import StateGraph
from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel, forget_answers, shared_model
from counterfact.bench._inject import FaultEvent
from counterfact.bench._kinds import Build, Model, Tools, fault_named
from counterfact.graphs import (
    DEMO_SUITE,
    DEMO_WORKFLOW,
    Topology,
    build_graph,
    import_ref,
    initial_state,
    load_suite,
    load_workflow,
    record,
    task_tools,
)
from counterfact.interventions import Budget, Debugger, DebugReport, Replayer, attribute
from counterfact.store import StepRecord, TraceStore

Progress = Callable[[int, int], None]
BASELINES = ("last_step", "first_error", "random_step")
TRIES = 3  # tries per task and fault kind: each aims the fault anew
JUDGE_BASELINE = "attribute_all_at_once"  # `attribute` reading the log, when a judge is given
MIN_STEP_LIMIT, STEP_LIMIT_FACTOR = 25, 3  # a faulted run may take 3 times the clean run's steps, 25 at least


@dataclass
class AppCase:
    """One task of an app shape, ready to run: how the app is built, its input, its check, and
    the tools it is built with for this task (a dataclass: it holds functions)."""

    id: str  # the task's id (its question, where questions are unique)
    input: dict[str, Any]
    check: Callable[[Any], Any]  # the final state -> bool, score or Outcome
    tools: Tools
    build: Build
    ref: str | None = None  # where a replay could import the app from, if it is importable


class Shape(Protocol):
    """An app shape the benchmark puts faults into: its tasks, and the models it runs on."""

    name: str
    repeatable: list[str]  # tools safe to run again in replays (read-only)

    def cases(self) -> list[AppCase]: ...

    def runs_on(self, spec: str) -> bool:
        """Whether this shape's apps can run on the model named by `spec`."""
        ...

    def models(self, spec: str) -> AbstractContextManager[Callable[[], Model]]:
        """A factory of the chat model named by `spec`, as this shape's apps take it."""
        ...


class ExampleShape(BaseModel):
    """A user's LangGraph app on a LangChain chat model: the examples' multi-agent apps."""

    name: str
    build: str  # "module:function" taking a chat model and tools, returning the (uncompiled) graph
    check: str  # "module:function" of the final state
    questions: str  # "module:NAME" of a list of questions
    tools: str  # "module:NAME" of the tools it is built with by default, by name
    repeatable: list[str] = Field(default_factory=list)

    def cases(self) -> list[AppCase]:
        build, check, tools = import_ref(self.build), import_ref(self.check), import_ref(self.tools)
        return [AppCase(id=q, input={"messages": [("user", q)]}, check=check, tools=tools, build=build,
                        ref=self.build) for q in import_ref(self.questions)]

    def runs_on(self, spec: str) -> bool:
        return spec in ("scripted", "embedded") or ":" in spec and not spec.startswith(("local:", "openai:"))

    def models(self, spec: str) -> AbstractContextManager[Callable[[], Model]]:
        return bench_model(spec)


class WorkflowShape(BaseModel):
    """A built-in workflow (pipeline, orchestrator, group chat) on counterfact's own agents, on
    the tasks of a suite; its task tools are made for each task (the lookup tool serves the
    task's facts)."""

    name: str
    workflow: Path
    suite: Path
    # the workflow's agents in another topology (the demo's agents taking turns in a group chat)
    topology: Topology | None = None
    repeatable: list[str] = Field(default_factory=lambda: ["lookup", "calculator"])

    def cases(self) -> list[AppCase]:
        spec = load_workflow(self.workflow)
        if self.topology is not None:
            spec = spec.model_copy(update={"topology": self.topology})
        names = list(dict.fromkeys(t for agent in spec.agents for t in agent.tools))

        def build(model: Model, tools: Tools) -> StateGraph:
            if isinstance(model, BaseChatModel):
                raise CounterfactError(f"shape {self.name} runs on counterfact's models (embedded, local:PATH, openai:MODEL)")
            return build_graph(spec, lambda _spec: model, tools=tools)

        return [AppCase(id=task.id, input=dict(initial_state(task.input())), check=task.score,
                        tools={t.name: t for t in task_tools(names, task.input())}, build=build)
                for task in load_suite(self.suite).tasks]

    def runs_on(self, spec: str) -> bool:
        return spec == "embedded" or spec.startswith(("local:", "openai:"))

    @contextmanager
    def models(self, spec: str) -> Iterator[Callable[[], Model]]:
        if not self.runs_on(spec):
            raise CounterfactError(f"shape {self.name} runs on counterfact's models (embedded, local:PATH, "
                                   f"openai:MODEL), not {spec!r}")
        model = shared_model(spec)
        yield lambda: model


def _example(name: str) -> ExampleShape:
    return ExampleShape(name=name, build=f"examples.multiagent.{name}:build", check="examples.multiagent.common:correct",
                        questions="examples.multiagent.common:QUESTIONS", tools="examples.multiagent.common:TOOLS",
                        repeatable=["population", "add"])


SHAPES: dict[str, Shape] = {
    "pipeline": WorkflowShape(name="pipeline", workflow=DEMO_WORKFLOW, suite=DEMO_SUITE),
    "groupchat": WorkflowShape(name="groupchat", workflow=DEMO_WORKFLOW, suite=DEMO_SUITE, topology="groupchat"),
    **{name: _example(name) for name in ("supervisor", "swarm", "hierarchical", "handoff")},
}


def shape_named(name: str) -> Shape:
    if name not in SHAPES:
        raise CounterfactError(f"no app shape {name!r}; known: {', '.join(SHAPES)}")
    return SHAPES[name]


class Truth(BaseModel):
    """Where the fault was: what a debugger should find. Kept out of the store."""

    run_id: str
    shape: str
    kind: str
    persistent: bool
    step: int
    agent: str | None  # the step's agent
    nested_agent: str | None = None  # the agent inside the step that made the faulted call, if another
    target: str
    detail: str


class CaseScore(BaseModel):
    """One faulted run: the truth, what the debugger ranked, and what the baselines said."""

    truth: Truth
    ranked_steps: list[int]  # the debugger's suspects, validated hypotheses first
    top_agent: str | None
    repaired: bool
    replays: int
    seconds: float
    tokens: int
    baselines: dict[str, int]  # baseline -> the step it names


class Rates(BaseModel):
    """Scores over a set of faulted runs (rates as fractions)."""

    shape: str
    kind: str
    runs: int
    top1_step: float
    top3_step: float
    agent: float
    repaired: float
    median_replays: float
    median_seconds: float
    baselines: dict[str, float] = Field(default_factory=dict)  # baseline -> top-1 step rate


class FaultBench(BaseModel):
    rows: list[Rates]
    overall: Rates | None
    cases: list[CaseScore]
    skipped: dict[str, int]  # why tries made no faulted run: "clean run failed", ...


def step_of(event: FaultEvent, steps: Sequence[StepRecord]) -> StepRecord | None:
    """The step a fault event happened in: the n-th model call or n-th call of a tool, in the
    order they were made, or the n-th step of a node whose route went astray; for a fault every
    call meets (n = 0), the first step whose request shows it (for a tool's description a
    request may not: then the tool's first call)."""
    ordered = [(step, call) for step in steps for call in sorted(step.model_calls, key=lambda c: c.offset_ms or 0)]
    tools = [(step, call) for step in steps for call in sorted(step.tool_calls, key=lambda c: c.offset_ms or 0)]
    if event.where == "route":  # the n-th step of the node the route went astray from
        routed = [step for step in steps if step.node == event.node]
        return routed[event.call - 1] if 0 < event.call <= len(routed) else None
    if event.where == "model" and event.call:
        return ordered[event.call - 1][0] if event.call <= len(ordered) else None
    if not event.call:  # a fault every call meets: the first request that shows it (else the tool's first call)
        shown = next((step for step, call in ordered if event.shows in str(call.request)), None)
        if shown is not None or event.where == "model":
            return shown
    calls = [(step, call) for step, call in tools if call.name == event.where]
    if event.call:
        return calls[event.call - 1][0] if event.call <= len(calls) else None
    return calls[0][0] if calls else None


def _nested_agent(step: StepRecord, event: FaultEvent) -> str | None:
    """The agent nested in the step (a team's member) that made the faulted call, if any."""
    calls = step.model_calls if event.where == "model" else [c for c in step.tool_calls if c.name == event.where]
    nested = next((c.agent for c in calls if c.agent), None)
    return nested.rsplit("/", 1)[-1] if nested else None


def _ranked(report: DebugReport) -> list[int]:
    """Suspect steps in the report's order (validated first, steps placed by replays before
    those read from the log), each step once."""
    return list(dict.fromkeys(h.step for h in report.hypotheses if h.step is not None))


def baseline_steps(steps: Sequence[StepRecord], rng: random.Random) -> dict[str, int]:
    """What the log-only baselines name: the last step, the first step with an error (its own
    or a tool's; the last step when none), a random step."""
    last = len(steps) - 1
    errors = [s.index or 0 for s in steps if s.error or any(c.error for c in s.tool_calls)]
    return {"last_step": last, "first_error": errors[0] if errors else last, "random_step": rng.randrange(len(steps))}


def run_fault_bench(
    store: TraceStore,
    *,
    shapes: Sequence[Shape],
    kinds: Sequence[str],
    runs: int,
    model: str = "scripted",
    seed: int = 0,
    strategies: Sequence[str] = ("history", "handoff", "grounded", "rerun"),
    budget: Budget | None = None,
    judge: ChatModel | str | None = None,
    clean_store: TraceStore | None = None,
    on_progress: Progress | None = None,
) -> FaultBench:
    """Up to `runs` faulted runs per shape and kind, each debugged and scored. Tasks are taken
    in turn, each up to `TRIES` times (the fault aimed anew each time) at one clean run of the
    task; a task whose clean run fails, or a try whose fault does not break the run, is counted
    in `skipped`. `model` names the chat model every app runs on (see each shape's `models`).
    With a `judge` (a model or its spec), `attribute`'s all-at-once method reads each faulted
    run's log too, as one more baseline. The clean runs are recorded in `store`, as a user's
    store holds the runs from before a fault (what the `history` strategy compares tool results
    with), or in `clean_store`, for a debugger that has no earlier run of the task to go by."""
    rng = random.Random(seed)
    cases: list[CaseScore] = []
    skipped: dict[str, int] = {}
    total, done = len(shapes) * len(kinds) * runs, 0
    for shape in shapes:
        app_cases = shape.cases()
        cleans: dict[str, list[StepRecord] | None] = {}  # task id -> the clean run's steps (None: it failed)
        with shape.models(model) as factory:
            for kind_name in kinds:
                made, aimed = 0, set[tuple[str, str]]()
                for case in (app_cases * TRIES)[: runs * TRIES]:
                    if made == runs:
                        break
                    if case.id not in cleans:
                        cleans[case.id] = _clean_run(clean_store or store, shape, case, factory)
                    clean = cleans[case.id]
                    if clean is None:
                        skipped["clean run failed"] = skipped.get("clean run failed", 0) + 1
                        continue
                    scored = _one_case(store, shape, kind_name, case, clean, factory, rng, strategies,
                                       budget or Budget(replays=12), skipped, aimed, judge)
                    if scored is not None:
                        cases.append(scored)
                        made += 1
                        done += 1
                        if on_progress is not None:
                            on_progress(done, total)
                done += runs - made
                if on_progress is not None:
                    on_progress(done, total)
    rows = [rates(shape.name, kind, [c for c in cases if c.truth.shape == shape.name and c.truth.kind == kind])
            for shape in shapes for kind in kinds]
    return FaultBench(rows=[r for r in rows if r.runs], overall=rates("all", "all", cases) if cases else None,
                      cases=cases, skipped=skipped)


def _clean_run(store: TraceStore, shape: Shape, case: AppCase, model: Callable[[], Model]) -> list[StepRecord] | None:
    """The steps of a clean run of the task, which the faults aim at; None if it failed."""
    app = record(case.build(model(), case.tools), store, workflow=f"{shape.name}-clean", ref=case.ref, check=case.check)
    result = app.invoke(case.input)
    return store.steps(result.run_id) if result.status == "succeeded" else None


def _one_case(store: TraceStore, shape: Shape, kind_name: str, case: AppCase, clean: list[StepRecord],
              model: Callable[[], Model], rng: random.Random, strategies: Sequence[str], budget: Budget,
              skipped: dict[str, int], aimed: set[tuple[str, str]], judge: ChatModel | str | None) -> CaseScore | None:
    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    kind = fault_named(kind_name)
    faulted = kind.inject(case.build, model(), case.tools, clean, rng)
    if faulted is None:
        return skip("nothing to aim the fault at")
    if (case.id, faulted.target) in aimed:
        return skip("the same fault on the same task was tried already")
    aimed.add((case.id, faulted.target))
    # a fault can send the app round in circles: a run that takes far more steps than the clean
    # one has failed (LangGraph's own limit is ten thousand steps, each holding the whole history)
    limit = max(MIN_STEP_LIMIT, STEP_LIMIT_FACTOR * len(clean))
    result = record(faulted.graph, store, workflow=shape.name, ref=case.ref, check=case.check).invoke(
        case.input, {"recursion_limit": limit})
    if result.status == "succeeded" or not faulted.events:
        return skip("the fault did not break the run")
    steps = store.steps(result.run_id)
    event = faulted.events[0]
    step = step_of(event, steps)
    if step is None:
        return skip("the faulted call is not in the trace")
    truth = Truth(run_id=result.run_id, shape=shape.name, kind=kind_name, persistent=kind.persistent,
                  step=step.index or 0, agent=step.agent or step.node, nested_agent=_nested_agent(step, event),
                  target=faulted.target, detail=event.detail)
    forget_answers()  # the session starts as `counterfact debug` in a process of its own would
    started = time.perf_counter()
    replayer = Replayer(store, result.run_id, graph=faulted.graph, check=case.check)
    report = Debugger(replayer, strategies=list(strategies), budget=budget, repeatable_tools=shape.repeatable,
                      until_repaired=True).run()
    seconds = time.perf_counter() - started
    baselines = baseline_steps(steps, rng)
    if judge is not None:
        [read] = attribute(store, [result.run_id], judge, "all_at_once", concurrency=1)
        baselines[JUDGE_BASELINE] = read.step if read.step is not None else -1
    ranked = _ranked(report)
    top = next((s for s in steps if (s.index or 0) == ranked[0]), None) if ranked else None
    return CaseScore(
        truth=truth, ranked_steps=ranked, top_agent=(top.agent or top.node) if top else None,
        repaired=any(h.verdict == "validated" for h in report.hypotheses), replays=report.spent.replays,
        seconds=seconds, tokens=report.spent.tokens, baselines=baselines,
    )


def rates(shape: str, kind: str, cases: list[CaseScore]) -> Rates:
    """Scores of `cases` (rates as fractions; zeros for none)."""
    n = len(cases)
    share = (lambda hits: hits / n) if n else (lambda hits: 0.0)
    return Rates(
        shape=shape, kind=kind, runs=n,
        top1_step=share(sum(bool(c.ranked_steps) and c.ranked_steps[0] == c.truth.step for c in cases)),
        top3_step=share(sum(c.truth.step in c.ranked_steps[:3] for c in cases)),
        agent=share(sum(c.top_agent is not None and c.top_agent == c.truth.agent for c in cases)),
        repaired=share(sum(c.repaired for c in cases)),
        median_replays=statistics.median(c.replays for c in cases) if n else 0.0,
        median_seconds=statistics.median(c.seconds for c in cases) if n else 0.0,
        baselines={b: share(sum(c.baselines.get(b) == c.truth.step for c in cases))
                   for b in dict.fromkeys(b for c in cases for b in c.baselines)},
    )


@contextmanager
def bench_model(spec: str) -> Iterator[Callable[[], BaseChatModel]]:
    """A factory of the chat model the apps run on. `scripted`: the examples' deterministic
    team model. `embedded`: counterfact's embedded model served over HTTP from this process,
    reached with the real langchain-openai client (a model that records its own calls cannot
    carry a fault the trace would show). Otherwise "module:attribute" of a factory."""
    if spec == "scripted":
        yield import_ref("examples.multiagent.common:ScriptedTeamModel")
    elif spec == "embedded":
        from langchain_openai import ChatOpenAI

        from counterfact.agents import create_app, running_server, shared_model

        with running_server(create_app(shared_model("embedded"))) as url:
            yield lambda: ChatOpenAI(model="embedded", base_url=url, api_key="local", temperature=0, max_tokens=96,
                                     max_retries=0)
    else:
        yield import_ref(spec)
