"""LangGraph graphs: the recorder for any graph, and the built-in workflows (builders, shared
state, YAML specs, task suites, the runner)."""

from pathlib import Path

from counterfact.graphs._builders import (
    group_chat,
    orchestrator,
    parse_plan,
    parse_route,
    pipeline,
)
from counterfact.graphs._nodes import agent_node, final_answer_in, run_agent
from counterfact.graphs._recorder import (
    CONFIG_LABEL,
    NODE_METADATA_KEY,
    RecordedGraph,
    RunConfig,
    RunResult,
    lost_database,
    record,
)
from counterfact.graphs._refs import (
    CHECK_LABEL,
    GRAPH_LABEL,
    Check,
    GraphInfo,
    check_label,
    find_ref,
    graph_info,
    import_ref,
    score_state,
)
from counterfact.graphs._routes import redirected, rerouted_choice
from counterfact.graphs._runner import (
    ModelPool,
    RunSummary,
    RunUnit,
    WorkflowRunner,
    rebuild,
    resume_run,
    run_suite,
    summary_rows,
)
from counterfact.graphs._spec import (
    AgentSpec,
    Topology,
    WorkflowError,
    WorkflowSpec,
    build_graph,
    load_workflow,
    parse_workflow,
)
from counterfact.graphs._state import (
    Plan,
    PlanStep,
    Route,
    WorkflowState,
    agent_message,
    initial_state,
)
from counterfact.graphs._suite_compare import (
    SUITE_RUN_LABEL,
    SuiteComparison,
    SuiteRun,
    TaskChange,
    TaskRun,
    compare_suite_runs,
    new_suite_run_id,
    suite_runs,
    tag_suite_run,
)
from counterfact.graphs._suite_from_runs import (
    RunsSuite,
    SkippedRun,
    suite_from_runs,
    task_from_run,
    write_suite,
)
from counterfact.graphs._suite_on_graph import (
    run_graph_suite,
)
from counterfact.graphs._target import (
    ExpectCheck,
    ReplayTarget,
    TargetError,
    graph_target,
    load_target,
    question_of,
    value_at,
    workflow_target,
)
from counterfact.graphs._tasks import (
    Checker,
    CheckerName,
    Milestone,
    Suite,
    SuiteError,
    Task,
    load_suite,
)
from counterfact.graphs._tools import task_tools

DATA = Path(__file__).parent / "data"
DEMO_WORKFLOW = DATA / "demo_workflow.yaml"
DEMO_SUITE = DATA / "demo_suite.yaml"

__all__ = [
    "redirected",
    "rerouted_choice",
    "Check",
    "graph_info",
    "CHECK_LABEL",
    "CONFIG_LABEL",
    "GRAPH_LABEL",
    "NODE_METADATA_KEY",
    "GraphInfo",
    "RecordedGraph",
    "RunConfig",
    "RunResult",
    "check_label",
    "find_ref",
    "import_ref",
    "lost_database",
    "record",
    "score_state",
    "ExpectCheck",
    "ReplayTarget",
    "TargetError",
    "graph_target",
    "load_target",
    "question_of",
    "value_at",
    "workflow_target",
    "DEMO_SUITE",
    "DEMO_WORKFLOW",
    "AgentSpec",
    "Checker",
    "CheckerName",
    "Milestone",
    "ModelPool",
    "Plan",
    "PlanStep",
    "Route",
    "RunSummary",
    "RunUnit",
    "Suite",
    "SuiteError",
    "Task",
    "Topology",
    "WorkflowError",
    "WorkflowRunner",
    "WorkflowSpec",
    "WorkflowState",
    "agent_message",
    "agent_node",
    "build_graph",
    "task_tools",
    "final_answer_in",
    "group_chat",
    "initial_state",
    "load_suite",
    "load_workflow",
    "orchestrator",
    "parse_workflow",
    "parse_plan",
    "parse_route",
    "pipeline",
    "rebuild",
    "resume_run",
    "run_agent",
    "run_suite",
    "summary_rows",
    "run_graph_suite",
    "SUITE_RUN_LABEL",
    "SuiteComparison",
    "SuiteRun",
    "TaskChange",
    "TaskRun",
    "compare_suite_runs",
    "new_suite_run_id",
    "suite_runs",
    "tag_suite_run",
    "RunsSuite",
    "SkippedRun",
    "suite_from_runs",
    "task_from_run",
    "write_suite",
]
