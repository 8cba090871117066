"""Transplants: a successful run of the same task (given, or found by resampling the whole run)
lends its step outputs, one step at a time. Where a transplant repairs the run and the agent
runs on a local model, a follow-up patches its activations layer by layer to find the layers
that carry the repair."""

from __future__ import annotations

from collections.abc import Iterator

from counterfact.interventions._fixes import Fix
from counterfact.interventions._session import LAYER_SCAN
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.activation import (
    ActivationIntervention,
    CapturedVector,
    VectorSource,
)
from counterfact.interventions.edits.message import MessageEdit
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import output_text


class PatchStrategy:
    name = "patch"
    follow_up = LAYER_SCAN

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        reference = _reference(context)
        if reference is None:
            yield Skipped(note="no successful run of this task to patch from: give a reference run, "
                               "or a larger budget to find one")
            return
        theirs = {(s.node, s.invocation): s for s in context.store.steps(reference)}
        for step in context.steps:
            other = theirs.get((step.node, step.invocation))
            if other is None or output_text(other.output) == output_text(step.output) or not output_text(other.output):
                continue
            edit = MessageEdit(at=StepRef(step=step.index), text=output_text(other.output))
            fix = Fix(label="transplant", strategy=self.name, source="reference", reference=reference,
                      intervention=Intervention(edits=[edit], note=f"patch from {reference}").dump())
            yield Proposal(step=step.index or 0, fixes=[fix], reference=reference,
                           reason=f"transplanting step {step.index} ({step.node}) from successful run {reference[:12]}")

    def after_verification(self, context: DebugContext) -> Iterator[Outcome]:
        """For validated transplants on local-model steps: which layers carry the repair."""
        hypotheses = context.report().hypotheses
        layered = {h.step for h in hypotheses if h.is_layer_scan}
        for hypothesis in hypotheses:
            validated = next((f for f in hypothesis.fixes if f.verdict == "validated"), None)
            if validated is None or validated.label != "transplant" or hypothesis.step is None or hypothesis.step in layered:
                continue
            model = context.replayer.model_of(context.steps[hypothesis.step])
            geometry = getattr(model, "geometry", None)
            reference = validated.reference
            if model is None or not model.white_box or geometry is None or reference is None:
                continue
            fixes = []
            for layer in range(0, geometry.num_layers, max(1, geometry.num_layers // 6)):
                edit = ActivationIntervention(
                    at=StepRef(step=hypothesis.step), layers=[layer], positions="last", operation="set",
                    vector=VectorSource(captured=CapturedVector(run=reference, step=hypothesis.step)),
                )
                fixes.append(Fix(label=f"layer {layer}", strategy=LAYER_SCAN, source="reference", reference=reference,
                                 intervention=Intervention(edits=[edit], note=f"activation patch layer {layer}").dump()))
            yield Proposal(
                step=hypothesis.step, fixes=fixes, reference=reference, label=LAYER_SCAN,
                reason="which layers carry the repair: the successful run's residual stream at the last "
                       "prompt token, one layer at a time",
            )


def _reference(context: DebugContext) -> str | None:
    """A successful run of the same task: the one given, an unedited success in the store, or
    the first success among fresh samples of the whole run (as the budget allows)."""
    if context.reference:
        return context.store.resolve_run_id(context.reference)
    parent = context.replayer.parent
    same_input = context.replayer.target.same_input
    successes = context.store.list_runs(
        status="succeeded", workflow=parent.workflow, labels=same_input, limit=None,
    ) if same_input else []
    for run in successes:  # an unedited success: an original run or a resample
        if run.labels.get("arm") != "treatment":
            return run.id
    count = max(1, context.samples)
    if not context.afford(count):
        return None
    return next((r for r, ok in context.sample_from(0, count) if ok), None)
