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
from contextlib import contextmanager
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from counterfact._errors import CounterfactError
from counterfact.agents import ChatModel
from counterfact.bench._inject import FaultEvent
from counterfact.bench._kinds import Build, Tools, fault_named
from counterfact.graphs import import_ref, record
from counterfact.interventions import Budget, Debugger, DebugReport, Replayer, attribute
from counterfact.store import StepRecord, TraceStore

Progress = Callable[[int, int], None]
BASELINES = ("last_step", "first_error", "random_step")
TRIES = 3  # tries per task and fault kind: each aims the fault anew
JUDGE_BASELINE = "attribute_all_at_once"  # `attribute` reading the log, when a judge is given


class Shape(BaseModel):
    """An app shape: a factory of its graph from a chat model, its check, its tasks."""

    name: str
    build: str  # "module:function" taking a chat model, returning the (uncompiled) graph
    check: str  # "module:function" of the final state
    questions: str  # "module:NAME" of a list of questions
    tools: str  # "module:NAME" of the tools it is built with by default, by name
    repeatable: list[str] = Field(default_factory=list)  # tools safe to run again in replays (read-only)


def _example(name: str) -> Shape:
    return Shape(name=name, build=f"examples.multiagent.{name}:build", check="examples.multiagent.common:correct",
                 questions="examples.multiagent.common:QUESTIONS", tools="examples.multiagent.common:TOOLS",
                 repeatable=["population", "add"])


SHAPES = {name: _example(name) for name in ("supervisor", "swarm", "hierarchical", "handoff")}


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
    order they were made; for a fault every call meets (n = 0), the first step it touched."""
    ordered = [(step, call) for step in steps for call in sorted(step.model_calls, key=lambda c: c.offset_ms or 0)]
    tools = [(step, call) for step in steps for call in sorted(step.tool_calls, key=lambda c: c.offset_ms or 0)]
    if event.where == "model":
        if event.call:
            return ordered[event.call - 1][0] if event.call <= len(ordered) else None
        return next((step for step, call in ordered if event.shows in str(call.request)), None)
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
    model: Callable[[], BaseChatModel],
    seed: int = 0,
    strategies: Sequence[str] = ("handoff", "grounded", "rerun"),
    budget: Budget | None = None,
    judge: ChatModel | str | None = None,
    on_progress: Progress | None = None,
) -> FaultBench:
    """Up to `runs` faulted runs per shape and kind, each debugged and scored. Tasks are taken
    in turn, each up to `TRIES` times (the fault aimed anew each time); a try whose clean run
    fails, or whose fault does not break the run, is counted in `skipped`. `model()` makes a
    fresh chat model for each app built. With a `judge` (a model or its spec), `attribute`'s
    all-at-once method reads each faulted run's log too, as one more baseline."""
    rng = random.Random(seed)
    cases: list[CaseScore] = []
    skipped: dict[str, int] = {}
    total, done = len(shapes) * len(kinds) * runs, 0
    for shape in shapes:
        build: Build = import_ref(shape.build)
        check = import_ref(shape.check)
        questions: list[str] = list(import_ref(shape.questions))
        tools: Tools = import_ref(shape.tools)
        for kind_name in kinds:
            kind = fault_named(kind_name)
            made, aimed = 0, set[tuple[str, str]]()
            for question in (questions * TRIES)[: runs * TRIES]:
                if made == runs:
                    break
                case = _one_case(store, shape, kind_name, kind.persistent, build, tools, check, question, model, rng,
                                 strategies, budget or Budget(replays=12), skipped, aimed, judge)
                if case is not None:
                    cases.append(case)
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


def _one_case(store: TraceStore, shape: Shape, kind_name: str, persistent: bool, build: Build, tools: Tools, check: Any,
              question: str, model: Callable[[], BaseChatModel], rng: random.Random, strategies: Sequence[str],
              budget: Budget, skipped: dict[str, int], aimed: set[tuple[str, str]],
              judge: ChatModel | str | None) -> CaseScore | None:
    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    task = {"messages": [("user", question)]}
    clean = record(build(model(), tools), store, workflow=f"{shape.name}-clean", ref=shape.build, check=check).invoke(task)
    if clean.status != "succeeded":
        return skip("clean run failed")
    faulted = fault_named(kind_name).inject(build, model(), tools, store.steps(clean.run_id), rng)
    if faulted is None:
        return skip("nothing to aim the fault at")
    if (question, faulted.target) in aimed:
        return skip("the same fault on the same task was tried already")
    aimed.add((question, faulted.target))
    result = record(faulted.graph, store, workflow=shape.name, ref=shape.build, check=check).invoke(task)
    if result.status == "succeeded" or not faulted.events:
        return skip("the fault did not break the run")
    steps = store.steps(result.run_id)
    event = faulted.events[0]
    step = step_of(event, steps)
    if step is None:
        return skip("the faulted call is not in the trace")
    truth = Truth(run_id=result.run_id, shape=shape.name, kind=kind_name, persistent=persistent, step=step.index or 0,
                  agent=step.agent or step.node, nested_agent=_nested_agent(step, event), target=faulted.target,
                  detail=event.detail)
    started = time.perf_counter()
    replayer = Replayer(store, result.run_id, graph=faulted.graph, check=check)
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
