"""What the four multi-agent apps share: the town questions, the two workers' tools, the
check, the default chat model, and a deterministic test double that plays every role.

The domain is examples/town_agent's ("What is the population of Lowmoor plus Glenlyn?"),
split between two workers: a `researcher` with the `population` tool and a `math_expert`
with the `add` tool. Nothing here knows about counterfact except `chat_model()`'s default,
which imports `ChatCounterfact` only when it is asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from examples.town_agent.app import TOWNS, add, population

__all__ = [
    "EXAMPLE_QUESTION", "EXAMPLE_REPORT", "QUESTIONS", "TOOLS", "TOWNS", "Example", "ScriptedTeamModel", "Tools",
    "add", "chat_model", "correct", "population", "towns_in", "with_example",
]

QUESTIONS = [
    "What is the population of Lowmoor plus Glenlyn?",
    "What is the population of Brindle plus Ashby?",
    "What is the population of Wexham plus Corfe?",
    "What is the population of Glenlyn plus Brindle?",
    "What is the population of Ashby plus Lowmoor?",
    "What is the population of Corfe plus Glenlyn?",
    "What is the population of Ashby plus Corfe plus Wexham?",
]

MAX_TOKENS = 96  # enough for one tool call or one short answer

Tools = Mapping[str, BaseTool]
TOOLS: Tools = {"population": population, "add": add}  # the workers' tools, by name: an app takes others in their place


def chat_model() -> BaseChatModel:
    """The model the apps run on unless given one. COUNTERFACT_EXAMPLE_MODEL picks it:
    `embedded` (the default) is counterfact's embedded model in this process; any other value
    is a model name on an OpenAI-compatible server (OPENAI_BASE_URL, e.g. `counterfact
    serve`). COUNTERFACT_EXAMPLE_TEMPERATURE (default 0, greedy) samples instead, so repeated
    runs differ. Construction is cheap: nothing is loaded or contacted until the first call."""
    name = os.environ.get("COUNTERFACT_EXAMPLE_MODEL", "embedded")
    temperature = float(os.environ.get("COUNTERFACT_EXAMPLE_TEMPERATURE", "0"))
    if name == "embedded":
        from counterfact.agents import ChatCounterfact

        return ChatCounterfact(model="embedded", temperature=temperature, max_tokens=MAX_TOKENS)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=name,
        base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed-for-a-local-server"),
        temperature=temperature,
        max_tokens=MAX_TOKENS,
        max_retries=0,
    )


def towns_in(question: str) -> list[str]:
    """The towns a question names, in the order it names them (lower case)."""
    text = question.lower()
    return sorted((t for t in TOWNS if t in text), key=text.find)


def _conversation(messages: Sequence[BaseMessage]) -> tuple[str, Sequence[BaseMessage]]:
    """The question (the last user message: a worked example's comes before it) and the
    messages from it on."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if start is None:
        return "", []
    return str(messages[start].content), messages[start:]


def correct(state: dict[str, Any]) -> bool:
    """The check: the last AI message states the sum of the populations the question names
    (its last number)."""
    messages = state.get("messages") or []
    towns = towns_in(_conversation(messages)[0])
    last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    if not towns or last is None:
        return False
    numbers = re.findall(r"-?\d+(?:\.\d+)?", str(last.content).replace(",", ""))
    return bool(numbers) and float(numbers[-1]) == sum(TOWNS[t] for t in towns)


# --- worked examples ---------------------------------------------------------------------------
# Small models (the embedded SmolLM2-135M) follow a worked exchange far better than an
# instruction, so each agent's prompt is its instruction and then an exchange on another
# question, in the shape of the messages that agent will see.

EXAMPLE_QUESTION = "What is the population of Ashby plus Corfe?"
EXAMPLE_REPORT = "The population of Ashby is 1200. The population of Corfe is 340."


class Example:
    """A worked exchange on EXAMPLE_QUESTION, built one message at a time (`name` is the agent
    that writes an AI message, as multi-agent libraries set it)."""

    def __init__(self) -> None:
        self.messages: list[BaseMessage] = [HumanMessage(EXAMPLE_QUESTION)]

    def call(
        self, tool: str, result: str, *, name: str | None = None, text: str = "", **args: Any
    ) -> Example:
        """An AI message calling `tool` with `args`, and the tool's `result`."""
        call_id = f"example_{len(self.messages)}"
        call = ToolCall(name=tool, args=args, id=call_id)
        self.messages.append(AIMessage(text, name=name, tool_calls=[call]))
        self.messages.append(ToolMessage(result, name=tool, tool_call_id=call_id))
        return self

    def say(self, text: str, *, name: str | None = None) -> Example:
        """An AI message saying `text`."""
        self.messages.append(AIMessage(text, name=name))
        return self

    def look_up(self, name: str = "researcher") -> Example:
        """The researcher's lookups of both towns."""
        self.call("population", "1200", name=name, town="Ashby")
        return self.call("population", "340", name=name, town="Corfe")

    def add_up(self, name: str = "math_expert") -> Example:
        """The math expert's addition."""
        return self.call("add", "1540.0", name=name, a=1200, b=340)

    def transfer(self, agent: str, *, by: str = "supervisor", result: str | None = None) -> Example:
        """`by` hands the conversation to `agent` with its `transfer_to_<agent>` tool."""
        return self.call(f"transfer_to_{agent}", result or f"Successfully transferred to {agent}", name=by)

    def hand_back(self, agent: str, supervisor: str = "supervisor") -> Example:
        """The pair langgraph-supervisor adds when `agent` returns to its supervisor."""
        return self.call(f"transfer_back_to_{supervisor}", f"Successfully transferred back to {supervisor}",
                         name=agent, text=f"Transferring back to {supervisor}")


def with_example(
    instruction: str, example: Example | Sequence[BaseMessage]
) -> Callable[[dict[str, Any]], list[BaseMessage]]:
    """An agent's prompt: its instruction, the worked exchange, then the conversation."""
    head = [SystemMessage(instruction), *(example.messages if isinstance(example, Example) else example)]

    def prompt(state: dict[str, Any]) -> list[BaseMessage]:
        return [*head, *state["messages"]]

    return prompt


# --- a deterministic test double ------------------------------------------------------------

_POPULATION_TEXT = re.compile(r"population of ([A-Za-z]+) is (-?\d+(?:\.\d+)?)", re.IGNORECASE)
_TOTAL_TEXT = re.compile(r"\b(?:sum|answer) is (-?\d+(?:\.\d+)?)", re.IGNORECASE)


def _number(text: Any) -> float | None:
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def _plain(value: float) -> int | float:
    """A whole number as an int (790, not 790.0), in tool arguments and sentences."""
    return int(value) if value.is_integer() else value


def _shown(value: float) -> str:
    return str(_plain(value))


@dataclass
class _Facts:
    """What a conversation has established so far, read from tool results and from the
    workers' reports (a supervisor only sees the reports)."""

    towns: list[str]
    populations: dict[str, float] = field(default_factory=dict)
    sums: list[float] = field(default_factory=list)  # `add` results, in order
    stated_total: float | None = None  # "the sum is N" / "the answer is N" in a message

    @property
    def missing(self) -> list[str]:
        return [t for t in self.towns if t not in self.populations]

    @property
    def total(self) -> float | None:
        if self.missing or not self.towns:
            return None
        if len(self.towns) == 1:
            return self.populations[self.towns[0]]
        if self.stated_total is not None:
            return self.stated_total
        return self.sums[-1] if len(self.sums) >= len(self.towns) - 1 else None

    def report(self) -> str:
        """The populations found, one sentence each, and the sum when known."""
        parts = [f"The population of {t.title()} is {_shown(self.populations[t])}." for t in self.towns
                 if t in self.populations]
        if (total := self.total) is not None and len(self.towns) > 1:
            parts.append(f"The sum is {_shown(total)}.")
        return " ".join(parts) or "I found nothing yet."


def _facts(messages: Sequence[BaseMessage]) -> _Facts:
    question, messages = _conversation(messages)
    facts = _Facts(towns_in(question))
    calls = {c["id"]: c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    for message in messages:
        if isinstance(message, ToolMessage) and message.status != "error":
            value, call = _number(message.content), calls.get(message.tool_call_id)
            if value is None:
                continue
            if message.name == "population" and call is not None:
                facts.populations[str(call["args"].get("town", "")).strip().lower()] = value
            elif message.name == "add":
                facts.sums.append(value)
        elif isinstance(message, AIMessage):
            text = str(message.content)
            for town, value in _POPULATION_TEXT.findall(text):
                facts.populations[town.lower()] = float(value)
            if totals := _TOTAL_TEXT.findall(text):
                facts.stated_total = float(totals[-1])
    return facts


class ScriptedTeamModel(BaseChatModel):
    """A deterministic stand-in for the LLM that plays whichever role it is asked to, by rule
    from the tools it is offered and the conversation, so the apps run in tests without a model:

    - offered `population` while a town's population is missing: looks it up (one call a turn);
    - offered `add` once the populations are known: adds them (chained, one call a turn);
    - otherwise offered a `transfer_to_*` tool for the work still missing (a name with
      "research" or "math" in it): hands off to it;
    - otherwise offered some other `transfer_to_*` tool (back to a coordinator): hands back;
    - otherwise replies: a worker with no handoff tools reports what it found ("The population
      of X is N." / "The sum is N."), anyone else says "The answer is N." when the work is done
      and reports what is known when it is not (a team supervisor whose team is done).

    Tool call ids come from a counter (`call_1`, `call_2`, ...), so a fresh model gives the
    same trace every time.
    """

    temperature: float = 0.0  # it answers a conversation one way only, as greedy decoding does (traces say so)
    _calls: int = PrivateAttr(default=0)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @property
    def _llm_type(self) -> str:
        return "scripted-team-test-double"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, BaseMessage]:
        """Offers `tools` (their OpenAI schemas reach `_generate` as `tools`)."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        offered = [t["function"]["name"] for t in kwargs.get("tools") or []]
        reply = self._reply(_facts(messages), offered)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _call(self, name: str, args: dict[str, Any]) -> AIMessage:
        self._calls += 1
        return AIMessage("", tool_calls=[ToolCall(name=name, args=args, id=f"call_{self._calls}")])

    def _reply(self, facts: _Facts, offered: list[str]) -> AIMessage:
        need = "research" if facts.missing else ("math" if facts.total is None and facts.towns else None)
        if need == "research" and "population" in offered:
            return self._call("population", {"town": facts.missing[0].title()})
        if need == "math" and "add" in offered:
            values = [facts.populations[t] for t in facts.towns]
            first = facts.sums[-1] if facts.sums else values[0]
            second = values[len(facts.sums) + 1]
            return self._call("add", {"a": _plain(first), "b": _plain(second)})
        transfers = [name for name in offered if name.startswith("transfer_")]
        forward = [name for name in transfers if need and need in name]
        if forward:
            return self._call(forward[0], {})
        back = [name for name in transfers if "research" not in name and "math" not in name]
        if back:
            return self._call(back[0], {})
        if not transfers and "add" in offered:
            total = facts.total
            return AIMessage("I need the populations first." if total is None
                             else f"The sum is {_shown(total)}.")
        if not transfers and "population" in offered:
            return AIMessage(facts.report())
        if need is None and (total := facts.total) is not None:
            return AIMessage(f"The answer is {_shown(total)}.")
        return AIMessage(facts.report())
