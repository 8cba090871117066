"""tau-bench result files as runs: the JSON list its `run.py` writes, one `EnvRunResult` per
task and trial (`task_id`, `reward`, `info`, `traj`, `trial`).

Each result is one run whose steps are its trajectory's OpenAI-style messages (see
`_messages`). A reward below 1 is a failed run; the reward is its outcome's score, and the task
(instruction, user, expected actions and outputs) and reward details are kept in its labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from counterfact._errors import validation_message
from counterfact.formats._base import (
    Sniff,
    register_format,
)
from counterfact.formats._imported import (
    ParsedRun,
    ReadOnlyFormat,
    bad_entry,
    content_id,
    kind_of,
    load_json,
)
from counterfact.formats._messages import message_steps
from counterfact.formats._openai import check_openai, question_of
from counterfact.store import Outcome, RunRecord, utcnow

SUCCESS = 1.0 - 1e-6  # tau-bench's own threshold: a reward this high or higher is a solved task
EXPECTED = "tau-bench results: a JSON list of objects with task_id, reward, info and traj (OpenAI messages), as tau-bench's run.py writes"


class EnvRunResult(BaseModel):
    """One tau-bench result, as its `tau_bench.types.EnvRunResult` is dumped."""

    model_config = ConfigDict(extra="allow")

    task_id: int
    reward: float
    info: dict[str, Any]
    traj: list[Any]
    trial: int = 0


def _is_result(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("traj"), list) and "reward" in value and "task_id" in value


def _parse(path: Path) -> list[ParsedRun]:
    document = load_json(path, EXPECTED)
    entries = document if isinstance(document, list) else [document]
    parsed: list[ParsedRun] = []
    for number, entry in enumerate(entries):
        where = f"result[{number}]"
        if not isinstance(entry, dict):
            raise bad_entry(path, where, f"is {kind_of(entry)}", EXPECTED)
        try:
            result = EnvRunResult.model_validate(entry)
        except ValidationError as exc:
            raise bad_entry(path, where, validation_message(exc, entry), EXPECTED) from None
        messages = check_openai(path, f"{where}.traj", result.traj)
        steps = message_steps(messages, backend="tau-bench")
        task = result.info.get("task") if isinstance(result.info.get("task"), dict) else {}
        instruction = task.get("instruction")
        question = {"question": instruction} if isinstance(instruction, str) else question_of(steps)
        success = result.reward >= SUCCESS
        now = utcnow()
        run = RunRecord(
            id=content_id("tau", entry), workflow="tau-bench",
            task_input={**question, "task_id": result.task_id, "trial": result.trial, "user_id": task.get("user_id")},
            status="succeeded" if success else "failed",
            outcome=Outcome(success=success, score=result.reward, detail=f"reward {result.reward:g}"),
            labels={"source_file": path.name, "task": task, "reward": result.reward,
                    **{k: v for k, v in result.info.items() if k != "task"}},
            source="tau-bench", created_at=now, ended_at=now,
        )
        parsed.append(ParsedRun(where=f"{path} {where}", run=run, steps=steps))
    return parsed


class TauBenchFormat(ReadOnlyFormat):
    """tau-bench result files: each task's trajectory, reward and task."""

    name = "tau-bench"
    summary = "tau-bench results: a run per task and trial, its trajectory as steps, reward < 1 a failed run"
    noun = "tau-bench results"

    def detect(self, sniff: Sniff) -> bool:
        document = sniff.document
        entries = document if isinstance(document, list) else [document]
        return bool(entries) and all(_is_result(e) for e in entries)

    def parse(self, path: Path) -> list[ParsedRun]:
        return _parse(path)


register_format(TauBenchFormat())
