"""Make the AutoGen transcripts under tests/formats/data with AutoGen itself, offline.

Two real team runs on `ReplayChatCompletionClient` (scripted model replies, no network): a
RoundRobinGroupChat of a planner and a tool-using coder, and a MagenticOneGroupChat whose
orchestrator plans, routes and ends. Each run's TaskResult is saved as AutoGen dumps it
(`model_dump(mode="json")`). Run with AutoGen installed (`pip install autogen-agentchat
autogen-ext`); the tests read the saved files and need no AutoGen.

    python tests/formats/data/make_autogen.py
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import MagenticOneGroupChat, RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

HERE = Path(__file__).parent
TOOLS = ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def round_robin() -> dict[str, object]:
    """A planner and a coder: the coder calls its tool and gets the wrong sum reported."""
    planner = AssistantAgent("planner", model_client=ReplayChatCompletionClient([
        "Plan: the coder adds 17 and 25 with the add tool, then reports the sum.",
        "The coder says 43. Final answer: 43. TERMINATE",
    ]), system_message="You plan; the coder computes.")
    call = CreateResult(finish_reason="function_calls", cached=False, usage=RequestUsage(prompt_tokens=41, completion_tokens=12),
                        content=[FunctionCall(id="call_1", name="add", arguments=json.dumps({"a": 17, "b": 25}))])
    coder = AssistantAgent("coder", model_client=ReplayChatCompletionClient([call, "The sum is 43."], model_info=TOOLS), tools=[add],
                           reflect_on_tool_use=True, system_message="You compute with tools.")
    team = RoundRobinGroupChat([planner, coder], termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(10))
    result = await team.run(task="What is 17 + 25?")
    return result.model_dump(mode="json")


def ledger(satisfied: bool, speaker: str, instruction: str) -> str:
    """One progress ledger as Magentic-One's orchestrator asks its model for it."""
    def answer(value: object) -> dict[str, object]:
        return {"reason": "scripted", "answer": value}
    return json.dumps({"is_request_satisfied": answer(satisfied), "is_in_loop": answer(False),
                       "is_progress_being_made": answer(True), "next_speaker": answer(speaker),
                       "instruction_or_question": answer(instruction)})


async def magentic_one() -> dict[str, object]:
    """Magentic-One's orchestrator with one assistant: facts, plan, a routed turn, the answer."""
    orchestrator = ReplayChatCompletionClient([
        "1. GIVEN OR VERIFIED FACTS\n- The request asks for the capital of Australia.",
        "- Ask the assistant for the capital.\n- Report it.",
        ledger(False, "assistant", "Name the capital of Australia."),
        ledger(True, "assistant", "Nothing more."),
        "The capital of Australia is Sydney.",
    ])
    assistant = AssistantAgent("assistant", model_client=ReplayChatCompletionClient(["The capital of Australia is Sydney."]),
                               description="A helpful assistant that answers questions.")
    team = MagenticOneGroupChat([assistant], model_client=orchestrator, max_turns=6)
    result = await team.run(task="What is the capital of Australia?")
    return result.model_dump(mode="json")


def main() -> None:
    for name, make in (("autogen_round_robin.json", round_robin), ("autogen_magentic_one.json", magentic_one)):
        (HERE / name).write_text(json.dumps(asyncio.run(make()), indent=1) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
