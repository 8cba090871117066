"""A debug report in the terminal (rich) and as a standalone HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Group
from rich.table import Table
from rich.text import Text

from counterfact.interventions._debug import DebugReport

_STYLE = {"validated": "green", "refuted": "red", "inconclusive": "yellow"}


def report_table(report: DebugReport) -> Group:
    title = Text.assemble(("Why did run ", ""), (report.run_id[:12], "bold"), (" fail?", ""))
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("#", width=3)
    table.add_column("verdict", width=12)
    table.add_column("step", width=14)
    table.add_column("hypothesis and edit", ratio=3, overflow="fold")
    table.add_column("edit vs control", ratio=2, overflow="fold")
    for i, h in enumerate(report.hypotheses, start=1):
        c = h.stats.get("comparison", {})
        verdict = h.verdict or h.status
        style = _STYLE.get(verdict, "dim")
        edit = ""
        if h.intervention:
            first = h.intervention["edits"][0]
            detail = first.get("text") if first["kind"] == "message" else first.get("layers", "")
            edit = f"\n[dim]{first['kind']} edit: {str(detail)[:80]}[/dim]"
        why = h.verdict_reason or h.note
        numbers = (
            f"{c['treatment_successes']}/{c['n']} vs {c['control_successes']}/{c['n']}\n"
            f"Δ {c['difference']:+.2f} ({c['ci_low']:+.2f}..{c['ci_high']:+.2f}), p={c['p_value']:.3g}"
            if c else ""
        )
        table.add_row(
            str(i),
            f"[{style}]{verdict}[/{style}]",
            ("-" if h.step is None else str(h.step)) + (f" {h.agent}" if h.agent else ""),
            f"[bold]{h.strategy}[/bold]: {h.reason}{edit}" + (f"\n[dim]{why}[/dim]" if why else ""),
            numbers,
        )
    decided = sum(h.verdict in ("validated", "refuted") for h in report.hypotheses)
    footer = Text(
        f"{len(report.hypotheses)} hypotheses, {decided} decided; spent {report.spent.replays} replays, "
        f"{report.spent.tokens} tokens, {report.spent.seconds:.0f} s"
    )
    return Group(table, footer)


def describe_edit(edit: dict[str, Any]) -> str:
    """One line for an edit, as a person would say it."""
    kind = edit["kind"]
    where = f"step {edit['at']['step']}" if edit.get("at", {}).get("step") is not None else "the step"
    if kind == "message":
        return f"{edit.get('mode', 'replace')} the message at {where} with {edit.get('text', '')!r}"
    if kind == "activation":
        return (
            f"{edit.get('operation', 'add')} {edit.get('component', 'residual')} activations at layers "
            f"{edit['layers']}, positions {edit.get('positions', 'all')}, at {where}"
        )
    if kind == "route":
        return f"route to {edit['next']} at {where}: {edit.get('instruction', '')!r}"
    if kind == "tool":
        return f"tool {edit['tool']}: {edit.get('action', 'result')} {edit.get('result', '')!r} at {where}"
    if kind == "prefix":
        return f"the answer at {where} begins {edit['text']!r}"
    return f"plan edit at {where}"


def write_html(report: DebugReport, path: Path) -> Path:
    env = Environment(
        loader=PackageLoader("counterfact.interventions", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["describe_edit"] = describe_edit
    path.write_text(env.get_template("debug_report.html").render(r=report), encoding="utf-8")
    return path
