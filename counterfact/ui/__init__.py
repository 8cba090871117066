"""`counterfact ui`: a local web viewer over the trace store, and the JSON API it is built on."""

from counterfact.ui._app import create_app
from counterfact.ui._forks import CompareRow, TreeNode, compare_runs, fork_tree
from counterfact.ui._graph import GraphView, graph_view
from counterfact.ui._jobs import DebugRequest, Job, JobEvent, Jobs, ReplayRequest
from counterfact.ui._lists import (
    AuditPage,
    ImportsPage,
    RunFilters,
    RunRow,
    RunsPage,
    audit_page,
    imports_page,
    runs_page,
)
from counterfact.ui._run import RunPage, TimelineRow, run_page, timeline
from counterfact.ui._security import TOKEN_HEADER, ViewerGuard, is_loopback
from counterfact.ui._serve import serve
from counterfact.ui._step import StepView, step_view
from counterfact.ui._suites import (
    SuiteRunNotFound,
    suite_compare_page,
)

__all__ = [
    "TOKEN_HEADER",
    "AuditPage",
    "CompareRow",
    "DebugRequest",
    "GraphView",
    "ImportsPage",
    "Job",
    "JobEvent",
    "Jobs",
    "ReplayRequest",
    "RunFilters",
    "RunPage",
    "RunRow",
    "RunsPage",
    "StepView",
    "SuiteRunNotFound",
    "TimelineRow",
    "TreeNode",
    "ViewerGuard",
    "audit_page",
    "compare_runs",
    "create_app",
    "fork_tree",
    "graph_view",
    "imports_page",
    "is_loopback",
    "run_page",
    "runs_page",
    "serve",
    "step_view",
    "suite_compare_page",
    "timeline",
]
