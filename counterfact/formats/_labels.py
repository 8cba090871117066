"""The failure cause an imported log states (which agent, at which step), kept in the run's
labels under the keys `attribute` scores against: `mistake_agent`, `mistake_step` (an index of
the run's steps), `mistake_reason` and `ground_truth`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from counterfact.store import StepRecord

TRUTH_KEYS = ("mistake_agent", "mistake_step", "mistake_reason", "ground_truth")


def agent_key(name: str) -> str:
    """A spelling-insensitive key: `Websurfer`, `web_surfer` and `WebSurfer` are one agent."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def file_labels(holder: dict[str, Any], steps: Sequence[StepRecord], notes: list[str]) -> dict[str, Any]:
    """The failure cause `holder` states, the agent spelled as in the run; what does not fit
    the run is kept as given and noted."""
    labels: dict[str, Any] = {}
    agent = holder.get("mistake_agent")
    if isinstance(agent, str):
        agents = {agent_key(s.agent): s.agent for s in steps if s.agent}
        labels["mistake_agent"] = agents.get(agent_key(agent), agent)
        if agent_key(agent) not in agents:
            notes.append(f"mistake_agent {agent!r} matches no agent of this run; kept as given")
    step = holder.get("mistake_step")
    if step is not None:
        index = step if isinstance(step, int) and not isinstance(step, bool) else (
            int(step) if isinstance(step, str) and step.strip().isdigit() else None)
        if index is not None and 0 <= index < len(steps):
            labels["mistake_step"] = index
        else:
            labels["mistake_step_raw"] = step
            notes.append(f"mistake_step {step!r} is not a step of this run (it has {len(steps)})")
    for key in ("mistake_reason", "ground_truth"):
        if key in holder:
            labels[key] = holder[key]
    return labels
