"""Tools: the safe calculator, the lookup table, OpenAI specs, the text protocol and recording."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

from counterfact.agents import (
    Tool,
    ToolError,
    calculate,
    calculator_tool,
    format_text_results,
    lookup_tool,
    parse_text_calls,
    text_protocol_prompt,
)
from counterfact.capture import collect_calls


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2+3", 5),
        (" (2 + 3) * 4 ", 20),
        ("7/2", 3.5),
        ("8/2", 4),
        ("7//2", 3),
        ("-7 % 3", 2),
        ("2**10", 1024),
        ("2**-1", 0.5),
        ("-(3 - 5)", 2),
        ("0.1 + 0.2", 0.3),
        ("10**100", 10**100),
    ],
)
def test_calculator_arithmetic(expression: str, expected: float) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "unsupported syntax"),
        ("().__class__", "unsupported syntax"),
        ("9**9**9", "too large"),
        ("'a'*10**9", "only numbers"),
        ("10**101", "too large"),
        ("(10**60)*(10**60)", "too large"),
        ("1e400 - 1", "not finite"),
        ("(-8)**0.5", "not a real number"),
        ("1/0", "division by zero"),
        ("0**-1", "division by zero"),
        ("x + 1", "unsupported syntax"),
        ("True + 1", "only numbers"),
        ("[1][0]", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("1 < 2", "unsupported syntax"),
        ("2 +", "not an arithmetic expression"),
        ("1" * 600, "too long"),
    ],
)
def test_calculator_rejects_hostile_or_invalid_input(expression: str, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError, match=message):
        calculate(expression)
    assert time.monotonic() - start < 1


def test_calculator_tool_records_results_and_errors_without_raising() -> None:
    tool = calculator_tool()
    with collect_calls() as calls:
        good = tool.run({"expression": "6*7"})
        bad = tool.run({"expression": "__import__('os').system('true')"})
        invalid = tool.run({"expr": "1"})
    assert good.result == 42 and good.error is None
    assert bad.result is None and "unsupported syntax" in (bad.error or "")
    assert invalid.error is not None and "expression" in invalid.error
    # the step's copy also says when each call started
    assert [c.model_copy(update={"offset_ms": None}) for c in calls.tool_calls] == [good, bad, invalid]
    assert all(c.offset_ms is not None for c in calls.tool_calls)


def test_raising_tool_is_an_error_result() -> None:
    class Args(BaseModel):
        n: int

    def explode(args: Args) -> int:
        raise RuntimeError(f"boom {args.n}")

    record = Tool(name="explode", description="d", arguments=Args, function=explode).run({"n": 3})
    assert record.error == "RuntimeError: boom 3"
    assert format_text_results([record]) == "RESULT explode: error: RuntimeError: boom 3"


def test_spec_has_the_arguments_json_schema() -> None:
    spec = calculator_tool().spec()
    assert spec["type"] == "function"
    function = spec["function"]
    assert function["name"] == "calculator"
    assert function["parameters"]["properties"]["expression"]["type"] == "string"
    assert function["parameters"]["required"] == ["expression"]


def test_lookup_matches_keys_ignoring_case_and_whitespace() -> None:
    tool = lookup_tool({"Capital of France": "Paris", "boiling point": "100 C"})
    assert tool.run({"key": "  capital   OF france "}).result == "Paris"
    missing = tool.run({"key": "Mars"})
    assert missing.result is None
    assert missing.error == "no entry for 'Mars'; known keys: Capital of France, boiling point"


def test_text_protocol_parses_leniently() -> None:
    tools = [calculator_tool(), lookup_tool({"a": "b"})]
    text = "\n".join(
        [
            "Let me compute.",
            'CALL calculator {"expression": "2+3"}',
            "  `call: Lookup {'key': 'a'}`",
            "CALL calculator(12*7)",
            'CALL weather {"city": "Paris"}',
            "I will CALL calculator later",
        ]
    )
    calls = parse_text_calls(text, tools)
    assert [(c.name, c.arguments) for c in calls] == [
        ("calculator", {"expression": "2+3"}),
        ("lookup", {"key": "a"}),
        ("calculator", {"expression": "12*7"}),
    ]
    assert len({c.id for c in calls}) == 3


def test_text_protocol_prompt_names_every_tool_and_the_format() -> None:
    prompt = text_protocol_prompt([calculator_tool(), lookup_tool({})])
    assert "CALL <tool name>" in prompt and "RESULT <tool name>" in prompt
    assert "- calculator: " in prompt and '"expression": <str>' in prompt
    assert "- lookup: " in prompt and '"key": <str>' in prompt


def test_text_protocol_drops_text_after_the_arguments_object() -> None:
    class Town(BaseModel):
        town: str

    class Pair(BaseModel):
        a: int
        b: int

    tools = [
        Tool(name="population", description="d", arguments=Town, function=lambda args: 1),
        Tool(name="add", description="d", arguments=Pair, function=lambda args: args.a + args.b),
        calculator_tool(),
    ]
    text = "\n".join(
        [
            'CALL population {"town": "Corfe"} and then I will add them',
            'CALL add {"a": 1, "b": 2}. Done.',
            "CALL add {'a': 3, 'b': 4} next, the {other} one",
            'CALL add({"a": 5, "b": 6}) to be sure',
            '`CALL calculator {"expression": "(1+2)*3"}` gives the product',
            'CALL population {"town": "Corfe {castle}"}',
        ]
    )
    assert [(c.name, c.arguments) for c in parse_text_calls(text, tools)] == [
        ("population", {"town": "Corfe"}),
        ("add", {"a": 1, "b": 2}),
        ("add", {"a": 3, "b": 4}),
        ("add", {"a": 5, "b": 6}),
        ("calculator", {"expression": "(1+2)*3"}),
        ("population", {"town": "Corfe {castle}"}),
    ]
