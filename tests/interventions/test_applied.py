"""The applied check, kind by kind: each piece of evidence is shown by the replay that carries
it and not by one that nearly does (the other tool, another value, one call of two, the step
after the wrong one). A verdict of "validated" rests on this check; its mutants are measured
by scripts/mutation.py (target `applied`)."""

from __future__ import annotations

from typing import Any

import pytest

from counterfact.capture import ModelCallRecord, ToolCallRecord
from counterfact.interventions import Evidence, missing_evidence
from counterfact.interventions._applied import (
    describe,
    offered_tools,
    shown,
    state_evidence,
)
from counterfact.store import StepRecord


def _call(request: list[dict[str, Any]] | None = None, content: str = "", **params: Any) -> ModelCallRecord:
    return ModelCallRecord(backend="scripted", model="m", params=params, request=request or [],
                           response={"content": content})


def _step(node: str = "agent", output: Any = None, model_calls: Any = (), tool_calls: Any = (),
          inputs: Any = None) -> StepRecord:
    return StepRecord(node=node, output=output, model_calls=list(model_calls), tool_calls=list(tool_calls), input=inputs)


def _no_state(step: StepRecord) -> dict[str, Any]:
    raise AssertionError("only state evidence reads the state")


def _shown(evidence: Evidence, *steps: StepRecord) -> bool:
    return shown(evidence, list(steps), _no_state)


# -- seen ---------------------------------------------------------------------------------------

def test_seen_text_in_a_model_request_of_any_step_from_the_fork() -> None:
    later = _step("b", model_calls=[_call([{"role": "user", "content": "please use 7 apples"}])])
    assert _shown(Evidence(kind="seen", value="7 apples"), _step("a"), later)
    assert not _shown(Evidence(kind="seen", value="8 apples"), _step("a"), later)


def test_seen_text_in_the_messages_a_later_step_was_given_but_not_the_edited_steps_own() -> None:
    given = [{"role": "ai", "content": "the plan: 7 apples"}]
    assert _shown(Evidence(kind="seen", value="7 apples"), _step("a"), _step("b", inputs=given))
    # the edited step's input is what it saw before the edit: it shows nothing
    assert not _shown(Evidence(kind="seen", value="7 apples"), _step("a", inputs=given), _step("b"))


def test_seen_text_in_the_edited_steps_output() -> None:
    assert _shown(Evidence(kind="seen", value="7 apples"), _step("a", output={"content": "I have 7 apples"}))
    assert not _shown(Evidence(kind="seen", value="7 apples"), _step("a", output={"content": "I have 8"}))


def test_a_message_without_content_contributes_no_text() -> None:
    bare = _step("b", model_calls=[_call([{"role": "assistant"}])], inputs=[{"role": "assistant"}])
    for text in ("None", "XX", ""):
        assert _shown(Evidence(kind="seen", value=text), _step("a", output={"content": "x"}), bare) == (text == "")


def test_seen_text_is_looked_for_message_by_message_not_across_two() -> None:
    request = [{"role": "user", "content": "7"}, {"role": "user", "content": "apples"}]
    assert not _shown(Evidence(kind="seen", value="7\napples"), _step("a", model_calls=[_call(request)]))


# -- prefix, response, sampled -------------------------------------------------------------------

def test_prefix_is_the_start_of_the_edited_steps_reply() -> None:
    step = _step(output={"content": "Yes, because"})
    assert _shown(Evidence(kind="prefix", value="Yes,"), step)
    assert _shown(Evidence(kind="prefix", value="  Yes,\n"), step)  # the edit's own spacing is not held against it
    assert not _shown(Evidence(kind="prefix", value="because"), step)
    assert not _shown(Evidence(kind="prefix", value="Yes,"), _step(output={"content": "No"}), step)


def test_response_is_the_content_of_the_numbered_call() -> None:
    step = _step(model_calls=[_call(content="first"), _call(content="second")])
    assert _shown(Evidence(kind="response", value="second", tool="1"), step)
    assert _shown(Evidence(kind="response", value="first"), step)  # no index: the first call
    assert not _shown(Evidence(kind="response", value="first", tool="1"), step)
    assert not _shown(Evidence(kind="response", value="secon", tool="1"), step)
    assert not _shown(Evidence(kind="response", value="second", tool="2"), step)  # no third call
    # a forced empty reply is shown by a response without content
    empty = _step(model_calls=[ModelCallRecord(backend="b", model="m", request=[], response={})])
    assert _shown(Evidence(kind="response", value=""), empty)
    assert not _shown(Evidence(kind="response", value="None"), empty)


def test_sampled_needs_every_call_of_the_step_at_that_temperature_and_seed() -> None:
    hot = _call(temperature=0.7, seed=3)
    assert _shown(Evidence(kind="sampled", value="0.7:3"), _step(model_calls=[hot, hot]))
    assert not _shown(Evidence(kind="sampled", value="0.7:3"), _step(model_calls=[hot, _call(temperature=0.7, seed=4)]))
    assert not _shown(Evidence(kind="sampled", value="0.7:3"), _step(model_calls=[_call(temperature=0.0, seed=3), hot]))
    assert not _shown(Evidence(kind="sampled", value="0.7:3"), _step())  # no call: nothing sampled


# -- tools ----------------------------------------------------------------------------------------

def test_tool_result_needs_that_tool_answering_that_value() -> None:
    step = _step(tool_calls=[ToolCallRecord(name="search", result="1000"), ToolCallRecord(name="lookup", result=999)])
    assert _shown(Evidence(kind="tool_result", value="999", tool="lookup"), step)
    assert not _shown(Evidence(kind="tool_result", value="1000", tool="lookup"), step)
    assert not _shown(Evidence(kind="tool_result", value="999", tool="search"), step)


def test_tool_offered_needs_every_call_to_offer_it_and_withdrawn_none() -> None:
    with_calc, without = _call(tools=["calc", "search"]), _call(tools=["search"])
    offered, withdrawn = Evidence(kind="tool_offered", tool="calc"), Evidence(kind="tool_withdrawn", tool="calc")
    assert _shown(offered, _step(model_calls=[with_calc, with_calc]))
    assert not _shown(offered, _step(model_calls=[with_calc, without]))
    assert _shown(withdrawn, _step(model_calls=[without, without]))
    assert not _shown(withdrawn, _step(model_calls=[without, with_calc]))
    # a step without model calls shows neither: nothing tells what the model was offered
    assert not _shown(offered, _step()) and not _shown(withdrawn, _step())


def test_tools_listed_for_the_text_protocol_count_as_offered() -> None:
    system = {"role": "system", "content": "Answer or CALL <tool name> <json>.\nTools:\n- calc: adds\n- web-search: looks up"}
    call = _call([system, {"role": "user", "content": "- notatool: in a user message"}], tools=["native"])
    assert offered_tools(call) == {"native", "calc", "web-search"}
    # a system message without the protocol's marker lists no tools
    plain = _call([{"role": "system", "content": "Tools:\n- calc: adds"}])
    assert offered_tools(plain) == set()
    # only what follows "Tools:" is read
    before = _call([{"role": "system", "content": "- early: x\nCALL <tool name>\nTools:\n- calc: adds"}])
    assert offered_tools(before) == {"calc"}
    # only the first "Tools:" starts the list: a description may say the word again
    again = _call([{"role": "system", "content": "CALL <tool name>\nTools:\n- calc: see Tools: below\n- web: looks up"}])
    assert offered_tools(again) == {"calc", "web"}
    # no "Tools:" header: every listed line of the message counts, the first one too
    headless = _call([{"role": "system", "content": "- calc: adds\nAnswer or CALL <tool name>."}])
    assert offered_tools(headless) == {"calc"}
    assert offered_tools(_call([{"role": "system"}])) == set()


# -- route and state --------------------------------------------------------------------------------

def test_route_is_the_node_that_ran_next() -> None:
    route = Evidence(kind="route", value="reviewer")
    assert _shown(route, _step("a"), _step("reviewer"), _step("c"))
    assert not _shown(route, _step("a"), _step("c"), _step("reviewer"))
    assert not _shown(route, _step("reviewer"))  # the edited step itself is not "next"
    assert _shown(route, _step("a"), _step("reviewer"))  # the run ended right after it
    end = Evidence(kind="route", value="__end__")
    assert _shown(end, _step("a")) and not _shown(end, _step("a"), _step("b"))


def test_state_evidence_is_the_channel_holding_the_value_at_the_edited_step() -> None:
    states = {"a": {"total": 3, "items": [1, 2]}, "b": {"total": 9}}

    def state_at(step: StepRecord) -> dict[str, Any]:
        return states[step.node]

    evidence = state_evidence("total", 3)
    assert shown(evidence, [_step("a")], state_at)
    assert not shown(evidence, [_step("b"), _step("a")], state_at)  # read at the edited step
    assert not shown(state_evidence("total", 4), [_step("a")], state_at)
    assert not shown(state_evidence("missing", None), [_step("a")], state_at)
    assert shown(state_evidence("items", [1, 2]), [_step("a")], state_at)
    assert not shown(state_evidence("items", [2, 1]), [_step("a")], state_at)
    assert shown(state_evidence("d", {"x": 1, "y": 2}), [_step("d")], lambda _: {"d": {"y": 2, "x": 1}})


# -- the whole check ----------------------------------------------------------------------------------

def test_missing_evidence_names_each_piece_not_shown() -> None:
    step = _step(output={"content": "No"}, tool_calls=[ToolCallRecord(name="lookup", result="1")])
    evidence = [Evidence(kind="prefix", value="Yes"), Evidence(kind="tool_result", value="1", tool="lookup"),
                Evidence(kind="seen", value="the new plan")]
    assert missing_evidence(evidence, [step], _no_state) == ["the reply starting with 'Yes'", "the new plan"]
    assert missing_evidence(evidence[1:2], [step], _no_state) == []


def test_missing_evidence_reads_the_state_through_the_given_lookup() -> None:
    evidence = [state_evidence("total", 3)]
    assert missing_evidence(evidence, [_step("a")], lambda _: {"total": 3}) == []
    assert missing_evidence(evidence, [_step("a")], lambda _: {"total": 4}) == [
        "channel total holding the edited value at the step"
    ]


def test_missing_evidence_with_no_step_after_the_fork() -> None:
    assert missing_evidence([], [], _no_state) == ["the replay recorded no step after the fork"]


def test_an_activation_edit_needs_a_model_call_at_the_edited_step() -> None:
    assert missing_evidence([], [_step(), _step(model_calls=[_call()])], _no_state, activation=True) == [
        "a model call at the edited step"
    ]
    assert missing_evidence([], [_step(model_calls=[_call()])], _no_state, activation=True) == []
    assert missing_evidence([], [_step()], _no_state) == []


@pytest.mark.parametrize(
    ("evidence", "text"),
    [
        (Evidence(kind="prefix", value="Yes"), "the reply starting with 'Yes'"),
        (Evidence(kind="tool_offered", tool="calc"), "tool calc offered to the model"),
        (Evidence(kind="tool_withdrawn", tool="calc"), "tool calc withdrawn from the model"),
        (Evidence(kind="tool_result", tool="calc", value="4"), "a call of calc answered '4'"),
        (Evidence(kind="response", tool="0", value="hi"), "model call 0 answering 'hi'"),
        (Evidence(kind="route", value="b"), "b running next"),
        (Evidence(kind="sampled", value="0.5:1"), "the step's model calls sampled at temperature:seed 0.5:1"),
        (state_evidence("total", 3), "channel total holding the edited value at the step"),
        (Evidence(kind="seen", value="a text"), "a text"),
    ],
)
def test_each_kind_is_described_for_a_person(evidence: Evidence, text: str) -> None:
    assert describe(evidence) == text


def test_a_prompt_change_is_shown_by_a_model_sent_the_new_text_or_no_longer_the_old() -> None:
    changed = Evidence(kind="prompt", value="Report numbers as given.", tool="Multiply by 1000.")
    sent_new = _call([{"role": "system", "content": "You research. Report numbers as given."}])
    sent_old = _call([{"role": "system", "content": "You research. Multiply by 1000."}])
    assert _shown(changed, _step(model_calls=[sent_new]))
    assert not _shown(changed, _step(model_calls=[sent_old]))  # the old prompt went out again
    assert not _shown(changed, _step())  # no model was called: nothing shows the prompt
    removed = Evidence(kind="prompt", value="", tool="Multiply by 1000.")  # a sentence taken out
    assert _shown(removed, _step(model_calls=[_call([{"role": "system", "content": "You research."}])]))
    assert not _shown(removed, _step(model_calls=[sent_old]))
    assert describe(changed) == "a model sent 'Report numbers as given.' in place of 'Multiply by 1000.'"
