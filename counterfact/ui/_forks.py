"""A run's replays as a tree (grouped by verification, with verdicts), and two runs compared
step by step with the changed words marked."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, Field

from counterfact.interventions import ReplayTree, StepDiff, diff_runs, replay_tree
from counterfact.store import TraceStore, VerdictRecord
from counterfact.ui._lists import RunRow, run_row


class TreeNode(BaseModel):
    run: RunRow
    groups: list[TreeGroup] = Field(default_factory=list)


class TreeGroup(BaseModel):
    """The replays of one verification (or loose replays), under the run they forked from."""

    verdict: VerdictRecord | None
    children: list[TreeNode]


def fork_tree(store: TraceStore, run_ref: str) -> TreeNode:
    """The library's replay tree (`replay_tree`), with each run as a row of the runs list."""
    return _as_node(replay_tree(store, run_ref))


def _as_node(tree: ReplayTree) -> TreeNode:
    return TreeNode(run=run_row(tree.run), groups=[
        TreeGroup(verdict=group.verdict, children=[_as_node(child) for child in group.children])
        for group in tree.groups
    ])


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
