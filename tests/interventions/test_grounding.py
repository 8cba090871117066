"""Grounded suspects on hand-built steps: what counts as a claim, what supports it."""

from __future__ import annotations

from typing import Any

from counterfact.capture import ToolCallRecord
from counterfact.interventions import find_suspects
from counterfact.interventions._grounding import numbers_in
from counterfact.store import StepRecord

QUESTION = "What is the population of Avalon plus the population of Brindle?"


def _step(index: int, agent: str, text: str, *calls: ToolCallRecord) -> StepRecord:
    return StepRecord(
        index=index, node=agent, agent=agent,
        output={"role": "assistant", "name": agent, "content": text}, tool_calls=list(calls),
    )


def _call(name: str, arguments: dict[str, Any], result: Any = None, error: str | None = None) -> ToolCallRecord:
    return ToolCallRecord(name=name, arguments=arguments, result=result, error=error)


def _researcher() -> StepRecord:
    return _step(
        0, "researcher", "FACTS: 1000; 500",
        _call("lookup", {"key": "population of Avalon"}, "1000"),
        _call("lookup", {"key": "population of Brindle"}, "500"),
    )


def test_numbers_in_normalises_and_skips_one_digit_numbers() -> None:
    assert numbers_in("about 1,740 people, 3 towns, 1740 again, 12.5 km, -40 degrees") == ["1740", "12.5", "-40"]
    assert numbers_in("steps 1. 2. 9 and 7") == []
    assert numbers_in("1,000,000 and 1000000") == ["1000000"]
    assert numbers_in("room B12 or v2.0.1") == []  # parts of words and versions are not claims


def test_a_number_copied_from_nowhere_is_flagged_at_its_step() -> None:
    steps = [_researcher(), _step(1, "solver", "RESULT: 1740"), _step(2, "reporter", "FINAL ANSWER: 1740")]
    (suspect,) = find_suspects(steps, QUESTION)
    assert (suspect.step, suspect.agent) == (1, "solver")
    assert suspect.unsupported == ["1740"] and suspect.failed_calls == []
    assert suspect.supported == ["500", "1000"]  # what the step could have used, in order
    assert "solver wrote 1740" in suspect.reason  # the reporter only repeats an earlier step


def test_numbers_from_tool_results_the_question_or_earlier_steps_are_supported() -> None:
    steps = [
        _researcher(),  # from its own tool results
        _step(1, "solver", "1000 + 500 = 1500",
              _call("calculator", {"expression": "1000 + 500"}, 1500)),  # arguments and result
        _step(2, "checker", "The task asks about 2024 figures; 1500 checks out."),  # earlier step
        _step(3, "reporter", "FINAL ANSWER: 1500"),
    ]
    assert find_suspects(steps, "What was the population of Avalon plus Brindle in 2024?") == []
    # without the year in the question the checker's 2024 comes from nowhere
    (suspect,) = find_suspects(steps, QUESTION)
    assert (suspect.step, suspect.unsupported) == (2, ["2024"])


def test_thousands_separators_do_not_make_a_number_unsupported() -> None:
    steps = [
        _step(0, "researcher", "FACTS: 1,740", _call("lookup", {"key": "population of Avalon"}, "1740")),
        _step(1, "reporter", "FINAL ANSWER: 1740 (that is 1,740)"),
    ]
    assert find_suspects(steps, QUESTION) == []


def test_one_digit_numbers_are_not_claims() -> None:
    steps = [_researcher(), _step(1, "solver", "Step 1: add the 2 numbers. RESULT: 1500 in 3 steps",
                                  _call("calculator", {"expression": "1000 + 500"}, 1500))]
    assert find_suspects(steps, QUESTION) == []


def test_a_failed_call_the_step_went_on_from_is_a_suspect() -> None:
    failed = _call("lookup", {"key": "population of Avalon"}, error="unknown key")
    steps = [_step(0, "researcher", "FACTS: none found", failed), _step(1, "reporter", "FINAL ANSWER: unknown")]
    (suspect,) = find_suspects(steps, QUESTION)
    assert (suspect.step, suspect.agent, suspect.unsupported) == (0, "researcher", [])
    assert suspect.failed_calls == ['lookup({"key": "population of Avalon"}): unknown key']
    assert "went on after a failed tool call" in suspect.reason


def test_a_failed_call_retried_successfully_in_the_same_step_is_not() -> None:
    steps = [
        _step(0, "researcher", "FACTS: 1000",
              _call("lookup", {"key": "Avalon"}, error="unknown key"),
              _call("lookup", {"key": "population of Avalon"}, "1000")),
        _step(1, "reporter", "FINAL ANSWER: 1000"),
    ]
    assert find_suspects(steps, QUESTION) == []


def test_a_failed_call_result_is_no_support() -> None:
    steps = [_step(0, "researcher", "FACTS: 1000",
                   _call("lookup", {"key": "Avalon"}, result="1000", error="timeout"))]
    (suspect,) = find_suspects(steps, QUESTION)
    assert suspect.unsupported == ["1000"] and len(suspect.failed_calls) == 1


def test_suspects_come_in_step_order_the_earliest_first() -> None:
    steps = [
        _step(0, "researcher", "FACTS: 1200; 500"),  # no lookup at all
        _step(1, "solver", "RESULT: 1700"),  # a sum of unsupported numbers is unsupported too
        _step(2, "checker", "Looks right: 1700, or maybe 1750"),
        _step(3, "reporter", "FINAL ANSWER: 1700"),
    ]
    suspects = find_suspects(steps, QUESTION)
    assert [(s.step, s.agent, s.unsupported) for s in suspects] == [
        (0, "researcher", ["1200", "500"]),
        (1, "solver", ["1700"]),
        (2, "checker", ["1750"]),
    ]
    assert suspects[0].supported == []  # nothing before the first step gives a number
