"""Interventions: edit a recorded run at one step, replay it, and verify against a control arm."""

from counterfact.interventions._applied import Evidence, missing_evidence
from counterfact.interventions._attribute import (
    METHODS,
    AttributeUnit,
    Attribution,
    AttributionScore,
    Method,
    attribute,
    score_attributions,
    score_predictions,
)
from counterfact.interventions._compare import (
    ReplayGroup,
    ReplayTree,
    StepDiff,
    diff_runs,
    diff_table,
    replay_tree,
    run_tree,
)
from counterfact.interventions._debug import Debugger
from counterfact.interventions._evidence import (
    Blame,
    StepEvidence,
    blame,
    gather_evidence,
)
from counterfact.interventions._fixes import Fix, leaked, thinking_fixes
from counterfact.interventions._grounding import Suspect, find_suspects
from counterfact.interventions._records import (
    DebugLog,
    DebugSessionRecord,
    DebugSpend,
    HypothesisRecord,
)
from counterfact.interventions._replay import (
    Replayer,
    ReplayerSpec,
    ReplayPlan,
    ReplayResult,
    parse_step,
    resume_replay,
)
from counterfact.interventions._report import (
    describe_edit,
    render_html,
    report_table,
    write_html,
)
from counterfact.interventions._resume import (
    Resumed,
    ResumedReplay,
    interrupted_runs,
    resume_runs,
)
from counterfact.interventions._session import (
    Budget,
    DebugReport,
    HypothesisView,
    Segment,
    final_answer,
    session_report,
    split_segments,
)
from counterfact.interventions._specs import (
    Edit,
    Intervention,
    load_intervention,
    parse_intervention,
)
from counterfact.interventions._stats import (
    ArmComparison,
    compare,
    newcombe,
    newcombe_paired,
    wilson,
)
from counterfact.interventions._units import ReplayUnit
from counterfact.interventions._verify import (
    Progress,
    VerdictReport,
    decide,
    validating_looks,
    verify,
)
from counterfact.interventions.edits import (
    EditKind,
    InterventionError,
    StepRef,
    edit_kind,
    edit_kind_names,
    register_edit_kind,
)
from counterfact.interventions.edits.activation import (
    ActivationIntervention,
    CapturedVector,
    ContrastiveVector,
    VectorSource,
)
from counterfact.interventions.edits.handoff import HandoffEdit
from counterfact.interventions.edits.instruction import InstructionEdit
from counterfact.interventions.edits.message import MessageEdit
from counterfact.interventions.edits.plan import PlanEdit
from counterfact.interventions.edits.prefix import PrefixEdit
from counterfact.interventions.edits.response import ResponseEdit
from counterfact.interventions.edits.resume import ResumeEdit
from counterfact.interventions.edits.route import RouteEdit
from counterfact.interventions.edits.sample import SampleEdit
from counterfact.interventions.edits.state import StateEdit
from counterfact.interventions.edits.tool import ToolEdit
from counterfact.interventions.strategies import (
    STRATEGIES,
    DebugContext,
    Proposal,
    Skipped,
    Strategy,
    hypothesis_schema,
    read_hypothesis,
    register_strategy,
    strategies_from,
    strategy_names,
)

__all__ = [
    "DebugSessionRecord",
    "DebugSpend",
    "HypothesisRecord",
    "describe_edit",
    "DebugLog",
    "METHODS",
    "Method",
    "Attribution",
    "AttributionScore",
    "attribute",
    "score_attributions",
    "score_predictions",
    "Blame",
    "StepEvidence",
    "blame",
    "gather_evidence",
    "Budget",
    "DebugReport",
    "Debugger",
    "HypothesisView",
    "Segment",
    "hypothesis_schema",
    "leaked",
    "read_hypothesis",
    "Strategy",
    "DebugContext",
    "Proposal",
    "Skipped",
    "register_strategy",
    "strategy_names",
    "final_answer",
    "STRATEGIES",
    "Fix",
    "thinking_fixes",
    "Suspect",
    "find_suspects",
    "report_table",
    "session_report",
    "split_segments",
    "strategies_from",
    "render_html",
    "write_html",
    "ActivationIntervention",
    "ArmComparison",
    "CapturedVector",
    "ContrastiveVector",
    "Edit",
    "EditKind",
    "edit_kind",
    "edit_kind_names",
    "register_edit_kind",
    "Intervention",
    "InterventionError",
    "MessageEdit",
    "PlanEdit",
    "HandoffEdit",
    "InstructionEdit",
    "PrefixEdit",
    "SampleEdit",
    "Evidence",
    "missing_evidence",
    "ReplayPlan",
    "ReplayResult",
    "Replayer",
    "resume_replay",
    "resume_runs",
    "interrupted_runs",
    "Resumed",
    "ResumedReplay",
    "ResponseEdit",
    "ResumeEdit",
    "RouteEdit",
    "StateEdit",
    "StepDiff",
    "StepRef",
    "ToolEdit",
    "VectorSource",
    "Progress",
    "VerdictReport",
    "compare",
    "decide",
    "diff_runs",
    "diff_table",
    "load_intervention",
    "newcombe",
    "newcombe_paired",
    "parse_intervention",
    "parse_step",
    "ReplayGroup",
    "ReplayTree",
    "replay_tree",
    "run_tree",
    "validating_looks",
    "verify",
    "wilson",
    "ReplayUnit",
    "AttributeUnit",
    "ReplayerSpec",
]
