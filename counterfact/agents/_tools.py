"""Tools agents can call, their OpenAI specs, a text protocol for small models, and built-ins.

A `Tool` has a name, a description and a pydantic model of its arguments. Remote models get the
OpenAI tool spec (`Tool.spec()`, a JSON schema made from that model) and answer with native tool
calls. Small local models cannot emit those, so they use a text protocol instead:

Text protocol
    To call a tool the model writes one line per call::

        CALL <tool name> <JSON object of arguments>

    for example ``CALL calculator {"expression": "2+3"}``. The parser is lenient: ``CALL`` is
    case-insensitive and may be followed by a colon, the line may be indented or wrapped in
    backticks, the arguments may be in parentheses, may use Python-style single quotes, and, for a
    tool with exactly one argument, may be given bare (``CALL calculator 2+3``). Text after the
    arguments object is not part of the call (``CALL add {"a": 1, "b": 2}. Done.``). Lines naming
    an unknown tool are ignored. Each result comes back to the model in a user message, one line per
    call: ``RESULT <tool name>: <result>`` (or ``RESULT <tool name>: error: <message>``).
    `text_protocol_prompt(tools)` returns the instructions that teach this protocol.

Running a tool (`Tool.run`) reports a `ToolCallRecord` to the trace recorder. A tool that raises is
recorded with its error and the error text goes back to the model, so one bad call does not end a
run.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from counterfact._errors import validation_message
from counterfact.agents._types import ToolCall
from counterfact.capture import ToolCallRecord, report_tool_call


class Tool(BaseModel):
    """A named function with typed arguments; `function` receives the validated arguments model."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    description: str
    arguments: type[BaseModel] = Field(exclude=True)
    function: Callable[[Any], Any] = Field(exclude=True, repr=False)

    def spec(self) -> dict[str, Any]:
        """The OpenAI tool spec, with the arguments model's JSON schema as parameters."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.arguments.model_json_schema(),
            },
        }

    def run(self, arguments: dict[str, Any]) -> ToolCallRecord:
        """Validate `arguments`, call the tool, report the call; a failure becomes its `error`."""
        start = time.perf_counter()
        result: Any = None
        error: str | None = None
        try:
            result = self.function(self.arguments.model_validate(arguments))
        except ValidationError as exc:
            error = f"invalid arguments for {self.name}: {validation_message(exc, arguments, every=True)}"
        except Exception as exc:  # a tool's failure is data for the model, not a crash
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ToolError) else str(exc)
        record = ToolCallRecord(
            name=self.name,
            arguments=arguments,
            result=result,
            error=error,
            latency_ms=(time.perf_counter() - start) * 1000,
        )
        report_tool_call(record, start)
        return record


class ToolError(Exception):
    """A tool's own, user-facing failure; its message is shown to the model as is."""


def result_text(record: ToolCallRecord) -> str:
    """The text a model sees for a tool call's outcome."""
    if record.error is not None:
        return f"error: {record.error}"
    if isinstance(record.result, str):
        return record.result
    return json.dumps(record.result, default=str)


# --- text protocol ----------------------------------------------------------------------------

_CALL_LINE = re.compile(
    r"^[\s`>*-]*CALL\s*:?\s*([A-Za-z_][A-Za-z0-9_-]*)\s*(.*?)[\s`]*$", re.IGNORECASE
)


def text_protocol_prompt(tools: list[Tool]) -> str:
    """Instructions that teach a model the text protocol for `tools`."""
    return _protocol_prompt(
        [
            (t.name, t.description, {n: _type_name(i.annotation) for n, i in t.arguments.model_fields.items()})
            for t in tools
        ]
    )


def spec_protocol_prompt(specs: list[dict[str, Any]]) -> str:
    """The text protocol for OpenAI-format tool specs (for models whose chat template has no
    place for tools)."""
    functions = [spec.get("function", spec) for spec in specs]
    return _protocol_prompt(
        [
            (
                str(f.get("name")),
                str(f.get("description", "")),
                {n: str(p.get("type", "any")) for n, p in f.get("parameters", {}).get("properties", {}).items()},
            )
            for f in functions
        ]
    )


def _protocol_prompt(tools: list[tuple[str, str, dict[str, str]]]) -> str:
    lines = [
        "You can use tools. To call a tool, write a line of the form:",
        'CALL <tool name> {"<argument>": <value>}',
        "and stop. The result comes back in a line: RESULT <tool name>: <result>.",
        "When you have what you need, answer without a CALL line.",
        "Tools:",
    ]
    for name, description, fields in tools:
        arguments = ", ".join(f'"{field}": <{kind}>' for field, kind in fields.items())
        lines.append(f"- {name}: {description} Arguments: {{{arguments}}}")
    if tools and tools[0][0] == "calculator":
        lines.append('Example: CALL calculator {"expression": "12*7"}')
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def parse_text_calls(text: str, tools: list[Tool]) -> list[ToolCall]:
    """The tool calls written in `text` with the text protocol; unknown tools are skipped."""
    return _parse_calls(text, {t.name: list(t.arguments.model_fields) for t in tools})


def parse_spec_calls(text: str, specs: list[dict[str, Any]]) -> list[ToolCall]:
    """`parse_text_calls` for OpenAI-format tool specs."""
    functions = [spec.get("function", spec) for spec in specs]
    return _parse_calls(text, {str(f.get("name")): list(f.get("parameters", {}).get("properties", {})) for f in functions})


def _parse_calls(text: str, fields: dict[str, list[str]]) -> list[ToolCall]:
    by_name = {name.lower(): name for name in fields}
    calls: list[ToolCall] = []
    for line in text.splitlines():
        match = _CALL_LINE.match(line)
        if match is None or (name := by_name.get(match.group(1).lower())) is None:
            continue
        calls.append(
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:12]}",
                name=name,
                arguments=_parse_text_arguments(match.group(2), fields[name]),
            )
        )
    return calls


def _parse_text_arguments(raw: str, fields: list[str]) -> dict[str, Any]:
    """Parse the arguments part of a CALL line as leniently as is still unambiguous."""
    raw = raw.strip()
    if raw.startswith("(") and raw.endswith(")"):
        raw = raw[1:-1].strip()
    # models often go on writing after the call: the leading object is the arguments, the rest not
    if (leading := _leading_object(raw.removeprefix("(").lstrip())) is not None:
        return leading
    if len(fields) == 1:
        return {fields[0]: raw.strip("\"'")}
    return {"_unparsed": raw}


_JSON = json.JSONDecoder()


def _leading_object(text: str) -> dict[str, Any] | None:
    """The JSON (or Python-style) object `text` starts with, whatever text follows it."""
    if not text.startswith("{"):
        return None
    try:
        value, _ = _JSON.raw_decode(text)
    except ValueError:  # not JSON: a Python-style object, up to the brace that closes it
        end = _object_end(text)
        try:
            value = ast.literal_eval(text[:end]) if end is not None else None
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


def _object_end(text: str) -> int | None:
    """The index just past the brace that closes the one `text` starts with, skipping braces
    inside quoted strings; None if it is never closed."""
    depth, quote, escaped = 0, "", False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def format_text_results(records: list[ToolCallRecord]) -> str:
    """The user message that returns tool results in the text protocol."""
    return "\n".join(f"RESULT {r.name}: {result_text(r)}" for r in records)


# --- calculator -------------------------------------------------------------------------------

_MAX_EXPRESSION_CHARS = 500
_MAX_MAGNITUDE = 10**100
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic by walking its syntax tree: numbers, + - * / // % **, unary +/-, ().

    No names, calls, attributes, strings or other syntax are accepted, and results beyond 1e100
    are refused before they are computed, so hostile input cannot run code or exhaust memory.
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long (over {_MAX_EXPRESSION_CHARS} characters)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float):
            return _checked(node.value)
        raise ToolError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
    raise ToolError(f"unsupported syntax in arithmetic: {ast.unparse(node)!r}")


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse powers whose result would exceed the magnitude limit, before computing them."""
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > 100:
        raise ToolError("result too large (over 1e100)")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")


def _checked(value: object) -> int | float:
    """The value if it is a finite real number within the magnitude limit."""
    if not isinstance(value, int | float):
        raise ToolError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("result is not finite")
    if abs(value) > _MAX_MAGNITUDE:
        raise ToolError("result too large (over 1e100)")
    return value


class CalculatorArguments(BaseModel):
    expression: str = Field(description="An arithmetic expression, for example '(2+3)*4'.")


def calculator_tool() -> Tool:
    """The built-in calculator tool."""
    return Tool(
        name="calculator",
        description="Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
        arguments=CalculatorArguments,
        function=lambda args: calculate(args.expression),
    )


# --- lookup -----------------------------------------------------------------------------------


class LookupArguments(BaseModel):
    key: str = Field(description="The name of the entry to look up.")


def _normalise_key(key: str) -> str:
    return " ".join(key.split()).casefold()


def lookup_tool(table: Mapping[str, str], *, description: str | None = None) -> Tool:
    """A key-value lookup over `table`; keys match ignoring case and extra whitespace."""
    entries = {_normalise_key(key): value for key, value in table.items()}
    known = ", ".join(sorted(table))

    def lookup(args: LookupArguments) -> str:
        value = entries.get(_normalise_key(args.key))
        if value is None:  # an error, so the trace marks the call as failed
            raise ToolError(f"no entry for {args.key!r}; known keys: {known}")
        return value

    return Tool(
        name="lookup",
        description=description or "Look up a fact by its key in the task's knowledge table.",
        arguments=LookupArguments,
        function=lookup,
    )
