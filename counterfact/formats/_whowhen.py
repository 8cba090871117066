"""Importing Who&When failure logs (ICML 2025) as failed runs with their human annotations.

Each log becomes one run whose steps are the log's history entries in order, so the
annotated `mistake_step` indexes the run's steps exactly and a debugger's guess can be scored
against the label. Two formats exist: Hand-Crafted (Magentic-One, roles such as
`Orchestrator (-> WebSurfer)`) and Algorithm-Generated (CaptainAgent/AG2, role plus `name`).
Every file is validated before anything is written, and all runs of one call are written in
one transaction, so a bad file leaves the store untouched. Whatever could not be mapped is
listed in the report, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from counterfact.formats._base import (
    ExportReport,
    FormatError,
    ImportReport,
    Progress,
    Skipped,
    Sniff,
    expand_paths,
    register_format,
)
from counterfact.store import (
    RunRecord,
    StepKind,
    StepRecord,
    StoreError,
    TraceStore,
    utcnow,
)

SOURCE = "whowhen"
WORKFLOWS = {
    "hand-crafted": "whowhen/hand-crafted",
    "algorithm-generated": "whowhen/algorithm-generated",
}
Format = Literal["hand-crafted", "algorithm-generated"]

_ORCHESTRATOR = "Orchestrator"
_ROUTE = re.compile(r"^Orchestrator \(-> (?P<to>[A-Za-z_][\w\-]*)\)$")
_WORKER = re.compile(r"^[A-Za-z_][\w\-]*$")
_NEXT_SPEAKER = re.compile(r"^Next speaker (?P<to>[A-Za-z_][\w\-]*)\s*$")
# Orchestrator thoughts that only announce a control-flow event.
_EVENTS = {
    "Stalled.... Replanning...": "replan",
    "Request satisfied.": "request_satisfied",
    "Replan counter exceeded... Terminating.": "terminate",
}
# Headings of a Magentic-One plan, in the order they appear, and the key each section gets.
_PLAN_SECTIONS = [
    ("We are working to address the following user request:", "request"),
    ("To answer this request we have assembled the following team:", "team"),
    ("Here is an initial fact sheet to consider:", "facts"),
    ("Here is the plan to follow as best as possible:", "plan"),
]
# Python warnings the logging captured inside messages: a `file.py:N: XWarning:` line and
# the indented source line after it.
_WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: .*\n(?:[ \t]+.*\n?)?", re.MULTILINE)


class Unmapped(BaseModel):
    """Something in a log the importer kept only partly, and why."""

    where: str  # "history[12]", "mistake_step", ...
    reason: str


class SkippedFile(BaseModel):
    """A file that was not imported, and why (already imported, duplicate in this call)."""

    file: str
    reason: str
    run_id: str | None = None


class WhoWhenReport(BaseModel):
    """What an import did: runs written, steps, and what could not be mapped or was skipped."""

    run_ids: list[str] = Field(default_factory=list)
    steps: int = 0
    unmapped: dict[str, list[Unmapped]] = Field(default_factory=dict)  # by file
    skipped: list[SkippedFile] = Field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.run_ids)


class _Parsed(BaseModel):
    """One validated log, ready to write."""

    file: str
    run: RunRecord
    steps: list[StepRecord]
    unmapped: list[Unmapped]


def import_whowhen(store: TraceStore, paths: Sequence[Path | str]) -> WhoWhenReport:
    """Import Who&When logs (files, or folders searched for *.json) into `store`.

    All files are parsed and validated first; one bad file raises `StoreError` naming it and
    the offending field, and nothing is written. Logs already in the store (same content, so
    same run id) are skipped and reported.
    """
    files = expand_paths(paths, (".json",))
    parsed = [_parse_file(f) for f in files]
    report = WhoWhenReport()
    existing = store.existing_run_ids([p.run.id for p in parsed])
    seen: dict[str, str] = {}
    todo: list[_Parsed] = []
    for p in parsed:
        if p.run.id in existing:
            report.skipped.append(
                SkippedFile(file=p.file, reason="already imported", run_id=p.run.id)
            )
        elif p.run.id in seen:
            report.skipped.append(
                SkippedFile(
                    file=p.file, reason=f"same content as {seen[p.run.id]}", run_id=p.run.id
                )
            )
        else:
            seen[p.run.id] = p.file
            todo.append(p)
    try:
        with store.begin() as conn:
            for p in todo:
                store.write_run(p.run, p.steps, conn)
    except IntegrityError:
        raise StoreError(
            "Who&When import collided with runs written meanwhile; nothing was imported, retry"
        ) from None
    for p in todo:
        report.run_ids.append(p.run.id)
        report.steps += len(p.steps)
        if p.unmapped:
            report.unmapped[p.file] = p.unmapped
    return report


def _fail(file: str, field: str, problem: str) -> FormatError:
    return FormatError(f"{file}: not a Who&When log: {field} {problem}; nothing was imported")


def _parse_file(path: Path) -> _Parsed:
    """Validate one log and map it to a run and its steps (no store access)."""
    file = f"{path.parent.name}/{path.name}"
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{file}: not valid JSON ({exc}); nothing was imported") from None
    if not isinstance(data, dict):
        raise _fail(file, "top level", f"is a {type(data).__name__}, expected an object")
    fmt: Format = "algorithm-generated" if "system_prompt" in data else "hand-crafted"
    _require(data, file, "history", list)
    for key in ("question", "mistake_agent", "mistake_reason"):
        _require(data, file, key, str)
    _require(data, file, "mistake_step", (str, int))
    for key, kind in [("ground_truth", str), ("question_ID", str), ("mistake_type", str)]:
        _optional(data, file, key, kind)
    _optional(data, file, "level", (str, int))
    if fmt == "algorithm-generated":
        _require(data, file, "system_prompt", dict)
        _optional(data, file, "is_correct", bool)
        _optional(data, file, "labels", (str, list, dict))
    else:
        _optional(data, file, "is_corrected", bool)
    history: list[Any] = data["history"]
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise _fail(file, f"history[{i}]", f"is a {type(entry).__name__}, expected an object")
        names = ("role", "content", "name") if fmt == "algorithm-generated" else ("role", "content")
        for key in names:
            if not isinstance(entry.get(key), str):
                raise _fail(file, f"history[{i}].{key}", "is missing or not a string")

    unmapped: list[Unmapped] = []
    steps = (
        _algorithm_steps(history, unmapped)
        if fmt == "algorithm-generated"
        else _hand_crafted_steps(history, unmapped)
    )
    labels = _labels(data, file, fmt, steps, unmapped)
    task_input: dict[str, Any] = {
        "question": data["question"],
        "question_ID": data.get("question_ID"),
        "level": data.get("level"),
    }
    if fmt == "algorithm-generated":
        task_input["system_prompt"] = data["system_prompt"]  # what each agent was told
    now = utcnow()
    run = RunRecord(
        id="ww-" + hashlib.sha256(raw).hexdigest()[:20],
        workflow=WORKFLOWS[fmt],
        task_input=task_input,
        status="failed",
        labels=labels,
        source=SOURCE,
        created_at=now,
        ended_at=now,
    )
    return _Parsed(file=file, run=run, steps=steps, unmapped=unmapped)


def _require(data: dict[str, Any], file: str, key: str, kind: type | tuple[type, ...]) -> None:
    if key not in data:
        raise _fail(file, f"field {key!r}", "is missing")
    _optional(data, file, key, kind)


def _optional(data: dict[str, Any], file: str, key: str, kind: type | tuple[type, ...]) -> None:
    value = data.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to isinstance, but a flag is never a valid level or step.
    flag_as_number = isinstance(value, bool) and bool not in kinds
    if value is None or (isinstance(value, kinds) and not flag_as_number):
        return
    expected = " or ".join(k.__name__ for k in kinds)
    raise _fail(file, f"field {key!r}", f"is a {type(value).__name__}, expected {expected}")


def _message(role: str, name: str, content: str) -> dict[str, Any]:
    return {"role": role, "name": name, "content": content}


def _build_steps(
    entries: list[tuple[str, str, StepKind, dict[str, Any], Any]],
) -> list[StepRecord]:
    """Steps from (node, agent, kind, message, delta): input is every message before it."""
    counts: Counter[str] = Counter()
    messages = [message for _, _, _, message, _ in entries]
    steps: list[StepRecord] = []
    for index, (node, agent, kind, message, delta) in enumerate(entries):
        steps.append(
            StepRecord(
                index=index,
                node=node,
                agent=agent,
                invocation=counts[node],
                kind=kind,
                input=messages[:index],
                output=message,
                delta=delta,
            )
        )
        counts[node] += 1
    return steps


def _hand_crafted_steps(
    history: list[dict[str, Any]], unmapped: list[Unmapped]
) -> list[StepRecord]:
    """Magentic-One: the role names the speaker and, for the orchestrator, what it did."""
    entries: list[tuple[str, str, StepKind, dict[str, Any], Any]] = []
    for i, entry in enumerate(history):
        role: str = entry["role"].strip()
        content: str = entry["content"]
        where = f"history[{i}]"
        kind: StepKind
        delta: Any = None
        if role == "human":
            agent, kind = "human", "input"
        elif role == "Orchestrator (thought)":
            agent = _ORCHESTRATOR
            kind, delta = _thought(content, where, unmapped)
        elif role == "Orchestrator (termination condition)":
            agent, kind = _ORCHESTRATOR, "router"
            delta = {"event": "terminate", "reason": _first_line(content)}
        elif match := _ROUTE.match(role):
            agent, kind = _ORCHESTRATOR, "router"
            delta = {"route": {"to": match["to"], "instruction": content}}
        elif role == "ComputerTerminal":
            agent, kind = role, "tool"
        elif _WORKER.match(role) and not role.startswith(_ORCHESTRATOR):
            agent, kind = role, "agent"
        else:
            agent, kind = role, "agent"
            unmapped.append(
                Unmapped(where=where, reason=f"unknown role shape {role!r}; kept as an agent step")
            )
        entries.append((role, agent, kind, _message(entry["role"], agent, content), delta))
    return _build_steps(entries)


def _thought(content: str, where: str, unmapped: list[Unmapped]) -> tuple[StepKind, Any]:
    """An orchestrator thought: a plan or ledger (kind plan) or a routing note (router)."""
    text = _WARNING.sub("", content).strip()
    if text.startswith("Updated Ledger:"):
        ledger = _ledger(text.removeprefix("Updated Ledger:"))
        if ledger is None:
            unmapped.append(Unmapped(where=where, reason="ledger is not a JSON object"))
        return "plan", {"ledger": ledger}
    for heading, stage in (("Initial plan:", "initial"), ("New plan:", "new")):
        if text.startswith(heading):
            plan = _plan(text.removeprefix(heading), stage)
            missing = [key for _, key in _PLAN_SECTIONS if key not in plan]
            if missing:
                unmapped.append(
                    Unmapped(where=where, reason=f"plan lacks section(s) {', '.join(missing)}")
                )
            return "plan", {"plan": plan}
    first = _first_line(text)
    if match := _NEXT_SPEAKER.match(first):
        # A few announcements carry the runtime's traceback after the first line.
        rest = text[len(first) :].strip()
        return "router", {"route": {"to": match["to"]}, **({"log": rest} if rest else {})}
    if first in _EVENTS:
        return "router", {"event": _EVENTS[first]}
    unmapped.append(
        Unmapped(where=where, reason=f"unrecognised orchestrator thought {first[:60]!r}")
    )
    return "router", None


def _ledger(text: str) -> dict[str, Any] | None:
    """The JSON object of a ledger, or None when it does not parse as one."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _plan(text: str, stage: str) -> dict[str, Any]:
    """A Magentic-One plan split at its fixed headings; the team becomes {name: role}."""
    plan: dict[str, Any] = {"stage": stage}
    found = sorted(
        (pos, heading, key)
        for heading, key in _PLAN_SECTIONS
        if (pos := text.find(heading)) >= 0
    )
    for n, (pos, heading, key) in enumerate(found):
        end = found[n + 1][0] if n + 1 < len(found) else len(text)
        plan[key] = text[pos + len(heading) : end].strip()
    if isinstance(plan.get("team"), str):
        team: dict[str, str] = {}
        for line in plan["team"].splitlines():
            name, sep, description = line.partition(":")
            if sep and _WORKER.match(name.strip()):
                team[name.strip()] = description.strip()
        plan["team"] = team
    return plan


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def _algorithm_steps(history: list[dict[str, Any]], unmapped: list[Unmapped]) -> list[StepRecord]:
    """AG2: `name` is the speaker; the code executor (`Computer_terminal`) is a tool step."""
    entries: list[tuple[str, str, StepKind, dict[str, Any], Any]] = []
    for i, entry in enumerate(history):
        name: str = entry["name"].strip()
        if entry["role"] not in ("user", "assistant"):
            unmapped.append(
                Unmapped(
                    where=f"history[{i}]",
                    reason=f"unknown role {entry['role']!r}; kept as a step of {name!r}",
                )
            )
        kind: StepKind = "tool" if _key(name) == "computerterminal" else "agent"
        entries.append((name, name, kind, _message(entry["role"], name, entry["content"]), None))
    return _build_steps(entries)


def _key(name: str) -> str:
    """A spelling-insensitive key: `Websurfer`, `web_surfer` and `WebSurfer` are one agent."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _labels(
    data: dict[str, Any],
    file: str,
    fmt: Format,
    steps: list[StepRecord],
    unmapped: list[Unmapped],
) -> dict[str, Any]:
    """The annotations, with the agent spelled as in the run and the step as an int."""
    raw_agent: str = data["mistake_agent"]
    agents = {_key(s.agent): s.agent for s in steps if s.agent}
    agent = agents.get(_key(raw_agent))
    if agent is None:
        unmapped.append(
            Unmapped(
                where="mistake_agent",
                reason=f"{raw_agent!r} matches no agent of this run; kept as given",
            )
        )
    raw_step = data["mistake_step"]
    step: int | None = None
    if isinstance(raw_step, int) or (isinstance(raw_step, str) and raw_step.strip().isdigit()):
        step = int(raw_step)
        if step >= len(steps):
            unmapped.append(
                Unmapped(
                    where="mistake_step",
                    reason=f"{raw_step!r} is out of range (the run has {len(steps)} steps)",
                )
            )
            step = None
    else:
        unmapped.append(Unmapped(where="mistake_step", reason=f"{raw_step!r} is not a step index"))
    if step is not None and agent is not None and steps[step].agent != agent:
        unmapped.append(
            Unmapped(
                where="mistake_step",
                reason=f"step {step} is by {steps[step].agent!r}, not the annotated "
                f"mistake_agent {agent!r}; both labels kept as given",
            )
        )
    labels: dict[str, Any] = {
        "ground_truth": data.get("ground_truth"),
        "mistake_agent": agent if agent is not None else raw_agent,
        "mistake_agent_raw": raw_agent,
        "mistake_step": step,
        "mistake_reason": data["mistake_reason"],
        "source_file": file,
    }
    if step is None:
        labels["mistake_step_raw"] = raw_step
    for key in ("mistake_type", "labels", "is_corrected", "is_correct"):
        if key in data:
            labels[key] = data[key]
    return labels


class WhoWhenFormat:
    """Who&When failure logs (Hand-Crafted and Algorithm-Generated), with their labelled
    mistake agent and step."""

    name = "whowhen"
    summary = "Who&When failure logs: a history of agent messages with the labelled mistake agent and step"
    suffixes = (".json",)
    writes = False

    def detect(self, sniff: Sniff) -> bool:
        document = sniff.document
        return (isinstance(document, dict) and isinstance(document.get("history"), list)
                and any(key in document for key in ("mistake_agent", "mistake_step", "question")))

    def read(self, store: TraceStore, files: Sequence[Path], on_progress: Progress | None = None) -> ImportReport:
        report = import_whowhen(store, files)
        if on_progress is not None:
            on_progress(len(files), len(files))
        return ImportReport(
            format=self.name, files=[str(f) for f in files], run_ids=report.run_ids, steps=report.steps,
            skipped=[Skipped(what=s.file, reason=s.reason) for s in report.skipped],
            notes=[f"{file} {item.where}: {item.reason}" for file, items in report.unmapped.items() for item in items],
        )

    def write(self, store: TraceStore, run_ids: Sequence[str], path: Path,
              on_progress: Progress | None = None) -> ExportReport:
        raise FormatError("Who&When logs are read, not written")


register_format(WhoWhenFormat())
