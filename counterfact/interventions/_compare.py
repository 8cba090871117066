"""Looking at replays: a run and its replays as a tree, and two runs' steps side by side."""

from __future__ import annotations

from pydantic import BaseModel, Field
from rich.table import Table
from rich.tree import Tree

from counterfact.store import (
    RunRecord,
    StepRecord,
    TraceStore,
    VerdictRecord,
    coloured,
    excerpt,
)


class ReplayGroup(BaseModel):
    """The replays one verification made (or loose replays: no verdict), under their run."""

    verdict: VerdictRecord | None
    children: list[ReplayTree]


class ReplayTree(BaseModel):
    """A run and, grouped by verification, the replays forked from it, and theirs."""

    run: RunRecord
    groups: list[ReplayGroup] = Field(default_factory=list)


def replay_tree(store: TraceStore, run_ref: str) -> ReplayTree:
    """A run, its replays and theirs, grouped by the verification that made them, with its
    verdict (a replay's own verifications included)."""
    return _grow(store, store.get_run(run_ref))


def _grow(store: TraceStore, run: RunRecord) -> ReplayTree:
    node = ReplayTree(run=run)
    children = sorted(store.list_runs(parent=run.id, limit=None), key=lambda r: r.created_at)
    if not children:
        return node
    verdicts = {verdict.id: verdict for verdict in store.verdicts(run_id=run.id)}
    groups: dict[str | None, list[RunRecord]] = {}
    for child in children:
        groups.setdefault(child.labels.get("verification_id"), []).append(child)
    for verification, runs in groups.items():
        node.groups.append(ReplayGroup(
            verdict=verdicts.get(verification) if verification else None,
            children=[_grow(store, child) for child in runs],
        ))
    return node


def run_tree(store: TraceStore, run_ref: str) -> Tree:
    """The replay tree for the terminal: the run, its replays (and theirs), grouped by
    verification, with verdicts."""
    root = replay_tree(store, run_ref)
    tree = Tree(_label(root.run))
    _draw(tree, root)
    return tree


def _draw(branch: Tree, node: ReplayTree) -> None:
    for group in node.groups:
        under = branch
        if group.verdict is not None:
            under = branch.add(
                f"{coloured(group.verdict.verdict)} at step {group.children[0].run.fork_step}: "
                f"{group.verdict.reason}"
            )
        for child in group.children:
            _draw(under.add(_label(child.run)), child)


def _label(run: RunRecord) -> str:
    outcome = "" if run.outcome is None else ("[green]success[/green]" if run.outcome.success else "[red]fail[/red]")
    arm = run.labels.get("arm")
    fork = f" from step {run.fork_step}" if run.fork_step is not None else ""
    return f"{run.id[:12]} {arm or run.workflow}{fork} {run.status} {outcome}".rstrip()


class StepDiff(BaseModel):
    index: int
    node_a: str | None
    node_b: str | None
    same: bool
    a: str
    b: str


def diff_runs(store: TraceStore, a_ref: str, b_ref: str) -> list[StepDiff]:
    """Steps aligned by index (a replay shares its parent's indices), with what changed."""
    a, b = store.steps(a_ref), store.steps(b_ref)
    rows = []
    for i in range(max(len(a), len(b))):
        sa, sb = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        ta, tb = _summary(sa), _summary(sb)
        same = sa is not None and sb is not None and sa.digest == sb.digest
        rows.append(StepDiff(index=i, node_a=sa and sa.node, node_b=sb and sb.node, same=same or ta == tb, a=ta, b=tb))
    return rows


def _summary(step: StepRecord | None) -> str:
    if step is None:
        return ""
    return excerpt(step.output, 100) if step.output is not None else (step.error or "")


def diff_table(rows: list[StepDiff], a: str, b: str) -> Table:
    table = Table(title=f"{a[:12]} vs {b[:12]}")
    for column in ("step", "node", a[:12], b[:12]):
        table.add_column(column, overflow="fold")
    for row in rows:
        node = row.node_a if row.node_a == row.node_b else f"{row.node_a or '-'} / {row.node_b or '-'}"
        style = "dim" if row.same else "bold"
        table.add_row(str(row.index), node or "", row.a, row.b, style=style)
    return table
