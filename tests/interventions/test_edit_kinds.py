"""Edit kinds as plug-ins: a kind registered from outside the package parses in an
intervention, compiles, replays, describes itself and offers a template through the registry
alone; the built-in kinds are exactly the twelve there were, each with its own description."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import yaml

from counterfact.graphs import record
from counterfact.interventions import (
    EditKind,
    Evidence,
    Intervention,
    InterventionError,
    Replayer,
    describe_edit,
    edit_kind,
    edit_kind_names,
    parse_intervention,
    register_edit_kind,
)
from counterfact.interventions.edits import CompileContext, EditSpec, StepPlan, _base
from counterfact.store import StepRecord, TraceStore
from counterfact.ui._step import edit_templates
from tests.interventions import apps


class DetourEdit(EditSpec):
    """Send the run from the step to another node."""

    kind: Literal["detour"] = "detour"
    to: str


def _compile(edit: DetourEdit, context: CompileContext, plan: StepPlan) -> None:
    if edit.to not in context.nodes:
        raise InterventionError(f"detour: no node {edit.to!r} after step {context.index}")
    plan.directives.route = edit.to
    plan.evidence.append(Evidence(kind="route", value=edit.to))


def _describe(edit: dict[str, Any], where: str) -> str:
    return f"detour to {edit['to']} at {where}"


def _template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"kind": "detour", "to": "reviewer"} if step.node == "worker" else None


DETOUR = types.ModuleType("detour", "A kind of edit defined outside counterfact.")
vars(DETOUR).update(SPEC=DetourEdit, ORDER=1000, compile_edit=_compile, describe=_describe, template=_template)

OLD_KINDS = (
    "message", "state", "plan", "route", "handoff", "response", "resume", "tool", "prefix", "prompt", "instruction",
    "sample", "activation",
)
# One real edit of each kind, at step 2.
EXAMPLES: dict[str, dict[str, Any]] = {
    "message": {"kind": "message", "mode": "regex", "pattern": "RESULT: \\d+", "text": "RESULT: 7"},
    "state": {"kind": "state", "patch": [{"op": "replace", "path": "/messages/1/content", "value": "FACTS: none"}]},
    "plan": {"kind": "plan", "plan": {"steps": [{"text": "look up", "done": False}]}},
    "route": {"kind": "route", "next": "solver", "instruction": "compute it"},
    "handoff": {"kind": "handoff", "to": None, "message": "go on"},
    "response": {"kind": "response", "call": 0, "text": "CALL calculator"},
    "resume": {"kind": "resume", "value": {"approved": True}},
    "tool": {"kind": "tool", "tool": "lookup", "result": "1000"},
    "prefix": {"kind": "prefix", "text": "FACTS:"},
    "prompt": {"kind": "prompt", "old": "Answer briefly.", "new": "Answer with a number."},
    "instruction": {"kind": "instruction", "text": "Check the sum."},
    "sample": {"kind": "sample", "temperature": 0.7, "seed": 3},
    "activation": {"kind": "activation", "layers": [1], "operation": "scale", "strength": 0.5},
}


@pytest.fixture
def detour() -> Iterator[EditKind]:
    yield register_edit_kind(DETOUR)  # type: ignore[arg-type]
    del _base._KINDS["detour"]
    _base.rebuild_holders()


@pytest.fixture
def local_store(tmp_path: Any) -> Iterator[TraceStore]:
    store = TraceStore.open(str(tmp_path / "apps.db"))
    yield store
    store.close()


def test_a_kind_registered_from_outside_parses_compiles_replays_describes_and_offers_a_template(
    local_store: TraceStore, detour: EditKind
) -> None:
    run_id = record(apps.pipeline, local_store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    assert [s.node for s in local_store.steps(run_id)] == ["planner", "worker"]  # 2+2 is not 5: no review

    intervention = parse_intervention({"kind": "detour", "to": "reviewer"})
    [edit] = intervention.edits
    assert isinstance(edit, DetourEdit) and edit_kind("detour") is DETOUR
    assert Intervention.model_validate(intervention.dump()) == intervention
    assert intervention.dump()["edits"] == [{"at": {"invocation": 0}, "kind": "detour", "to": "reviewer"}]

    replayer = Replayer(local_store, run_id)
    plan = replayer.compile(intervention, "worker#0")
    assert (plan.step, plan.directives.route, plan.evidence) == (1, "reviewer", [Evidence(kind="route", value="reviewer")])
    result = replayer.replay(plan, arm="treatment")
    assert result.applied, result.applied_detail
    assert [s.node for s in local_store.steps(result.run_id)] == ["planner", "worker", "reviewer"]
    with pytest.raises(InterventionError, match="detour: no node 'nowhere' after step 1"):
        replayer.compile(parse_intervention({"kind": "detour", "to": "nowhere"}), "worker#0")

    assert describe_edit({"kind": "detour", "at": {"step": 1}, "to": "reviewer"}) == "detour to reviewer at step 1"
    planner, worker = local_store.steps(run_id)
    assert yaml.safe_load(edit_templates(worker, None)["detour"]) == {"kind": "detour", "to": "reviewer"}
    assert "detour" not in edit_templates(planner, None)
    assert edit_kind_names()[-1] == "detour"


def test_an_unregistered_kind_is_refused_by_name() -> None:
    with pytest.raises(InterventionError, match="Input tag 'detour' .* expected tags: 'message', 'state', 'plan'"):
        parse_intervention({"kind": "detour", "to": "reviewer"})
    with pytest.raises(InterventionError, match="no edit kind 'detour'; choose among message, state, plan"):
        edit_kind("detour")
    with pytest.raises(TypeError, match="not an edit kind: it needs SPEC, ORDER, compile_edit"):
        register_edit_kind(object())  # type: ignore[arg-type]
    assert "detour" not in edit_kind_names()


def test_the_built_in_kinds_are_these_thirteen_and_each_says_itself() -> None:
    assert edit_kind_names() == OLD_KINDS
    assert sorted(EXAMPLES) == sorted(OLD_KINDS)
    said = {}
    for name, example in EXAMPLES.items():
        [edit] = parse_intervention({**example, "at": {"step": 2}}).dump()["edits"]
        said[name] = describe_edit(edit)
        assert "step 2" in said[name], (name, said[name])
    assert len(set(said.values())) == len(OLD_KINDS), said  # no kind falls back on another's words
    assert said["route"] == "route to solver at step 2: 'compute it'"
    [bare] = parse_intervention({"kind": "route", "next": "solver", "at": {"step": 2}}).dump()["edits"]
    assert describe_edit(bare) == "route to solver at step 2"  # no instruction: nothing quoted
    assert said["handoff"] == "the handoff at step 2 goes to no one (the agent keeps control) with the message 'go on'"
    [calling] = parse_intervention({"kind": "response", "at": {"step": 2}, "call": 1, "text": "",
                                    "tool_calls": [{"name": "transfer_to_math_expert", "args": {}}]}).dump()["edits"]
    assert describe_edit(calling) == "the model at step 2 answers '' and calls transfer_to_math_expert({})"


def test_the_templates_a_step_offers_are_edits_that_parse(local_store: TraceStore) -> None:
    run_id = record(apps.pipeline, local_store, check=apps.answer_is_5).invoke({"messages": [("user", "go")]}).run_id
    worker = local_store.steps(run_id)[1]
    templates = edit_templates(worker, {"messages": [], "answer": ""})
    assert list(templates) == ["message", "state", "instruction"]  # in the kinds' order; no tool, route or model here
    assert yaml.safe_load(templates["message"]) == {"kind": "message", "mode": "replace", "text": "the sum is 4"}
    for text in templates.values():
        parse_intervention(yaml.safe_load(text))
