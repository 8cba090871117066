"""Grounding hypotheses: the first steps that claim what nothing before them supports (a number
no task text, tool result or earlier message gives) or went on from a failed tool call. The
agent is told what was unsupported and which numbers were given."""

from __future__ import annotations

from collections.abc import Iterator

from counterfact.interventions._grounding import find_suspects
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)


class GroundedStrategy:
    name = "grounded"

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        suspects = find_suspects(context.steps, context.replayer.target.question)
        if not suspects:
            yield Skipped(note="every number the steps state is supported and no tool call failed")
            return
        for suspect in suspects[: context.max_hypotheses]:
            notes = []
            if suspect.failed_calls:
                notes.append(f"Your call {suspect.failed_calls[0]}. Call the tool again with a valid argument.")
            if suspect.unsupported:
                given = ", ".join(suspect.supported) or "none"
                notes.append(
                    f"Last time you wrote {', '.join(suspect.unsupported)}, but nothing in the task, the tool "
                    f"results or the conversation says so. Use only numbers given there ({given})."
                )
            yield Proposal(
                step=suspect.step, reason=suspect.reason, fixes=context.fixes(suspect.step, notes, self.name),
                evidence=suspect.model_dump(include={"unsupported", "failed_calls", "supported"}),
            )
