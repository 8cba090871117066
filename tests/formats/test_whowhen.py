"""Importing Who&When logs: the real subset on both backends, and edge cases in small files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from counterfact.formats import import_whowhen
from counterfact.store import StoreError, TraceStore

from ..conftest import WHOWHEN as DATA

needs_data = pytest.mark.usefixtures("whowhen")


def _hand_crafted(**overrides: Any) -> dict[str, Any]:
    """A small Magentic-One log in the benchmark's shape."""
    log: dict[str, Any] = {
        "question": "What is 2+2?",
        "ground_truth": "4",
        "question_ID": "q-1",
        "is_corrected": False,
        "level": 1,
        "mistake_agent": "Websurfer",
        "mistake_step": "3",
        "mistake_reason": "It read the wrong page.",
        "history": [
            {"role": "human", "content": "What is 2+2?"},
            {
                "role": "Orchestrator (thought)",
                "content": 'Updated Ledger:\n{\n  "next_speaker": {"answer": "WebSurfer"}\n'
                "/usr/lib/x/orchestrator.py:216: UserWarning: model mismatch.\n"
                "  ledger_response = await create(\n}",
            },
            {"role": "Orchestrator (-> WebSurfer)", "content": "Search for 2+2."},
            {"role": "WebSurfer", "content": "I found 5."},
            {"role": "Orchestrator (thought)", "content": "Next speaker WebSurfer"},
            {"role": "WebSurfer", "content": "Still 5."},
        ],
    }
    log.update(overrides)
    return log


def _write(folder: Path, name: str, log: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(log if isinstance(log, str) else json.dumps(log))
    return path


def _run_count(store: TraceStore) -> int:
    return len(store.list_runs(limit=None))


@needs_data
def test_subset_imports_every_log_with_exact_step_indices(store: TraceStore) -> None:
    files = sorted(DATA.glob("*/*.json"))
    report = import_whowhen(store, [DATA])

    assert report.runs == len(files) == 52
    assert report.unmapped == {} and report.skipped == []
    lengths = {
        f"{f.parent.name}/{f.name}": len(json.loads(f.read_text())["history"]) for f in files
    }
    assert report.steps == sum(lengths.values())
    for run in store.list_runs(limit=None):
        steps = store.steps(run.id)
        assert run.source == "whowhen" and run.status == "failed"
        assert len(steps) == lengths[run.labels["source_file"]]
        assert [s.index for s in steps] == list(range(len(steps)))
        original = json.loads((DATA / run.labels["source_file"]).read_text())
        assert run.labels["mistake_step"] == int(original["mistake_step"])
        assert run.labels["mistake_agent_raw"] == original["mistake_agent"]
        assert run.task_input["question"] == original["question"]
        # each step's output is its history entry, and its input every entry before it
        contents = [s.output["content"] for s in steps]
        assert contents == [h["content"] for h in original["history"]]
        assert steps[-1].input == [s.output for s in steps[:-1]]
    workflows = {r.workflow for r in store.list_runs(limit=None)}
    assert workflows == {"whowhen/hand-crafted", "whowhen/algorithm-generated"}


@needs_data
def test_magentic_one_roles_become_typed_steps(store: TraceStore) -> None:
    report = import_whowhen(store, [DATA / "Hand-Crafted" / "1.json"])
    steps = store.steps(report.run_ids[0])

    assert (steps[0].kind, steps[0].agent) == ("input", "human")
    assert (steps[1].kind, steps[1].agent, steps[1].node) == (
        "plan",
        "Orchestrator",
        "Orchestrator (thought)",
    )
    plan = steps[1].delta["plan"]
    assert plan["stage"] == "initial" and "WebSurfer" in plan["team"]
    assert "UserWarning" not in plan["plan"]
    assert steps[2].delta["ledger"]["next_speaker"]["answer"] == "WebSurfer"
    assert steps[3].kind == "router"
    instruction = steps[3].output["content"]
    assert steps[3].delta == {"route": {"to": "WebSurfer", "instruction": instruction}}
    assert (steps[4].kind, steps[4].agent, steps[4].invocation) == ("agent", "WebSurfer", 0)
    surfer = [s for s in steps if s.node == "WebSurfer"]
    assert [s.invocation for s in surfer] == list(range(len(surfer)))
    assert steps[7].delta == {"route": {"to": "WebSurfer"}}  # "Next speaker WebSurfer"


@needs_data
def test_captain_agent_logs_map_names_and_keep_system_prompts(store: TraceStore) -> None:
    path = DATA / "Algorithm-Generated" / "1.json"
    original = json.loads(path.read_text())
    run_id = import_whowhen(store, [path]).run_ids[0]
    run, steps = store.get_run(run_id), store.steps(run_id)

    assert run.workflow == "whowhen/algorithm-generated"
    assert run.task_input["system_prompt"] == original["system_prompt"]
    assert run.labels["is_correct"] is False
    assert [s.agent for s in steps] == [h["name"] for h in original["history"]]
    assert {s.kind for s in steps if s.agent == "Computer_terminal"} == {"tool"}
    assert steps[1].output == {
        "role": original["history"][1]["role"],
        "name": original["history"][1]["name"],
        "content": original["history"][1]["content"],
    }


def test_reimport_is_skipped_not_duplicated(tmp_path: Path, sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    path = _write(tmp_path / "Hand-Crafted", "1.json", _hand_crafted())
    copy = _write(tmp_path / "elsewhere", "1.json", _hand_crafted())
    first = import_whowhen(store, [path])
    again = import_whowhen(store, [path, copy])

    assert first.runs == 1 and first.run_ids[0].startswith("ww-")
    assert again.runs == 0
    assert [(s.file, s.reason, s.run_id) for s in again.skipped] == [
        ("Hand-Crafted/1.json", "already imported", first.run_ids[0]),
        ("elsewhere/1.json", "already imported", first.run_ids[0]),
    ]
    assert _run_count(store) == 1
    both = import_whowhen(TraceStore.open(str(tmp_path / "other.db")), [path, copy])
    assert both.runs == 1 and both.skipped[0].reason == "same content as Hand-Crafted/1.json"


def test_misspelled_agent_is_normalised_and_raw_kept(tmp_path: Path, sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    report = import_whowhen(store, [_write(tmp_path / "hc", "a.json", _hand_crafted())])
    run = store.get_run(report.run_ids[0])

    assert run.labels["mistake_agent"] == "WebSurfer"
    assert run.labels["mistake_agent_raw"] == "Websurfer"
    assert run.labels["mistake_step"] == 3
    assert store.steps(run.id)[1].delta == {"ledger": {"next_speaker": {"answer": "WebSurfer"}}}
    assert report.unmapped == {}


def test_unmappable_items_are_reported_and_steps_kept(tmp_path: Path, sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    log = _hand_crafted(mistake_step="17", mistake_agent="Coder")
    log["history"].append({"role": "Orchestrator (dreaming)", "content": "zzz"})
    log["history"].append({"role": "Orchestrator (thought)", "content": "Updated Ledger:\n{oops"})
    report = import_whowhen(store, [_write(tmp_path / "hc", "bad.json", log)])
    run = store.get_run(report.run_ids[0])

    items = {(u.where, u.reason.split(" ")[0]) for u in report.unmapped["hc/bad.json"]}
    assert items == {
        ("mistake_step", "'17'"),
        ("mistake_agent", "'Coder'"),
        ("history[6]", "unknown"),
        ("history[7]", "ledger"),
    }
    assert run.labels["mistake_step"] is None and run.labels["mistake_step_raw"] == "17"
    assert run.labels["mistake_agent"] == "Coder"
    steps = store.steps(run.id)
    assert len(steps) == 8 and steps[6].node == "Orchestrator (dreaming)"
    assert steps[7].kind == "plan" and steps[7].delta == {"ledger": None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "bad.json: not valid JSON"),
        (json.dumps({"question": "q"}), "field 'history' is missing"),
        (json.dumps(_hand_crafted(history="oops")), "field 'history' is a str, expected list"),
        (
            json.dumps(_hand_crafted(history=[{"role": "human", "content": 3}])),
            "history[0].content is missing or not a string",
        ),
        (json.dumps(_hand_crafted(mistake_step=True)), "field 'mistake_step' is a bool"),
        (json.dumps(_hand_crafted(system_prompt=[])), "field 'system_prompt' is a list"),
    ],
)
def test_a_bad_file_names_file_and_field_and_writes_nothing(
    tmp_path: Path, sqlite_path: str, content: str, message: str
) -> None:
    store = TraceStore.open(sqlite_path)
    good = _write(tmp_path / "hc", "good.json", _hand_crafted())
    bad = _write(tmp_path / "hc", "bad.json", content)

    with pytest.raises(StoreError) as err:
        import_whowhen(store, [good, bad])
    assert message in str(err.value) and "hc/bad.json" in str(err.value)
    assert _run_count(store) == 0


def test_a_missing_path_is_an_error(tmp_path: Path, sqlite_path: str) -> None:
    with pytest.raises(StoreError, match="nope.json: no such file or folder"):
        import_whowhen(TraceStore.open(sqlite_path), [tmp_path / "nope.json"])
