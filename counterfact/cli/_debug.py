"""Replay and verification: replay, debug, attribute."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from counterfact._errors import CounterfactError
from counterfact.cli._common import (
    AddressOption,
    AnswerOption,
    CheckerOption,
    CheckOption,
    DbOption,
    EndpointLimitOption,
    ExecutorOption,
    ExpectOption,
    ForceOption,
    FormatOption,
    GraphOption,
    RecursionLimitOption,
    WorkersOption,
    _bar,
    _executor,
    _open,
    _print_json,
    _replayer,
    console,
)
from counterfact.graphs import CheckerName
from counterfact.interventions import Budget, Method, strategy_names
from counterfact.store import coloured


def replay_command(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix) of a recorded run")],
    at: Annotated[str | None, typer.Option("--at", help="step: index, NODE#N or agent:NAME#N")] = None,
    edit: Annotated[Path | None, typer.Option("--edit", help="edit file (YAML or JSON)")] = None,
    pairs: Annotated[int, typer.Option(min=1, help="replays per arm: treatment and control replays paired by seed")] = 3,
    seed: Annotated[int, typer.Option(help="first seed; pair i uses seed+i in both arms")] = 0,
    temperature: Annotated[float | None, typer.Option(help="sample every agent at this temperature")] = None,
    live_tools: Annotated[bool, typer.Option(help="re-run tools instead of reusing recorded results")] = False,
    model: Annotated[str | None, typer.Option(help="model spec, if not the run's own")] = None,
    graph: GraphOption = None,
    check: CheckOption = None,
    expect: ExpectOption = None,
    checker: CheckerOption = CheckerName.normalized,
    answer: AnswerOption = "messages.-1.content",
    force: ForceOption = False,
    recursion_limit: RecursionLimitOption = None,
    concurrency: Annotated[int, typer.Option(help="replays at once per process")] = 4,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Replay a run from a step with an edit, against a control arm, and give a verdict.

    Without --edit, replays the run from the step once, unchanged (a fidelity check).
    """
    from counterfact.interventions import load_intervention, verify

    intervention = load_intervention(edit) if edit else None  # parse errors before anything runs
    replayer = _replayer(db, run, model=model, graph=graph, check=check, expect=expect,
                         checker=checker, answer=answer, force=force, recursion_limit=recursion_limit)
    plan = replayer.compile(intervention, at)
    if intervention is None:
        result = replayer.replay(plan, arm="control", seed=seed, temperature=temperature, live_tools=live_tools)
        if fmt == "json":
            _print_json(result.model_dump(mode="json"))
        else:
            console.print(
                f"replay {result.run_id} from step {plan.step}: {result.status}, answer {result.answer!r}"
            )
        return
    with _executor(replayer.store, executor, address=address, workers=workers, concurrency=concurrency,
                   endpoint_limit=endpoint_limit) as where, _bar("replays", shown=fmt == "text") as on_progress:
        report = verify(
            replayer, plan, pairs=pairs, seed=seed, temperature=temperature, live_tools=live_tools,
            on_progress=on_progress, executor=where,
        )
    if fmt == "json":
        _print_json(report.model_dump(mode="json"))
        return
    _print_verdict(report)


def _print_verdict(report: Any) -> None:
    c = report.comparison
    console.print(f"[bold]{coloured(report.verdict)}[/bold]: {report.reason}")
    table = Table(show_header=True)
    for column in ("", "with edit", "control"):
        table.add_column(column)
    table.add_row("success", f"{c.treatment_successes}/{c.n} ({c.treatment_rate:.0%})", f"{c.control_successes}/{c.n} ({c.control_rate:.0%})")
    table.add_row("answers", ", ".join(str(r.answer) for r in report.treatment), ", ".join(str(r.answer) for r in report.control))
    table.add_row("runs", " ".join(r.run_id[:8] for r in report.treatment), " ".join(r.run_id[:8] for r in report.control))
    console.print(table)
    console.print(
        f"difference {c.difference:+.2f} (95% CI {c.ci_low:+.2f}..{c.ci_high:+.2f}), "
        f"one-sided exact p = {c.p_value:.3g}"
        + (", deterministic (greedy) replays" if report.deterministic else "")
    )
    console.print(f"applied: {'yes' if report.applied else 'no'} ({report.applied_detail})")
    console.print(f"verdict {report.id[:12]} for intervention {report.intervention_id[:12]}")


def _least(model: type[BaseModel], field: str) -> int:
    """The lower bound (`ge`) a pydantic model sets on `field`, so an option's range is the model's."""
    return next(int(rule.ge) for rule in model.model_fields[field].metadata if getattr(rule, "ge", None) is not None)


def debug_command(
    run: Annotated[str, typer.Argument(help="run id (or unique prefix) of a failed run")],
    strategy: Annotated[str, typer.Option(help=f"{', '.join(strategy_names())}, or all (comma-separated)")] = "all",
    budget: Annotated[int, typer.Option(min=_least(Budget, "replays"), help="most replays to spend")] = 24,
    budget_tokens: Annotated[int | None, typer.Option(min=_least(Budget, "tokens"), help="most tokens to spend on replays")] = None,
    pairs: Annotated[int, typer.Option(min=1, help="most treatment/control pairs per fix (sampled runs; greedy runs need one)")] = 6,
    samples: Annotated[int, typer.Option(help="sampled redrafts per hypothesis, and fresh samples per resampled step")] = 3,
    temperature: Annotated[float, typer.Option(help="sampling temperature of resampling")] = 0.8,
    hypothesis_model: Annotated[str | None, typer.Option(help="model spec for the llm strategy")] = None,
    reference: Annotated[str | None, typer.Option(help="a successful run of the same task, to patch from")] = None,
    html: Annotated[Path | None, typer.Option(help="also write the report as an HTML page")] = None,
    session: Annotated[str | None, typer.Option(help="show this stored session of the run again instead of running one")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="finish the run's interrupted session (an error if there is none)")] = False,
    parallel: Annotated[int, typer.Option(min=1, help="fixes verified at once (a local engine decodes up to 16 replays in one batch)")] = 16,
    until_repaired: Annotated[bool, typer.Option("--until-repaired", help="stop verifying once a fix repairs the run")] = False,
    fill_batches: Annotated[bool | None, typer.Option("--fill-batches/--no-fill-batches", help="verify further fixes of one hypothesis at once: faster where the engine decodes them together, and a fix validated beside them makes their replays moot (default: on when every model of the run is local, unless --until-repaired)", show_default=False)] = None,
    repeatable: Annotated[list[str] | None, typer.Option("--repeatable-tool", help="a tool safe to run again in replays (read-only or idempotent); repeat the option")] = None,
    model: Annotated[str | None, typer.Option(help="model spec for replays, if not the run's own")] = None,
    graph: GraphOption = None,
    check: CheckOption = None,
    expect: ExpectOption = None,
    checker: CheckerOption = CheckerName.normalized,
    answer: AnswerOption = "messages.-1.content",
    force: ForceOption = False,
    recursion_limit: RecursionLimitOption = None,
    concurrency: Annotated[int, typer.Option(help="replays at once per process")] = 16,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Find why a run failed: hypotheses from the chosen strategies, each verified by replay.

    An interrupted session (Ctrl-C, a crash) resumes from what the store holds when the same
    command runs again, or explicitly with --resume."""
    from counterfact.interventions import (
        Debugger,
        report_table,
        strategies_from,
        write_html,
    )

    chosen = strategies_from([name.strip() for name in strategy.split(",")])
    debugger = Debugger(
        _replayer(db, run, model=model, graph=graph, check=check, expect=expect,
                  checker=checker, answer=answer, force=force, recursion_limit=recursion_limit),
        strategies=chosen,
        budget=Budget(replays=budget, tokens=budget_tokens),
        pairs=pairs,
        samples=samples,
        temperature=temperature,
        hypothesis_model=hypothesis_model,
        reference=reference,
        on_event=lambda message: console.print(f"[dim]{message}[/dim]") if fmt == "text" else None,
        parallel=parallel,
        repeatable_tools=repeatable or (),
        until_repaired=until_repaired,
        fill_batches=fill_batches,
    )
    if resume and debugger.log.unfinished_session(debugger.replayer.parent.id, chosen) is None:
        raise CounterfactError(f"run {debugger.replayer.parent.id[:12]} has no interrupted debug session with strategies {', '.join(chosen)}")
    if session is not None:
        report = debugger.report_of(session)
    else:
        with _executor(debugger.store, executor, address=address, workers=workers, concurrency=concurrency,
                       endpoint_limit=endpoint_limit) as where, _bar("replays", shown=fmt == "text") as on_progress:
            debugger.executor = where
            debugger.on_progress = on_progress
            report = debugger.run()
    if html is not None:
        write_html(report, html)
    if fmt == "json":
        _print_json(report.model_dump(mode="json"))
        return
    console.print(report_table(report))
    if html is not None:
        console.print(f"HTML report: {html}")


def attribute_command(
    runs: Annotated[list[str] | None, typer.Argument(help="run ids (default: every imported run of --workflow)")] = None,
    workflow: Annotated[str, typer.Option(help="which runs, when none are named")] = "whowhen/algorithm-generated",
    method: Annotated[Method, typer.Option(help="evidence: signals in the log, no model; the others ask the judge")] = "evidence",
    model: Annotated[str, typer.Option(help="model spec of the judge (methods that ask one)")] = "embedded",
    score: Annotated[bool, typer.Option("--score", help="score stored predictions instead of making them")] = False,
    limit: Annotated[int | None, typer.Option(help="only the first N runs")] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="the judge's prompt size: longer logs are read in pieces of this size")] = None,
    concurrency: Annotated[int, typer.Option(help="runs at once per process (a local model batches them)")] = 8,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = 2,
    endpoint_limit: EndpointLimitOption = None,
    fmt: FormatOption = "text",
    db: DbOption = None,
) -> None:
    """Log-only failure attribution (which agent, which step) on runs that cannot be replayed."""
    from rich.progress import Progress

    from counterfact.interventions import Attribution, attribute, score_attributions

    store = _open(db)
    ids = [store.resolve_run_id(r) for r in runs] if runs else [
        r.id for r in store.list_runs(workflow=workflow, limit=None)
    ]
    ids = ids[:limit] if limit else ids
    if not ids:
        raise CounterfactError(f"no runs to attribute (none named, none of workflow {workflow!r})")
    made: list[Attribution] = []
    if not score:
        with _executor(store, executor, address=address, workers=workers, concurrency=concurrency,
                       endpoint_limit=endpoint_limit) as where, Progress(disable=fmt != "text") as progress:
            bar = progress.add_task(f"attributing ({method})", total=len(ids))
            made = attribute(
                store, ids, None if method == "evidence" else model, method,
                max_prompt_tokens=max_prompt_tokens, on_done=lambda _: progress.advance(bar), executor=where,
            )
    result = score_attributions(store, ids, method)
    if fmt == "json":
        _print_json(result.model_dump(mode="json"))
        return
    if made:
        blamed = Table(title=f"attribution ({method})")
        for column in ("run", "agent", "step", "reason"):
            blamed.add_column(column, justify="right" if column == "step" else "left")
        for found in made:
            reason = found.reason or "; ".join(found.errors)
            blamed.add_row(found.run_id[:12], found.agent or "-", "-" if found.step is None else str(found.step), reason)
        console.print(blamed)
    if not result.runs:
        console.print("no run has a ground-truth label to score against")
        return
    table = Table(title=f"attribution ({method}) against the labels")
    for column in ("runs", "agent accuracy", "exact-step accuracy", "read in pieces", "runs with text cut", "errors",
                   "unpredicted"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.runs),
        f"{result.agent_correct}/{result.runs} ({result.agent_accuracy:.0%})",
        f"{result.step_correct}/{result.step_runs} ({result.step_accuracy:.0%})",
        str(result.in_pieces), str(result.truncated), str(result.errors), str(len(result.unpredicted)),
    )
    console.print(table)
