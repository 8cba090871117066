"""Hypotheses from a model: it reads a segment of the run (steps with indices, never the
expected answer) and names the step and the reason, its output held to a JSON schema while it
decodes, so a malformed hypothesis cannot happen on a local model or an endpoint that supports
structured output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from counterfact.agents import (
    ChatMessage,
    GenerationSettings,
    UnreadableAnswer,
    ask_readable,
)
from counterfact.interventions._prompts import prompt
from counterfact.interventions._session import final_answer, split_segments
from counterfact.interventions.strategies._base import (
    DebugContext,
    Outcome,
    Proposal,
    Skipped,
)
from counterfact.store import excerpt, output_text

RETRY = (
    'I could not read that answer. Reply with only a JSON object: {"step": one of the '
    'step numbers shown, "reason": what went wrong, in one sentence}.'
)


class LlmStrategy:
    name = "llm"

    def propose(self, context: DebugContext) -> Iterator[Outcome]:
        model = context.hypothesis_model()
        steps = context.steps
        for segment in split_segments(steps):
            shown = steps[segment.first_step : segment.last_step + 1]
            lines = "\n".join(f"[{s.index}] {s.agent or s.node}: {excerpt(output_text(s.output), 240)}" for s in shown)
            question = prompt("debug_hypotheses").substitute(
                question=context.replayer.target.question, steps=lines, answer=repr(final_answer(steps))
            )
            schema = hypothesis_schema([s.index or 0 for s in shown])
            try:
                step, reason = ask_readable(
                    model, [ChatMessage(role="user", content=question)],
                    # room for the schema's longest answer: a cut-off reply would be malformed JSON
                    GenerationSettings(max_tokens=224, temperature=0.0, json_schema=schema),
                    lambda text: read_hypothesis(text, schema),
                    RETRY,
                )
            except UnreadableAnswer as exc:
                yield Skipped(note=f"segment {segment.index}: the hypothesis model's answer is not a hypothesis ({exc})")
                continue
            note = f"Someone checking your last answer found this mistake: {reason}. Write your answer again without it."
            yield Proposal(step=step, reason=reason, fixes=context.fixes(step, [note], self.name))


def hypothesis_schema(steps: list[int]) -> dict[str, Any]:
    """The JSON schema a hypothesis model's answer is held to: one of the shown steps, and why."""
    return {
        "type": "object",
        "properties": {
            "step": {"type": "integer", "enum": steps},
            "reason": {"type": "string", "minLength": 8, "maxLength": 160},
        },
        "required": ["step", "reason"],
        "additionalProperties": False,
    }


def read_hypothesis(text: str, schema: dict[str, Any]) -> tuple[int, str]:
    """(step, reason) from a hypothesis model's JSON answer; `UnreadableAnswer` says what is wrong (only
    a model that ignores the schema, such as a remote one without structured output, errs)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise UnreadableAnswer(f"not JSON: {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise UnreadableAnswer("not a JSON object")
    step, reason = data.get("step"), data.get("reason")
    if not isinstance(step, int) or step not in schema["properties"]["step"]["enum"]:
        raise UnreadableAnswer(f"step {step!r} is not one of the steps shown")
    if not isinstance(reason, str) or not reason.strip():
        raise UnreadableAnswer("no reason")
    return step, " ".join(reason.split())
