"""A run's workflow graph, laid out for drawing as SVG: LangGraph gives the nodes and edges,
the run gives how often each node ran and failed."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from counterfact.graphs import GRAPH_LABEL
from counterfact.store import RunRecord, StepRecord, step_handoffs


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
    handoffs: int = 0  # how often control was handed over along this edge in the run


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
    handed = Counter((e.source, target.strip()) for s in steps for e in step_handoffs(s) if not e.nested
                     for target in e.to.split(","))
    # a handoff by Command(graph=PARENT) is an edge LangGraph's drawing may not know of
    edges += [(a, b, True) for a, b in handed if (a, b) not in {(x, y) for x, y, _ in edges}]
    drawn = [GraphEdge(source=a, target=b, conditional=c, path=_edge_path(places[a], places[b]),
                       handoffs=handed.get((a, b), 0))
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
