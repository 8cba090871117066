"""Where a recorded run's graph and check come from: import references found for a graph or a
check, the graph's structure and digest, and a check's verdict on a final state. A replay uses
them to rebuild what the run ran."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field

from counterfact.capture import digest_of
from counterfact.store import Outcome

GRAPH_LABEL = "graph"  # run label: how to rebuild the graph (GraphInfo)
CHECK_LABEL = "check"  # run label: how to score the final state (see `check_label`)

Check = Callable[[Any], Any]  # final state -> bool, a score in [0, 1], or an Outcome


class GraphInfo(BaseModel):
    """What a run keeps of its graph: where to import it from, and its structure."""

    ref: str | None = None  # "module:attribute" or "path/to/file.py:attribute"
    digest: str
    nodes: list[str] = Field(default_factory=list)
    edges: list[list[Any]] = Field(default_factory=list)  # [source, target, conditional]


def graph_info(graph: CompiledStateGraph, ref: str | None = None) -> GraphInfo:
    """The graph's nodes and edges (as LangGraph draws them) and their digest."""
    drawable = graph.get_graph()
    nodes = sorted(drawable.nodes)
    edges = sorted([e.source, e.target, bool(e.conditional)] for e in drawable.edges)
    return GraphInfo(ref=ref, digest=digest_of({"nodes": nodes, "edges": edges}), nodes=nodes, edges=edges)


def find_ref(graph: Any) -> str | None:
    """An import reference for `graph`: a module-level name bound to it in a loaded module
    (its nodes' module first, then modules outside the installed packages, which are not
    scanned). `__main__` is named by its file path."""
    candidates: list[Any] = []
    nodes = getattr(graph, "nodes", None) or getattr(getattr(graph, "builder", None), "nodes", {})
    for spec in dict(nodes).values():
        func = getattr(getattr(spec, "runnable", None), "func", None)
        if (module := inspect.getmodule(func)) is not None:
            candidates.append(module)
    installed = tuple({sys.prefix, sys.base_prefix})  # the stdlib and site-packages: not the user's
    candidates.extend(
        m for m in list(sys.modules.values())
        if m is not None and m not in candidates and not str(getattr(m, "__file__", "") or "").startswith(installed)
    )
    for module in candidates:
        for name, value in list(vars(module).items()):
            if value is graph and not name.startswith("_"):
                return f"{_module_ref(module)}:{name}"
    return None


def _module_ref(module: Any) -> str:
    if module.__name__ == "__main__" and getattr(module, "__file__", None):
        return str(Path(module.__file__).resolve())
    return module.__name__


def import_ref(ref: str) -> Any:
    """The object at "module:attribute" or "path/to/file.py:attribute" (dots walk attributes)."""
    module_name, sep, attribute = ref.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ImportError(f"{ref!r} is not of the form module:attribute")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: the user's own modules
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ImportError(f"no file {path}")
        spec = importlib.util.spec_from_file_location(f"_counterfact_ref_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    value: Any = module
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def check_label(check: Check | str | None) -> dict[str, Any] | None:
    """How a check is stored with a run: an import reference, or a model's own description."""
    if check is None:
        return None
    if isinstance(check, str):
        return {"function": check}
    if isinstance(check, BaseModel):
        return check.model_dump(mode="json")
    module, name = getattr(check, "__module__", None), getattr(check, "__qualname__", "")
    if module and name and "<" not in name:
        return {"function": f"{_module_ref(sys.modules[module])}:{name}"}
    return None  # a lambda or closure: usable in this process only


def score_state(check: Check, state: Any) -> Outcome:
    """A check's verdict on a final state; a check that raises is a failed check."""
    try:
        value = check(state)
    except Exception as exc:
        return Outcome(success=False, score=0.0, detail=f"the check raised {type(exc).__name__}: {exc}")
    if isinstance(value, Outcome):
        return value
    if isinstance(value, bool) or value is None:
        return Outcome(success=bool(value), score=float(bool(value)))
    if isinstance(value, (int, float)):
        return Outcome(success=float(value) >= 1.0, score=float(value))
    return Outcome(success=False, detail=f"the check returned {type(value).__name__}, not a bool or a score")
