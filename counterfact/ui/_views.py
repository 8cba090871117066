"""What the viewer shows, computed from the store: each page's data as pydantic models, so the
JSON API and the HTML pages read the same thing. Nothing here writes."""

from __future__ import annotations

import difflib
import json
from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from counterfact.graphs import question_of
from counterfact.interventions import (
    METHODS,
    AttributionScore,
    StepDiff,
    diff_runs,
    score_attributions,
)
from counterfact.traces import (
    GRAPH_LABEL,
    ChainReport,
    ModelCallRecord,
    RunRecord,
    StepRecord,
    ToolCallRecord,
    TraceStore,
    VerdictRecord,
    state_at,
    verify_run,
)
from counterfact.traces._show import excerpt

# Labels shown elsewhere on the page (or too big to be worth showing as a label).
_HIDDEN_LABELS = ("graph", "input_digest", "workflow_spec", "task", "attribution", "check", "mistake_agent",
                  "mistake_step", "mistake_reason", "ground_truth")


class RunRow(BaseModel):
    """One line of the runs list."""

    id: str
    workflow: str
    status: str
    success: bool | None
    score: float | None
    detail: str | None  # the checker's word on the outcome (the answer, and what was expected)
    created_at: datetime
    steps: int
    tokens: int
    task: str
    parent_run_id: str | None
    fork_step: int | None
    source: str
    arm: str | None = None


def run_row(run: RunRecord) -> RunRow:
    return RunRow(
        id=run.id, workflow=run.workflow, status=run.status,
        success=run.outcome.success if run.outcome else None,
        score=run.outcome.score if run.outcome else None,
        detail=run.outcome.detail if run.outcome else None,
        created_at=run.created_at, steps=run.step_count, tokens=run.total_tokens,
        task=excerpt(question_of(run.task_input) or run.task_input, 120) if run.task_input else "",
        parent_run_id=run.parent_run_id, fork_step=run.fork_step, source=run.source,
        arm=run.labels.get("arm"),
    )


class RunFilters(BaseModel):
    """The runs list's filters: the same as `counterfact runs list`, plus text and source."""

    status: str | None = None
    workflow: str | None = None
    agent: str | None = None
    label: list[str] = Field(default_factory=list)  # KEY=VALUE
    since: datetime | None = None
    text: str | None = None
    source: str | None = None

    def labels(self) -> dict[str, str]:
        pairs = {}
        for item in self.label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"label filter {item!r} is not KEY=VALUE")
            pairs[key] = value
        return pairs


class RunsPage(BaseModel):
    rows: list[RunRow]
    next_cursor: str | None  # the keyset cursor of the next (older) page


def runs_page(store: TraceStore, filters: RunFilters, *, cursor: str | None = None, limit: int = 50) -> RunsPage:
    """A page of the runs list, newest first; `cursor` continues after a previous page."""
    before = parse_cursor(cursor) if cursor else None
    runs = store.list_runs(
        status=filters.status or None, workflow=filters.workflow or None, agent=filters.agent or None,
        labels=filters.labels(), since=filters.since, text=filters.text or None,
        source=filters.source or None, before=before, limit=limit + 1,
    )
    more = len(runs) > limit
    runs = runs[:limit]
    cursor_next = f"{runs[-1].created_at.isoformat()}|{runs[-1].id}" if more and runs else None
    return RunsPage(rows=[run_row(r) for r in runs], next_cursor=cursor_next)


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    stamp, sep, run_id = cursor.partition("|")
    try:
        if not sep:
            raise ValueError
        return datetime.fromisoformat(stamp), run_id
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is not TIME|RUN_ID") from None


class AuditRow(BaseModel):
    run: RunRow
    chain: ChainReport


class AuditPage(BaseModel):
    rows: list[AuditRow]
    next_cursor: str | None


def audit_page(store: TraceStore, filters: RunFilters, *, cursor: str | None = None, limit: int = 50) -> AuditPage:
    """A page of runs, each with its hash chain re-walked: verified, or the first broken step."""
    page = runs_page(store, filters, cursor=cursor, limit=limit)
    return AuditPage(rows=[AuditRow(run=r, chain=verify_run(store, r.id)) for r in page.rows],
                     next_cursor=page.next_cursor)


# -- a run -----------------------------------------------------------------------------------


class GraphNode(BaseModel):
    name: str
    x: float
    y: float
    runs: int = 0
    failures: int = 0


class GraphEdge(BaseModel):
    source: str
    target: str
    conditional: bool
    path: str  # an SVG path


class GraphView(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    width: float
    height: float


_NODE_W, _NODE_H, _GAP_X, _GAP_Y = 130.0, 44.0, 26.0, 46.0


def graph_view(run: RunRecord, steps: list[StepRecord]) -> GraphView | None:
    """The workflow's graph as LangGraph drew it when the run was recorded, laid out in layers
    (longest path from the start, back edges ignored), each node with its executions and
    failures in this run."""
    info = run.labels.get(GRAPH_LABEL)
    if not isinstance(info, dict) or not info.get("nodes"):
        return None
    names: list[str] = list(info["nodes"])
    edges = [(str(e[0]), str(e[1]), bool(e[2]) if len(e) > 2 else False) for e in info.get("edges", [])]
    layer = _layers(names, edges)
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(layer[name], []).append(name)
    widest = max(len(r) for r in rows.values())
    width = widest * (_NODE_W + _GAP_X) + _GAP_X
    ran = Counter(s.node for s in steps)
    failed = Counter(s.node for s in steps if s.error)
    places: dict[str, GraphNode] = {}
    for depth, members in sorted(rows.items()):
        offset = (width - len(members) * (_NODE_W + _GAP_X) + _GAP_X) / 2
        for i, name in enumerate(members):
            places[name] = GraphNode(
                name=name, x=offset + i * (_NODE_W + _GAP_X), y=_GAP_Y / 2 + depth * (_NODE_H + _GAP_Y),
                runs=ran.get(name, 0), failures=failed.get(name, 0),
            )
    drawn = [GraphEdge(source=a, target=b, conditional=c, path=_edge_path(places[a], places[b]))
             for a, b, c in edges if a in places and b in places]
    height = (max(layer.values()) + 1) * (_NODE_H + _GAP_Y)
    return GraphView(nodes=list(places.values()), edges=drawn, width=width, height=height)


def _layers(names: list[str], edges: list[tuple[str, str, bool]]) -> dict[str, int]:
    """Longest-path layering over the graph with its back edges (cycles) removed."""
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b, _ in edges:
        if a in succ and b in succ:
            succ[a].append(b)
    state: dict[str, int] = {}  # 1 visiting, 2 done
    forward: dict[str, list[str]] = {n: [] for n in names}

    def visit(node: str) -> None:
        state[node] = 1
        for nxt in succ[node]:
            if state.get(nxt) == 1:
                continue  # a back edge: a loop in the workflow
            forward[node].append(nxt)
            if nxt not in state:
                visit(nxt)
        state[node] = 2

    roots = [n for n in names if n == "__start__"] + [n for n in names if n != "__start__"]
    for node in roots:
        if node not in state:
            visit(node)
    depth = dict.fromkeys(names, 0)
    for node in _topological(names, forward):
        for nxt in forward[node]:
            depth[nxt] = max(depth[nxt], depth[node] + 1)
    return depth


def _topological(names: list[str], forward: dict[str, list[str]]) -> list[str]:
    incoming = Counter(b for targets in forward.values() for b in targets)
    ready = [n for n in names if incoming[n] == 0]
    order = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for nxt in forward[node]:
            incoming[nxt] -= 1
            if incoming[nxt] == 0:
                ready.append(nxt)
    return order


def _edge_path(a: GraphNode, b: GraphNode) -> str:
    x1, y1 = a.x + _NODE_W / 2, a.y + _NODE_H
    x2, y2 = b.x + _NODE_W / 2, b.y
    if b.y <= a.y:  # a loop back: leave from the side and come back round
        x1, y1, x2, y2 = a.x + _NODE_W, a.y + _NODE_H / 2, b.x + _NODE_W, b.y + _NODE_H / 2
        bend = max(x1, x2) + 40
        return f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
    mid = (y1 + y2) / 2
    return f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"


class TimelineStep(BaseModel):
    index: int
    node: str
    agent: str | None
    kind: str
    invocation: int
    offset_ms: float
    duration_ms: float
    tokens: int
    models: list[str]
    tool_calls: list[str]
    error: str | None
    summary: str


class TimelineRow(BaseModel):
    """One row of the timeline: a step, or the steps of one parallel superstep drawn as one."""

    steps: list[TimelineStep]
    parallel: bool


def timeline(steps: list[StepRecord]) -> tuple[list[TimelineRow], float]:
    """Rows in step order (steps resumed from the same checkpoint are one parallel row), and
    the run's span in milliseconds, to scale the bars."""
    if not steps:
        return [], 0.0
    start = min(s.started_at for s in steps)
    end = max(s.ended_at for s in steps)
    rows: list[TimelineRow] = []
    for step in steps:
        item = TimelineStep(
            index=step.index or 0, node=step.node, agent=step.agent, kind=step.kind,
            invocation=step.invocation,
            offset_ms=(step.started_at - start).total_seconds() * 1000,
            duration_ms=(step.ended_at - step.started_at).total_seconds() * 1000,
            tokens=sum(c.prompt_tokens + c.completion_tokens for c in step.model_calls),
            models=sorted({c.model for c in step.model_calls}),
            tool_calls=[c.name for c in step.tool_calls],
            error=step.error,
            summary=excerpt(step.output, 140) if step.output is not None else (step.error or ""),
        )
        previous = rows[-1] if rows else None
        same_superstep = (
            previous is not None and step.checkpoint_before is not None
            and step.checkpoint_before == _checkpoint_of(steps, previous.steps[0].index)
        )
        if same_superstep and previous is not None:
            previous.steps.append(item)
            previous.parallel = True
        else:
            rows.append(TimelineRow(steps=[item], parallel=False))
    return rows, max((end - start).total_seconds() * 1000, 1.0)


def _checkpoint_of(steps: list[StepRecord], index: int) -> str | None:
    return steps[index].checkpoint_before if 0 <= index < len(steps) else None


class RunPage(BaseModel):
    run: RunRecord
    row: RunRow
    labels: dict[str, Any]
    graph: GraphView | None
    timeline: list[TimelineRow]
    span_ms: float
    chain: ChainReport
    replays: int
    verdicts: list[VerdictRecord]
    debug_sessions: list[dict[str, Any]]
    attributions: list[AttributionView]
    truth: dict[str, Any]


def run_page(store: TraceStore, run_ref: str) -> RunPage:
    run = store.get_run(run_ref)
    steps = store.steps(run.id, histories=False)
    rows, span = timeline(steps)
    labels = {k: v for k, v in run.labels.items() if k not in _HIDDEN_LABELS}
    return RunPage(
        run=run, row=run_row(run), labels=labels, graph=graph_view(run, steps), timeline=rows,
        span_ms=span, chain=verify_run(store, run.id),
        replays=len(store.list_runs(parent=run.id, limit=None)),
        verdicts=store.verdicts(run_id=run.id),
        debug_sessions=[s.model_dump(mode="json") for s in store.debug_sessions(run.id)],
        attributions=_attributions(store, run),
        truth=ground_truth(run),
    )


_TRUTH = ("mistake_agent", "mistake_step", "mistake_reason", "ground_truth")


def ground_truth(run: RunRecord) -> dict[str, Any]:
    """An imported log's annotation (who made the decisive mistake, at which step, why)."""
    return {k: run.labels[k] for k in _TRUTH if run.labels.get(k) is not None}


# -- a step ----------------------------------------------------------------------------------


class ChatLine(BaseModel):
    role: str
    name: str | None = None
    content: str
    tool_calls: list[str] = Field(default_factory=list)


class ActivationPlot(BaseModel):
    """The L2 norm of a captured activation at each position, as an SVG polyline."""

    call: int
    point: str
    positions: int
    low: float
    high: float
    points: str


class StepView(BaseModel):
    run_id: str
    step: StepRecord
    conversation: list[ChatLine]
    output: ChatLine | None
    model_calls: list[ModelCallRecord]
    tool_calls: list[ToolCallRecord]
    state_diff: list[tuple[str, str]]  # (marker, line): " " same, "-" before only, "+" after only
    has_state: bool
    activations: list[ActivationPlot]
    edit_templates: dict[str, str]  # edit kind -> a YAML edit to start from


def step_view(store: TraceStore, run_ref: str, index: int) -> StepView:
    run_id = store.resolve_run_id(run_ref)
    found = store.steps(run_id, indices=[index])
    if not found:
        raise ValueError(f"run {run_id[:12]} has no step {index} (it has {store.get_run(run_id).step_count})")
    step = found[0]
    before = state_at(store, run_id, step.checkpoint_before)
    after = state_at(store, run_id, step.checkpoint_after)
    return StepView(
        run_id=run_id, step=step,
        conversation=[_chat_line(m) for m in (step.input or [])],
        output=_chat_line(step.output) if step.output is not None else None,
        model_calls=step.model_calls, tool_calls=step.tool_calls,
        state_diff=_state_diff(before, after), has_state=before is not None or after is not None,
        activations=_activation_plots(store.step_activations(run_id, index)),
        edit_templates=edit_templates(step, before),
    )


def _chat_line(message: Any) -> ChatLine:
    if isinstance(message, dict):
        content = message.get("content", "")
        calls = message.get("tool_calls") or []
        return ChatLine(
            role=str(message.get("role") or message.get("type") or "message"),
            name=message.get("name"),
            content=content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str),
            tool_calls=[_call_text(c) for c in calls],
        )
    if isinstance(message, str):
        return ChatLine(role="output", content=message)
    return ChatLine(role="output", content=json.dumps(message, ensure_ascii=False, indent=1, default=str))


def _call_text(call: Any) -> str:
    if isinstance(call, dict):
        name = call.get("name") or (call.get("function") or {}).get("name", "?")
        args = call.get("args") or call.get("arguments") or (call.get("function") or {}).get("arguments", {})
        return f"{name}({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})"
    return str(call)


def _state_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, str]]:
    a = json.dumps(before or {}, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    b = json.dumps(after or {}, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    lines: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            same = a[i1:i2]
            if len(same) > 6:  # context: three lines either side of a change
                lines += [(" ", x) for x in same[:3]] + [("…", f"{len(same) - 6} unchanged lines")]
                lines += [(" ", x) for x in same[-3:]]
            else:
                lines += [(" ", x) for x in same]
        else:
            lines += [("-", x) for x in a[i1:i2]] + [("+", x) for x in b[j1:j2]]
    return lines


def _activation_plots(blobs: list[bytes | None]) -> list[ActivationPlot]:
    import numpy as np
    from safetensors.numpy import load

    plots = []
    for call, blob in enumerate(blobs):
        if blob is None:
            continue
        for point, tensor in sorted(load(blob).items()):
            values = np.asarray(tensor, dtype=np.float32)
            norms = np.linalg.norm(values.reshape(values.shape[0], -1), axis=1) if values.ndim > 1 else np.abs(values)
            low, high = float(norms.min()), float(norms.max())
            span = (high - low) or 1.0
            step = 200 / max(len(norms) - 1, 1)
            points = " ".join(f"{i * step:.1f},{38 - 36 * (v - low) / span:.1f}" for i, v in enumerate(norms))
            plots.append(ActivationPlot(call=call, point=point, positions=len(norms), low=low, high=high, points=points))
    return plots


def edit_templates(step: StepRecord, before: dict[str, Any] | None) -> dict[str, str]:
    """A starting edit (YAML, as an edit file would hold it) for each kind that applies to the
    step, filled with what the step holds now."""
    import yaml

    def dump(edit: dict[str, Any]) -> str:
        return yaml.safe_dump(edit, sort_keys=False, allow_unicode=True, width=100)

    text = _chat_line(step.output).content if step.output is not None else ""
    templates = {
        "message": dump({"kind": "message", "mode": "replace", "text": text}),
        "instruction": dump({"kind": "instruction", "text": "Check your numbers against the tool results."}),
        "state": dump({"kind": "state", "patch": [{"op": "replace", "path": f"/{next(iter(before or {'messages': 0}))}", "value": None}]}),
    }
    if before and "plan" in before:
        templates["plan"] = dump({"kind": "plan", "plan": before["plan"]})
    if step.kind == "router" or (isinstance(step.delta, dict) and "route" in step.delta):
        templates["route"] = dump({"kind": "route", "next": "", "instruction": ""})
    for call in step.tool_calls:
        templates.setdefault("tool", dump({"kind": "tool", "tool": call.name, "result": call.result}))
    if any(c.backend == "local" for c in step.model_calls):
        templates["activation"] = dump({
            "kind": "activation", "layers": [0], "component": "residual", "positions": "all",
            "operation": "scale", "strength": 0.0,
        })
    return templates


# -- the fork tree and comparisons -----------------------------------------------------------


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


# -- imported logs ---------------------------------------------------------------------------


class AttributionView(BaseModel):
    """One method's stored prediction for an imported log, marked against its annotation by
    the library's own scoring rule."""

    method: str
    model: str | None
    agent: str | None
    step: int | None
    reason: str | None
    agent_ok: bool | None  # None: the log has no annotation to compare with
    step_ok: bool | None


class ImportRow(BaseModel):
    run: RunRow
    truth: dict[str, Any]
    attributions: list[AttributionView]


class ImportScore(BaseModel):
    """One method's accuracy on one workflow's logs that it attributed (by the library's
    scoring rule), and how many of that workflow's logs it has not attributed yet."""

    workflow: str
    score: AttributionScore
    not_attributed: int


class ImportsPage(BaseModel):
    rows: list[ImportRow]
    scores: list[ImportScore]  # per workflow and method, over every imported log of the filter
    next_cursor: str | None


def imports_page(store: TraceStore, *, workflow: str | None = None, source: str = "whowhen",
                 cursor: str | None = None, limit: int = 100) -> ImportsPage:
    page = runs_page(store, RunFilters(source=source, workflow=workflow), cursor=cursor, limit=limit)
    rows = []
    for row in page.rows:
        run = store.get_run(row.id)
        rows.append(ImportRow(run=row, truth=ground_truth(run), attributions=_attributions(store, run)))
    by_workflow: dict[str, list[RunRecord]] = {}
    for run in store.list_runs(source=source, workflow=workflow, limit=None):
        by_workflow.setdefault(run.workflow, []).append(run)
    scores = []
    for name, runs in sorted(by_workflow.items()):
        for method in METHODS:
            done = [r.id for r in runs if method in (r.labels.get("attribution") or {})]
            if done:
                scores.append(ImportScore(workflow=name, score=score_attributions(store, done, method),
                                          not_attributed=len(runs) - len(done)))
    return ImportsPage(rows=rows, scores=scores, next_cursor=page.next_cursor)


def _attributions(store: TraceStore, run: RunRecord) -> list[AttributionView]:
    views = []
    for method, prediction in (run.labels.get("attribution") or {}).items():
        if method not in METHODS or not isinstance(prediction, dict):
            continue
        score = score_attributions(store, [run.id], method)
        labelled = score.runs > 0
        views.append(AttributionView(
            method=method, model=prediction.get("model"), agent=prediction.get("agent"),
            step=prediction.get("step"), reason=prediction.get("reason"),
            agent_ok=bool(score.agent_correct) if labelled else None,
            step_ok=bool(score.step_correct) if score.step_runs else None,
        ))
    return views
