"""A run as a readable tree of steps, for the terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.tree import Tree

from counterfact.capture import ModelCallRecord, timeline
from counterfact.store._handoffs import step_handoffs
from counterfact.store._models import RunRecord, StepRecord

EXCERPT = 160


def output_text(output: Any) -> str:
    """What a step said: a message's content, else its output as JSON ("" for none)."""
    if isinstance(output, dict) and isinstance(output.get("content"), str):
        return output["content"]
    if isinstance(output, str):
        return output
    return "" if output is None else json.dumps(output, ensure_ascii=False, default=str)


def excerpt(value: Any, width: int = EXCERPT) -> str:
    """One line of at most `width` characters for any payload."""
    text = " ".join(output_text(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# One colour per state a person scans for, in every table and tree: runs and verdicts.
STATE_COLOURS = {
    "succeeded": "green", "validated": "green",
    "failed": "red", "refuted": "red",
    "error": "magenta",
    "running": "yellow", "inconclusive": "yellow", "undecided": "yellow",
}


def coloured(state: str, default: str = "yellow") -> str:
    """`state` in its colour, as rich markup."""
    colour = STATE_COLOURS.get(state, default)
    return f"[{colour}]{escape(state)}[/{colour}]"


def render_run(run: RunRecord, steps: Sequence[StepRecord]) -> Tree:
    title = f"[bold]{run.id}[/bold] {escape(run.workflow)} {coloured(run.status)}"
    if run.outcome is not None:
        title += f" score {run.outcome.score:.2f}"
    if run.parent_run_id:
        title += f" (replay of {run.parent_run_id[:12]} from step {run.fork_step})"
    tree = Tree(title)
    if run.task_input:
        tree.add(f"[dim]task[/dim] {escape(excerpt(run.task_input))}")
    graph = run.labels.get("graph") if isinstance(run.labels.get("graph"), dict) else None
    if graph is not None:
        tree.add(f"[dim]graph[/dim] {escape(str(graph.get('ref') or '(no import reference)'))}")
    shown = {k: v for k, v in run.labels.items() if k not in ("graph", "input_digest", "workflow_spec", "task")}
    if shown:
        tree.add(f"[dim]labels[/dim] {escape(excerpt(shown))}")
    if run.error:
        tree.add(f"[magenta]error[/magenta] {escape(run.error)}")
    for step in steps:
        took = (step.ended_at - step.started_at).total_seconds() * 1000
        who = step.agent if step.agent and step.agent != step.node else ""
        head = (
            f"[cyan]{step.index}[/cyan] [bold]{escape(step.node)}[/bold]"
            f"{' (' + escape(who) + ')' if who else ''} [dim]{step.kind} #{step.invocation}, {took:.0f} ms[/dim]"
        )
        node = tree.add(head)
        if step.output is not None:
            node.add(escape(excerpt(step.output)))
        if isinstance(step.delta, dict):
            for key in ("plan", "ledger", "route"):
                if key in step.delta:
                    node.add(f"[yellow]{key}[/yellow] {escape(excerpt(step.delta[key]))}")
        for call in timeline(step.model_calls, step.tool_calls):
            by = f"[blue]{escape(call.agent)}[/blue] " if call.agent else ""
            if isinstance(call, ModelCallRecord):
                used = (
                    "[yellow]forced by the replay[/yellow] (no model call)" if call.params.get("forced")
                    else f"{call.prompt_tokens}+{call.completion_tokens} tokens, {call.latency_ms:.0f} ms"
                )
                node.add(f"{by}[dim]model {escape(call.model)} ({call.backend}): {used}, {call.finish_reason or '-'}[/dim]")
            elif call.handoff is None:
                result = f"[red]{escape(call.error)}[/red]" if call.error else escape(excerpt(call.result, 80))
                node.add(f"{by}[dim]tool[/dim] {escape(call.name)}({escape(excerpt(call.arguments, 60))}) -> {result}")
        for edge in step_handoffs(step):
            via = f" via {escape(edge.tool)}" if edge.tool else ""
            node.add(
                f"[yellow]handoff[/yellow] {escape(edge.source)} -> [bold]{escape(edge.to)}[/bold]{via}"
                f"{': ' + escape(excerpt(edge.text, 80)) if edge.text else ''}"
            )
        if step.error:
            node.add(f"[red]error[/red] {escape(step.error)}")
    return tree


def step_shape(step: StepRecord) -> tuple[Any, ...]:
    """What a replay of a step must reproduce: who ran (node, invocation), what it said, its
    calls in order with the agent nested in it that made each, its handoffs, and its error.
    Ids and times are left out: tool-call ids are a model's own, and times always differ."""
    models = tuple(
        (c.agent, str(c.response.get("content")),
         str([(t.get("name"), t.get("arguments")) for t in c.response.get("tool_calls") or []]))
        for c in step.model_calls
    )
    tools = tuple((c.name, str(c.arguments), str(c.result), c.handoff, c.agent) for c in step.tool_calls)
    edges = tuple((e.source, e.to, e.tool, e.nested) for e in step_handoffs(step))
    return step.node, step.invocation, output_text(step.output), models, tools, edges, step.error
