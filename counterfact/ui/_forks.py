"""A run's replays as a tree (grouped by verification, with verdicts), and two runs compared
step by step with the changed words marked."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, Field

from counterfact.interventions import StepDiff, diff_runs
from counterfact.traces import RunRecord, TraceStore, VerdictRecord
from counterfact.ui._lists import RunRow, run_row


class TreeNode(BaseModel):
    run: RunRow
    groups: list[TreeGroup] = Field(default_factory=list)


class TreeGroup(BaseModel):
    """The replays of one verification (or loose replays), under the run they forked from."""

    verdict: VerdictRecord | None
    children: list[TreeNode]


def fork_tree(store: TraceStore, run_ref: str) -> TreeNode:
    """A run, its replays and theirs, grouped by the verification that made them."""
    root = store.get_run(run_ref)
    verdicts = {v.id: v for v in store.verdicts(run_id=root.id)}
    return _grow(store, root, verdicts, depth=0)


def _grow(store: TraceStore, run: RunRecord, verdicts: dict[str, VerdictRecord], depth: int) -> TreeNode:
    node = TreeNode(run=run_row(run))
    if depth > 12:
        return node
    children = sorted(store.list_runs(parent=run.id, limit=None), key=lambda r: r.created_at)
    groups: dict[str | None, list[RunRecord]] = {}
    for child in children:
        groups.setdefault(child.labels.get("verification_id"), []).append(child)
    for verification, runs in groups.items():
        if verification and verification not in verdicts:
            verdicts.update({v.id: v for v in store.verdicts(run_id=run.id)})
        node.groups.append(TreeGroup(
            verdict=verdicts.get(verification) if verification else None,
            children=[_grow(store, c, verdicts, depth + 1) for c in runs],
        ))
    return node


class CompareRow(BaseModel):
    index: int
    node_a: str | None
    node_b: str | None
    same: bool
    a: list[tuple[str, bool]]  # (text, changed) pieces
    b: list[tuple[str, bool]]


def compare_runs(store: TraceStore, a_ref: str, b_ref: str) -> tuple[RunRow, RunRow, list[CompareRow]]:
    """Two runs' steps aligned by index (as `counterfact diff`), with the changed words marked."""
    a, b = store.get_run(a_ref), store.get_run(b_ref)
    rows = [_marked(d) for d in diff_runs(store, a.id, b.id)]
    return run_row(a), run_row(b), rows


def _marked(diff: StepDiff) -> CompareRow:
    if diff.same:
        return CompareRow(index=diff.index, node_a=diff.node_a, node_b=diff.node_b, same=True,
                          a=[(diff.a, False)], b=[(diff.b, False)])
    wa, wb = diff.a.split(" "), diff.b.split(" ")
    pa: list[tuple[str, bool]] = []
    pb: list[tuple[str, bool]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if i2 > i1:
            pa.append((" ".join(wa[i1:i2]) + " ", op != "equal"))
        if j2 > j1:
            pb.append((" ".join(wb[j1:j2]) + " ", op != "equal"))
    return CompareRow(index=diff.index, node_a=diff.node_a, node_b=diff.node_b, same=False, a=pa, b=pb)
