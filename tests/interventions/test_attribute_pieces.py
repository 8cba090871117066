"""Long logs are read in pieces that fit the judge's context, never shortened: every step is shown
once, each piece names a candidate (or none), and a final comparison of the candidates answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from counterfact.agents import ChatMessage, LocalModel, ScriptedChatModel
from counterfact.interventions import attribute, score_attributions
from counterfact.store import TraceStore

from ..conftest import WHOWHEN, require
from .test_attribute import AGENTS, _assert_no_labels, _import, _prompt, _write_log

BUDGET = 800  # prompt tokens; a 60-step log of 600-character steps needs about 10,000


def _shown(text: str) -> list[int]:
    return [int(i) for i in re.findall(r"\[Step (\d+)\]", text)]


def _kind(text: str) -> str:
    if "Which candidate is the decisive mistake?" in text:
        return "compare"
    return "piece" if "Which step of this part" in text else "whole"


def _long_log(store: TraceStore, tmp_path: Path, steps: int = 60) -> str:
    [run_id] = _import(store, _write_log(tmp_path, "long", steps=steps, content="x" * 600))
    return run_id


def test_all_at_once_reads_every_step_in_pieces_then_compares(store: TraceStore, tmp_path: Path) -> None:
    run_id = _long_log(store, tmp_path)

    def judge(messages: list[ChatMessage]) -> str:
        text = _prompt(messages)
        if _kind(text) == "compare":
            return "Step: 37\nAgent: Coder_Expert\nReason: the later one"
        shown = _shown(text)
        named = [s for s in (12, 37) if s in shown]
        return f"Step: {named[0]}\nAgent: someone\nReason: looks wrong" if named else "Step: None"

    model = ScriptedChatModel(judge)
    [result] = attribute(store, [run_id], model, "all_at_once", max_prompt_tokens=BUDGET)
    texts = [_prompt(r.messages) for r in model.requests]
    pieces = [t for t in texts if _kind(t) == "piece"]
    assert [_kind(t) for t in texts] == ["piece"] * len(pieces) + ["compare"]
    # every step once, in order, in consecutive pieces: none left out, none repeated
    assert [s for t in pieces for s in _shown(t)] == list(range(60))
    assert all(len(t) <= BUDGET * 4 for t in texts) and not any("left out" in t for t in texts)
    assert result.pieces == len(pieces) >= 10 and not result.truncated and not result.errors
    for text in texts:
        _assert_no_labels(text)
    first = _shown(pieces[0])
    assert f"steps {first[0]} to {first[-1]}" in pieces[0] and f"Steps {first[-1] + 1} to 59 come after it" in pieces[0]
    assert "came before it" in pieces[1]
    # the comparison shows the two candidates side by side, with their pieces' reasons
    assert _shown(texts[-1]) == [12, 37] and "named by its piece: looks wrong" in texts[-1]
    assert f"read in {len(pieces)} parts" in texts[-1]
    assert (result.step, result.agent, result.reason) == (37, "Coder_Expert", "the later one")
    assert result.questions == len(pieces) + 1
    stored = store.get_run(run_id).labels["attribution"]["all_at_once"]
    assert stored["pieces"] == len(pieces) and stored["step"] == 37
    score = score_attributions(store, [run_id], "all_at_once")
    assert (score.in_pieces, score.truncated) == (1, 0)


def test_the_comparison_decides_and_a_single_candidate_needs_none(store: TraceStore, tmp_path: Path) -> None:
    run_id = _long_log(store, tmp_path)

    def judge(messages: list[ChatMessage]) -> str:
        text = _prompt(messages)
        if _kind(text) == "compare":
            return "Step: 12"  # the earlier candidate this time; the agent: the step's author
        shown = _shown(text)
        return "Step: 12" if 12 in shown else "Step: 37" if 37 in shown else "No decisive mistake here."

    [result] = attribute(store, [run_id], ScriptedChatModel(judge), "all_at_once", max_prompt_tokens=BUDGET)
    assert (result.step, result.agent) == (12, AGENTS[0])

    model = ScriptedChatModel(lambda m: "Step: 44" if 44 in _shown(_prompt(m)) else "Step: None")
    [single] = attribute(store, [run_id], model, "all_at_once", max_prompt_tokens=BUDGET)
    assert (single.step, single.agent) == (44, AGENTS[0]) and single.questions == single.pieces
    assert not any(_kind(_prompt(r.messages)) == "compare" for r in model.requests)

    [nothing] = attribute(store, [run_id], ScriptedChatModel([], default="Step: None"), "all_at_once",
                          max_prompt_tokens=BUDGET)
    assert nothing.step is None and nothing.agent is None and "no piece" in (nothing.reason or "")


def test_candidates_that_do_not_fit_together_are_compared_in_groups(store: TraceStore, tmp_path: Path) -> None:
    run_id = _long_log(store, tmp_path)

    def judge(messages: list[ChatMessage]) -> str:
        shown = _shown(_prompt(messages))
        return f"Step: {shown[-1]}"  # a piece: its last step; a comparison: its latest candidate

    model = ScriptedChatModel(judge)
    [result] = attribute(store, [run_id], model, "all_at_once", max_prompt_tokens=BUDGET)
    texts = [_prompt(r.messages) for r in model.requests]
    named = [_shown(t)[-1] for t in texts if _kind(t) == "piece"]
    rounds = [_shown(t) for t in texts if _kind(t) == "compare"]
    assert len(named) == result.pieces and len(rounds) > 1  # a knockout: all do not fit at once
    first_round = next(k for k in range(1, len(rounds)) if sum(map(len, rounds[:k])) >= len(named))
    assert [s for group in rounds[:first_round] for s in group] == named  # consecutive groups, each once
    assert all(len(group) > 1 for group in rounds)
    assert rounds[-1] == sorted(rounds[-1]) and named[-1] in rounds[-1]
    assert all(len(t) <= BUDGET * 4 for t in texts) and not result.truncated
    assert result.step == named[-1] and result.questions == len(named) + len(rounds)


def test_a_piece_naming_a_step_outside_it_is_retried_then_skipped(store: TraceStore, tmp_path: Path) -> None:
    run_id = _long_log(store, tmp_path)

    def judge(messages: list[ChatMessage]) -> str:
        text = _prompt(messages)
        if 0 in _shown(text):
            return "Step: 59"  # not in the first piece: unreadable, twice
        return "Step: 30" if 30 in _shown(text) else "Step: None"

    [result] = attribute(store, [run_id], ScriptedChatModel(judge), "all_at_once", max_prompt_tokens=BUDGET)
    assert result.step == 30 and len(result.errors) == 1
    assert result.errors[0].startswith("steps 0 to ") and "unreadable answer" in result.errors[0]
    assert result.questions == result.pieces + 1  # the first piece asked twice, no comparison


def test_step_by_step_walks_every_step_piece_by_piece(store: TraceStore, tmp_path: Path) -> None:
    run_id = _long_log(store, tmp_path)
    model = ScriptedChatModel([], default="No")
    [never] = attribute(store, [run_id], model, "step_by_step", max_prompt_tokens=BUDGET)
    texts = [_prompt(r.messages) for r in model.requests]
    asked = [int(re.search(r"Is step (\d+) \(by", t)[1]) for t in texts]
    assert asked == list(range(60)) and never.step is None and never.pieces > 5 and not never.truncated
    assert all(len(t) <= BUDGET * 4 for t in texts)
    for step, text in zip(asked, texts):
        shown = _shown(text)
        assert shown[-1] == step and shown == list(range(shown[0], step + 1))  # its piece up to it
        if shown[0]:
            assert f"Steps 0 to {shown[0] - 1} came before and were each judged not" in text
    starts = sorted({_shown(t)[0] for t in texts})
    assert len(starts) == never.pieces

    model = ScriptedChatModel(lambda m: "Yes" if "Is step 50 (by" in _prompt(m) else "No")
    [found] = attribute(store, [run_id], model, "step_by_step", max_prompt_tokens=BUDGET)
    assert (found.step, found.questions) == (51 - 1, 51) and 1 < found.pieces <= never.pieces
    assert found.pieces == sum(1 for s in starts if s <= 50)


@pytest.mark.parametrize("mistake", [0, 23, 59])
def test_binary_search_narrows_to_the_winning_piece_then_halves(
    store: TraceStore, tmp_path: Path, mistake: int
) -> None:
    run_id = _long_log(store, tmp_path)
    halving: list[list[int]] = []

    def oracle(messages: list[ChatMessage]) -> str:
        text = _prompt(messages)
        shown = _shown(text)
        if "Which step of this part" in text:
            return f"Step: {mistake}" if mistake in shown else "Step: None"
        halving.append(shown)
        lo, mid = map(int, re.search(r"Is the decisive mistake in steps (\d+) to (\d+)", text).groups())
        return "A" if lo <= mistake <= mid else "B"

    model = ScriptedChatModel(oracle)
    [result] = attribute(store, [run_id], model, "binary_search", max_prompt_tokens=BUDGET)
    assert result.step == mistake and result.agent == AGENTS[mistake % 4] and result.pieces > 5
    pieces = [_shown(_prompt(r.messages)) for r in model.requests if "Which step of this part" in _prompt(r.messages)]
    assert [s for p in pieces for s in p] == list(range(60))
    assert halving[0] == next(p for p in pieces if mistake in p)  # the winner's piece, whole
    assert all(len(_prompt(r.messages)) <= BUDGET * 4 for r in model.requests) and not result.truncated
    assert model.requests[0].settings.max_tokens >= 32  # room to name a step and an agent


def test_a_log_that_fits_is_one_piece(store: TraceStore, tmp_path: Path) -> None:
    [run_id] = _import(store, _write_log(tmp_path, "short"))
    for method, reply in (("all_at_once", "Step: 3"), ("step_by_step", "Yes"), ("binary_search", "A")):
        model = ScriptedChatModel([], default=reply)
        [result] = attribute(store, [run_id], model, method, max_prompt_tokens=BUDGET)  # type: ignore[arg-type]
        assert result.pieces == 1 and not result.truncated and result.step is not None
        assert not any("part" in _prompt(r.messages) for r in model.requests)


@pytest.mark.slow
def test_embedded_judge_reads_long_real_logs_in_pieces(sqlite_path: str, embedded: LocalModel) -> None:
    """A Who&When log of about 1,150 tokens (6 steps) with a 640-token budget: it is read in
    pieces that fit, every step is shown to the judge whole, and the answers are counted (several
    minutes on a busy 2-core machine: more logs would not say more)."""
    logs = [WHOWHEN / "Algorithm-Generated" / "65.json"]
    require(all(p.is_file() for p in logs), f"the Who&When subset is not at {WHOWHEN.resolve()}")
    store = TraceStore.open(sqlite_path)
    ids = _import(store, *logs)
    asked: list[tuple[int, str]] = []  # first attempts (a retry adds its reminder): tokens, text
    complete = embedded.complete

    def counting(request, **kw):  # type: ignore[no-untyped-def]
        if len(request.messages) == 1:
            asked.append((len(embedded.prompt_ids(request.messages)), _prompt(request.messages)))
        return complete(request, **kw)

    embedded.complete = counting  # type: ignore[method-assign]
    try:
        results = attribute(store, ids, embedded, "all_at_once", max_prompt_tokens=640, concurrency=1)
    finally:
        del embedded.complete
    assert max(tokens for tokens, _ in asked) <= 640
    pieces = [text for _, text in asked if _kind(text) == "piece"]
    assert not any("characters cut" in text for text in pieces)  # only a comparison may cut
    for run_id, result in zip(ids, results):
        steps = len(store.steps(run_id, payloads=False))
        question = store.get_run(run_id).task_input["question"]
        mine = [text for text in pieces if question in text]
        assert result.pieces == len(mine) > 1 and [s for t in mine for s in _shown(t)] == list(range(steps))
        assert result.questions >= result.pieces and result.prompt_tokens > 0
        assert (result.step is not None and 0 <= result.step < steps) or result.errors or result.reason
    agents = {s.agent for run_id in ids for s in store.steps(run_id, payloads=False)}
    assert all(r.agent in agents for r in results if r.agent is not None)
