"""The point of no return: replays from a step with fresh samples (bisection over steps) find the
last step from which the run can still succeed; a successful sample's output at that step is
the fix."""

from __future__ import annotations

from collections.abc import Iterator

from counterfact.interventions._fixes import Fix, takes_temperature
from counterfact.interventions._specs import Intervention
from counterfact.interventions.edits import StepRef
from counterfact.interventions.edits.message import MessageEdit
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import output_text


class ResampleStrategy:
    name = "resample"

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        n = len(context.steps)
        count = max(1, context.samples)
        if not takes_temperature(context.replayer, context.steps):
            yield Skipped(note="the run is deterministic: none of its model calls takes a sampling "
                               "temperature, so fresh samples would only repeat it")
            return
        probes: dict[int, list[tuple[str, bool]]] = {}

        def rate(step: int) -> float:
            if step not in probes:
                probes[step] = context.sample_from(step, count)
            return sum(ok for _, ok in probes[step]) / count

        if not context.afford(count) or rate(0) == 0.0:
            yield Skipped(note="budget exhausted" if 0 not in probes
                          else f"no fresh sample from step 0 succeeds ({count} tried)")
            return
        low, high = 0, n  # rate(low) > 0; from `high` on, assume the failure is certain
        while high - low > 1 and context.afford(count):
            mid = (low + high) // 2
            if rate(mid) > 0:
                low = mid
            else:
                high = mid
        winner = next(r for r, ok in probes[low] if ok)
        fixed = context.store.steps(winner)[low]
        summary = ", ".join(f"step {s}: {sum(ok for _, ok in v)}/{len(v)}" for s, v in sorted(probes.items()))
        reason = (
            f"point of no return: fresh samples from step {low} still succeed, from step {high} "
            f"they do not ({summary})"
        )
        edit = MessageEdit(at=StepRef(step=low), text=output_text(fixed.output))
        fix = Fix(label="message from a sample", strategy=self.name, source="agent",
                  intervention=Intervention(edits=[edit], note=f"resample {winner}").dump())
        yield Proposal(step=low, reason=reason, fixes=[fix], evidence={"sample": winner})
