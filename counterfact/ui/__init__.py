"""`counterfact ui`: a local web viewer over the trace store, and the JSON API it is built on."""

from counterfact.ui._app import TOKEN_HEADER, create_app, is_loopback
from counterfact.ui._jobs import DebugRequest, Job, JobEvent, Jobs, ReplayRequest
from counterfact.ui._serve import check_bindable, serve
from counterfact.ui._views import (
    CompareRow,
    GraphView,
    RunFilters,
    RunPage,
    RunRow,
    RunsPage,
    StepView,
    TimelineRow,
    TreeNode,
    compare_runs,
    fork_tree,
    graph_view,
    run_page,
    runs_page,
    step_view,
    timeline,
)

__all__ = [
    "TOKEN_HEADER",
    "CompareRow",
    "DebugRequest",
    "GraphView",
    "Job",
    "JobEvent",
    "Jobs",
    "ReplayRequest",
    "RunFilters",
    "RunPage",
    "RunRow",
    "RunsPage",
    "StepView",
    "TimelineRow",
    "TreeNode",
    "check_bindable",
    "compare_runs",
    "create_app",
    "fork_tree",
    "graph_view",
    "is_loopback",
    "run_page",
    "runs_page",
    "serve",
    "step_view",
    "timeline",
]
