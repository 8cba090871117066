"""A debug report in the terminal (rich) and as a standalone HTML page.

Per hypothesis: its verdict (or "undecided", with the note that says why), the step and agent,
the strategies that proposed it, the reason and the evidence, and every candidate fix with its
edit in one line, its verdict and the verdict's reason. Then what each strategy that proposed
nothing said, and a footer: hypotheses, decided, replays spent and replays per decided one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from counterfact.interventions._fix_verify import PROBE_RUNS
from counterfact.interventions._fixes import Fix
from counterfact.interventions._session import DebugReport, HypothesisView
from counterfact.interventions.edits import edit_kind
from counterfact.store import coloured


def verdict_of(h: HypothesisView) -> str:
    """What the hypothesis came to: validated, refuted, or undecided."""
    return h.verdict or "undecided"


def fix_verdict(fix: Fix) -> str:
    return fix.verdict or "not tried"


def summary(report: DebugReport) -> dict[str, Any]:
    """The footer's numbers: failure hypotheses (layer scans apart), decided, replays spent,
    replays per decided one."""
    failures = [h for h in report.hypotheses if not h.is_layer_scan]
    decided = sum(h.decided for h in failures)
    replays = report.spent.replays
    return {
        "hypotheses": len(failures),
        "layer_scans": len(report.hypotheses) - len(failures),
        "decided": decided,
        "replays": replays,
        "tokens": report.spent.tokens,
        "seconds": report.spent.seconds,
        "per_decided": replays / decided if decided else None,
    }


def footer_text(report: DebugReport) -> str:
    s = summary(report)
    per = f"{s['per_decided']:.1f}" if s["per_decided"] is not None else "n/a (none decided)"
    scans = f" (and {s['layer_scans']} layer scans)" if s["layer_scans"] else ""
    return (
        f"{s['hypotheses']} hypotheses{scans}, {s['decided']} decided; spent {s['replays']} replays, "
        f"{s['tokens']} tokens, {s['seconds']:.0f} s; replays per decided hypothesis: {per}"
    )


def describe_evidence(evidence: dict[str, Any]) -> list[str]:
    """The evidence behind a hypothesis, one line per item (empty items left out)."""
    names = {
        "unsupported": "unsupported numbers",
        "supported": "numbers the step could have used",
        "failed_calls": "failed tool calls",
        "sample": "successful sample",
    }
    lines = []
    for key, value in evidence.items():
        if value in (None, "", [], {}) or key == PROBE_RUNS:  # the placing replays are in `runs tree`
            continue
        if key == "reasons" and isinstance(value, dict):
            lines.extend(f"{strategy}'s reason: {reason}" for strategy, reason in value.items())
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        lines.append(f"{names.get(key, key.replace('_', ' '))}: {shown}")
    return lines


def describe_edit(edit: dict[str, Any]) -> str:
    """One line for an edit, as a person would say it (its kind says it)."""
    where = f"step {edit['at']['step']}" if (edit.get("at") or {}).get("step") is not None else "the step"
    return edit_kind(edit["kind"]).describe(edit, where)


def describe_fix(fix: Fix | dict[str, Any]) -> str:
    """A fix's edits in one line (a sampled redraft of a step that also reads a note is said
    as one thing: the note, then the sampling)."""
    intervention = fix.intervention if isinstance(fix, Fix) else fix
    edits = (intervention or {}).get("edits", [])
    noted = {json.dumps(e.get("at"), sort_keys=True) for e in edits if e["kind"] == "instruction"}
    parts = []
    for edit in edits:
        if edit["kind"] == "sample" and json.dumps(edit.get("at"), sort_keys=True) in noted:
            parts.append(f"sampled at temperature {edit.get('temperature', 0.8)} with seed {edit.get('seed', 0)}")
        else:
            parts.append(describe_edit(edit))
    return "; ".join(parts) or "no edit"


def report_table(report: DebugReport) -> Group:
    title = Text.assemble(("Why did run ", ""), (report.run_id[:12], "bold"), (" fail?", ""))
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("#", width=3)
    table.add_column("verdict", width=11)
    table.add_column("step", width=14)
    table.add_column("hypothesis", ratio=2, overflow="fold")
    table.add_column("fixes tried", ratio=3, overflow="fold")
    for i, h in enumerate(report.hypotheses, start=1):
        verdict = verdict_of(h)
        about = [f"[bold]{escape(', '.join(h.proposed_by) or h.strategy)}[/bold]: {escape(h.reason)}"]
        about += [f"[dim]{escape(line)}[/dim]" for line in describe_evidence(h.evidence)]
        if not h.decided and h.note:
            about.append(f"[yellow]{escape(h.note)}[/yellow]")
        elif h.verdict_reason:
            about.append(f"[dim]{escape(h.verdict_reason)}[/dim]")
        fixes = []
        for fix in h.fixes:
            line = (
                f"[bold]{escape(fix.label)}[/bold] ({escape(fix.strategy)}): {escape(describe_fix(fix))}\n"
                f"  {coloured(fix_verdict(fix), 'dim')}" + (f": [dim]{escape(fix.reason)}[/dim]" if fix.reason else "")
            )
            fixes.append(line)
        table.add_row(
            str(i),
            coloured(verdict, "dim"),
            ("-" if h.step is None else str(h.step)) + (f" {escape(h.agent)}" if h.agent else ""),
            "\n".join(about),
            "\n".join(fixes) or "[dim]no fix[/dim]",
        )
    parts: list[Any] = [table]
    if report.notes:
        notes = Text("Strategies that proposed nothing:\n", style="bold")
        notes.append("\n".join(f"- {n}" for n in report.notes), style="")
        parts.append(notes)
    parts.append(Text(footer_text(report)))
    return Group(*parts)


def render_html(report: DebugReport, *, standalone: bool = True) -> str:
    """The report as HTML: a whole page, or (for `counterfact ui`) a fragment with its own
    scoped style, so that the file and the browser view have one renderer."""
    env = Environment(
        loader=PackageLoader("counterfact.interventions", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["describe_edit"] = describe_edit
    env.filters["describe_fix"] = describe_fix
    env.filters["describe_evidence"] = describe_evidence
    env.filters["verdict_of"] = verdict_of
    env.filters["fix_verdict"] = fix_verdict
    return env.get_template("debug_report.html").render(
        r=report, summary=summary(report), standalone=standalone
    )


def write_html(report: DebugReport, path: Path) -> Path:
    path.write_text(render_html(report), encoding="utf-8")
    return path
