"""Interventions: edit a recorded run at one step, replay it, and verify against a control arm."""

from counterfact.interventions._compare import StepDiff, diff_runs, diff_table, run_tree
from counterfact.interventions._replay import ReplayPlan, Replayer, ReplayResult, parse_step
from counterfact.interventions._specs import (
    ActivationIntervention,
    CapturedVector,
    ContrastiveVector,
    Edit,
    Intervention,
    InterventionError,
    MessageEdit,
    PlanEdit,
    PrefixEdit,
    RouteEdit,
    StepRef,
    ToolEdit,
    VectorSource,
    load_intervention,
    parse_intervention,
)
from counterfact.interventions._stats import ArmComparison, compare, newcombe, wilson
from counterfact.interventions._verify import VerdictReport, decide, verify

__all__ = [
    "ActivationIntervention",
    "ArmComparison",
    "CapturedVector",
    "ContrastiveVector",
    "Edit",
    "Intervention",
    "InterventionError",
    "MessageEdit",
    "PlanEdit",
    "PrefixEdit",
    "ReplayPlan",
    "ReplayResult",
    "Replayer",
    "RouteEdit",
    "StepDiff",
    "StepRef",
    "ToolEdit",
    "VectorSource",
    "VerdictReport",
    "compare",
    "decide",
    "diff_runs",
    "diff_table",
    "load_intervention",
    "newcombe",
    "parse_intervention",
    "parse_step",
    "run_tree",
    "verify",
    "wilson",
]
