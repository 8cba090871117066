"""The failure cause of an imported run (which agent, at which step), stated by its log or by a
person's labels file, kept in the run's labels under the keys `attribute` scores against:
`mistake_agent`, `mistake_step` (an index of the run's steps), `mistake_reason` and
`ground_truth`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from counterfact._errors import validation_message
from counterfact._files import load_yaml
from counterfact.formats._base import FormatError
from counterfact.store import StepRecord, TraceStore

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


class TruthLabel(BaseModel):
    """What a person says went wrong in one run: the agent, and the step where it did."""

    model_config = ConfigDict(extra="forbid")

    mistake_agent: str
    mistake_step: int | None = None
    mistake_reason: str | None = None
    ground_truth: Any = None


LabelsFile = RootModel[dict[str, TruthLabel]]  # by a file's name as imported, or a run id (or a unique prefix)


def load_labels(path: Path) -> dict[str, TruthLabel]:
    """A labels file (YAML or JSON), checked whole before anything is imported."""
    data = load_yaml(path, "labels", FormatError)
    try:
        return LabelsFile.model_validate(data).root
    except ValidationError as exc:
        raise FormatError(f"{path}: not a labels file ({validation_message(exc, data)}); expected FILE-or-RUN: "
                          "{mistake_agent, mistake_step, mistake_reason}; nothing was imported") from None


def apply_labels(store: TraceStore, run_ids: Sequence[str], given: dict[str, TruthLabel], origin: str) -> list[str]:
    """Store each label with the imported runs it names (by file name or run id), and `origin`
    (the labels file) as where the truth came from; returns one note per label that names none
    of them, or does not fit its run."""
    notes: list[str] = []
    runs = [store.get_run(run_id) for run_id in run_ids]
    for key, label in given.items():
        named = [r for r in runs if r.labels.get("source_file") == key or r.id == key or (len(key) >= 4 and r.id.startswith(key))]
        if not named:
            notes.append(f"labels {key!r}: names no run of this import; not stored")
        for run in named:
            fitted: list[str] = []
            truth = file_labels(label.model_dump(exclude_none=True), store.steps(run.id), fitted)
            store.set_labels(run.id, {**run.labels, **truth, "truth_from": origin})
            notes += [f"labels {key!r} on run {run.id}: {note}" for note in fitted]
    return notes
