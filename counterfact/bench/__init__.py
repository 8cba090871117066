"""Benchmarks of the debugger against known truth: faults put into live runs of app shapes
(`run_fault_bench`), each fault kind a plug-in (`register_fault`)."""

from counterfact.bench._faults import (
    BASELINES,
    JUDGE_BASELINE,
    SHAPES,
    AppCase,
    CaseScore,
    ExampleShape,
    FaultBench,
    Rates,
    Shape,
    Truth,
    WorkflowShape,
    baseline_steps,
    bench_model,
    rates,
    run_fault_bench,
    shape_named,
    step_of,
)
from counterfact.bench._inject import (
    FaultEvent,
    FaultyModel,
    ToolFault,
    faulty_tool,
)
from counterfact.bench._kinds import (
    Faulted,
    FaultKind,
    fault_named,
    fault_names,
    register_fault,
)

__all__ = [
    "BASELINES",
    "JUDGE_BASELINE",
    "SHAPES",
    "AppCase",
    "CaseScore",
    "ExampleShape",
    "FaultBench",
    "FaultEvent",
    "FaultKind",
    "Faulted",
    "FaultyModel",
    "Rates",
    "Shape",
    "ToolFault",
    "Truth",
    "WorkflowShape",
    "baseline_steps",
    "bench_model",
    "rates",
    "fault_named",
    "fault_names",
    "faulty_tool",
    "register_fault",
    "run_fault_bench",
    "shape_named",
    "step_of",
]
