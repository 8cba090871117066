"""Log-only failure attribution: the three methods' prompts and answers, cutting a step too long
for the context, retries of unreadable answers, stored predictions and exact-step scoring (long
logs read in pieces: test_attribute_pieces.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from counterfact.agents import ChatMessage, LocalModel, ScriptedChatModel
from counterfact.formats import import_whowhen
from counterfact.interventions import attribute, score_attributions
from counterfact.store import TraceStore

from ..conftest import WHOWHEN, require

AGENTS = ["Planner_Expert", "Coder_Expert", "Computer_terminal", "Verifier_Expert"]
REASON = "The coder used the wrong unit conversion factor."
GROUND_TRUTH = "forty-two kilometres"


def _write_log(
    folder: Path, name: str, *, steps: int = 8, mistake: int = 3, content: str = "", long: int = 0
) -> Path:
    """An Algorithm-Generated Who&When log; step `long` (if any) gets 20,000 characters."""
    history = []
    for i in range(steps):
        agent = AGENTS[i % len(AGENTS)]
        text = f"{content}message number {i} from {agent} about the distance"
        if long and i == long:
            text += " lorem ipsum" * 1700
        history.append({"content": text, "role": "assistant", "name": agent})
    log = {
        "question": f"How far is it from A to B? ({name})",
        "ground_truth": GROUND_TRUTH,
        "is_correct": False,
        "system_prompt": {a: f"You are {a}." for a in AGENTS},
        "history": history,
        "mistake_agent": AGENTS[mistake % len(AGENTS)],
        "mistake_step": str(mistake),
        "mistake_reason": REASON,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(log))
    return path


def _import(store: TraceStore, *paths: Path) -> list[str]:
    return import_whowhen(store, list(paths)).run_ids


def _prompt(request_messages: list[ChatMessage]) -> str:
    return "\n".join(m.content for m in request_messages)


def _assert_no_labels(text: str) -> None:
    assert REASON not in text and GROUND_TRUTH not in text
    assert "mistake_agent" not in text and "mistake_step" not in text


def test_all_at_once_shows_indexed_steps_and_stores_the_prediction(
    store: TraceStore, tmp_path: Path
) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1"))
    model = ScriptedChatModel(["Step: 5\nAgent: coder expert\nReason: wrong factor"])
    [result] = attribute(store, [run_id], model, "all_at_once")
    assert (result.agent, result.step, result.reason) == ("Coder_Expert", 5, "wrong factor")
    assert result.questions == 1 and not result.errors and not result.truncated
    text = _prompt(model.requests[0].messages)
    for i in range(8):
        assert f"[Step {i}] {AGENTS[i % 4]}:" in text
    assert "Agents: Planner_Expert, Coder_Expert, Computer_terminal, Verifier_Expert" in text
    _assert_no_labels(text)
    stored = store.get_run(run_id).labels
    assert stored["attribution"]["all_at_once"]["step"] == 5
    assert stored["mistake_step"] == 3  # the ground truth is untouched


def test_all_at_once_reads_loose_answers(store: TraceStore, tmp_path: Path) -> None:
    ids = _import(store, *(_write_log(tmp_path, str(n), content=f"log {n}: ") for n in range(3)))
    model = ScriptedChatModel(
        ["The mistake is in step 6.", "  7  ", "agent = VERIFIER expert, step #2"]
    )
    results = attribute(store, ids, model, "all_at_once", concurrency=1)
    # no agent named: the step's author; only a number: the step; any spelling of an agent
    assert [(r.agent, r.step) for r in results] == [
        ("Computer_terminal", 6),
        ("Verifier_Expert", 7),
        ("Verifier_Expert", 2),
    ]


def test_step_by_step_stops_at_the_first_yes(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1"))
    model = ScriptedChatModel(lambda m: "Yes." if "Is step 3 (by" in _prompt(m) else "No")
    [result] = attribute(store, [run_id], model, "step_by_step")
    assert (result.agent, result.step, result.questions) == ("Verifier_Expert", 3, 4)
    for i, request in enumerate(model.requests):
        text = _prompt(request.messages)
        assert f"[Step {i}] {AGENTS[i % 4]}:" in text and f"[Step {i + 1}]" not in text
        assert f"Is step {i} (by {AGENTS[i % 4]})" in text
        _assert_no_labels(text)


def test_step_by_step_without_a_yes_predicts_nothing(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1"))
    [result] = attribute(store, [run_id], ScriptedChatModel([], default="No"), "step_by_step")
    assert result.step is None and result.agent is None and result.questions == 8
    assert not result.errors


@pytest.mark.parametrize(("steps", "mistake"), [(8, 5), (8, 0), (8, 7), (5, 4), (13, 6)])
def test_binary_search_asks_log2_n_questions(
    store: TraceStore, tmp_path: Path, steps: int, mistake: int
) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1", steps=steps, mistake=mistake))
    shown: list[set[int]] = []

    def oracle(messages: list[ChatMessage]) -> str:
        text = _prompt(messages)
        shown.append({int(i) for i in re.findall(r"\[Step (\d+)\]", text)})
        lo, mid = map(int, re.search(r"Is the decisive mistake in steps (\d+) to (\d+)", text).groups())
        _assert_no_labels(text)
        return "A" if lo <= mistake <= mid else "B"

    [result] = attribute(store, [run_id], ScriptedChatModel(oracle), "binary_search")
    assert result.step == mistake and result.agent == AGENTS[mistake % 4]
    if steps & (steps - 1) == 0:
        assert result.questions == math.log2(steps)
    else:
        assert result.questions in (math.floor(math.log2(steps)), math.ceil(math.log2(steps)))
    assert shown[0] == set(range(steps))  # the first question shows the whole log
    assert all(len(b) <= (len(a) + 1) // 2 for a, b in zip(shown, shown[1:]))


def test_unreadable_answer_is_retried_once_then_recorded(
    store: TraceStore, tmp_path: Path
) -> None:
    ids = _import(store, *(_write_log(tmp_path, str(n), content=f"log {n}: ") for n in range(2)))
    model = ScriptedChatModel(["I am not sure.", "Still unsure.", "Hmm", "Step: 2"])
    first, second = attribute(store, ids, model, "all_at_once", concurrency=1)
    assert first.step is None and first.questions == 2 and len(first.errors) == 1
    assert "unreadable answer" in first.errors[0] and first.raw_outputs == ["I am not sure.", "Still unsure."]
    retry = model.requests[1].messages
    assert retry[-2].content == "I am not sure." and "Step: <step number>" in retry[-1].content
    assert (second.step, second.agent, second.errors) == (2, "Computer_terminal", [])
    # out-of-range steps are unreadable too; yes/no and A/B answers are retried the same way
    [bad] = attribute(store, ids[:1], ScriptedChatModel([], default="Step: 99"), "all_at_once")
    assert bad.step is None and bad.questions == 2 and bad.errors
    [half] = attribute(store, ids[:1], ScriptedChatModel([], default="a maybe"), "binary_search")
    assert half.questions == 2 and half.errors and half.step is None
    assert store.get_run(ids[0]).labels["attribution"]["binary_search"]["errors"]


def test_over_long_step_is_cut_to_fit(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1", long=2))
    model = ScriptedChatModel(lambda m: "Step: 2" if "[Step 2]" in _prompt(m) else "Step: None")
    [result] = attribute(store, [run_id], model, "all_at_once", max_prompt_tokens=1500)
    texts = [_prompt(r.messages) for r in model.requests]
    # the long step is a piece by itself, cut to fit; the steps around it are pieces, whole
    shown = [[int(i) for i in re.findall(r"\[Step (\d+)\]", text)] for text in texts]
    assert shown == [[0, 1], [2], [3, 4, 5, 6, 7]] and result.pieces == 3
    assert result.truncated and "characters cut ...]" in texts[1] and all(len(t) <= 1500 * 4 for t in texts)
    assert "characters cut" not in texts[0] + texts[2]
    assert (result.step, result.agent, result.questions) == (2, "Computer_terminal", 3)  # one candidate
    [full] = attribute(store, [run_id], ScriptedChatModel([], default="Step: 2"), "all_at_once")
    assert not full.truncated and full.pieces == 1  # no budget for a model that cannot count tokens


def test_local_model_prompts_fit_its_context_window(
    store: TraceStore, tmp_path: Path, tiny: LocalModel
) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "1", steps=20, long=4, content="y" * 300))
    asked: list[tuple[int, int]] = []  # (messages, prompt tokens) of every request
    complete = tiny.complete

    def counting(request, **kw):  # type: ignore[no-untyped-def]
        asked.append((len(request.messages), len(tiny.prompt_ids(request.messages))))
        return complete(request, **kw)

    tiny.complete = counting  # type: ignore[method-assign]
    [result] = attribute(store, [run_id], tiny, "all_at_once", max_tokens=8)
    assert tiny.context_window == 512
    assert result.truncated and result.pieces > 1  # step 4 alone is longer than the context
    first = [tokens for messages, tokens in asked if messages == 1]
    assert first and max(first) <= 512 - 2 * 8 - 64  # the context less an answer and a retry
    assert max(tokens for _, tokens in asked) < 512  # retries included
    assert 0 < result.prompt_tokens and not any("model error" in e for e in result.errors)


def test_scoring_counts_exact_integer_steps_only(store: TraceStore, tmp_path: Path) -> None:
    paths = [
        _write_log(tmp_path, str(n), steps=14, content=f"log {n}: ", mistake=2) for n in range(4)
    ]
    ids = _import(store, *paths)
    replies = iter(["Step: 12\nAgent: Computer_terminal", "Step: 2\nAgent: Planner_Expert"])
    model = ScriptedChatModel(lambda _m: next(replies))
    attribute(store, ids[:2], model, "all_at_once", concurrency=1)
    attribute(store, ids[2:3], ScriptedChatModel([], default="??"), "all_at_once")
    score = score_attributions(store, ids, "all_at_once")
    assert (score.runs, score.step_runs) == (4, 4)
    assert score.step_correct == 1  # 12 is not 2
    assert score.agent_correct == 1  # Computer_terminal; Planner_Expert is wrong
    assert score.unpredicted == ids[2:] and score.errors == 1
    assert score.step_accuracy == 0.25 and score.agent_accuracy == 0.25
    other = score_attributions(store, ids, "binary_search")
    assert other.unpredicted == ids and other.agent_correct == 0


@pytest.mark.slow
def test_all_at_once_on_real_logs_with_the_embedded_model(
    sqlite_path: str, embedded: LocalModel
) -> None:
    logs = [WHOWHEN / "Algorithm-Generated" / f"{n}.json" for n in (41, 93)]
    require(all(p.is_file() for p in logs), f"the Who&When subset is not at {WHOWHEN.resolve()}")
    store = TraceStore.open(sqlite_path)
    ids = _import(store, *logs)
    results = attribute(store, ids, embedded, "all_at_once")
    for run_id, result in zip(ids, results):
        assert result.run_id == run_id and result.questions in (1, 2)
        assert result.prompt_tokens > 0 and not result.truncated
        steps = len(store.steps(run_id, payloads=False))
        assert (result.step is not None and 0 <= result.step < steps) or result.errors
        assert "all_at_once" in store.get_run(run_id).labels["attribution"]
    parsed = [r for r in results if r.step is not None and r.agent is not None]
    assert parsed, [r.errors for r in results]  # the embedded model's answers are read, not only errors
    agents = {s.agent for run_id in ids for s in store.steps(run_id, payloads=False)}
    assert all(r.agent in agents for r in parsed)  # an agent of the log, not made up
    score = score_attributions(store, ids, "all_at_once")
    assert score.runs == 2 and score.agent_correct + len(score.unpredicted) <= 2
