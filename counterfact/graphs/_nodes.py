"""Graph nodes that run agents: what an agent sees of the shared state, and what it writes back.

An agent node renders the state into one compact prompt (the task, the transcript so far, the
instruction routed to it), runs the agent (with its tools), and appends its reply as a message
with a stable id. It honours the replay directives aimed at its step: a seed, a forced response
prefix, activation edits, forced or reused tool results, and tools added or taken away.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig

from counterfact.agents import Agent, ChatMessage, Tool
from counterfact.capture import (
    current_directives,
    prompts_rewritten,
    rewrite_prompt,
    step_seed,
    step_temperature,
    tool_changes_for,
    tool_result_for,
)
from counterfact.graphs._state import Route, WorkflowState, agent_message
from counterfact.graphs._tools import TOOLS, task_tools

FINAL_ANSWER = re.compile(r"FINAL ANSWER\s*[:：]\s*(.+)", re.IGNORECASE)
NodeFunction = Callable[[WorkflowState, RunnableConfig], dict[str, Any]]


def final_answer_in(text: str) -> str | None:
    """The answer after `FINAL ANSWER:` on its line, if the text gives one."""
    match = FINAL_ANSWER.search(text)
    return match.group(1).strip().splitlines()[0].strip() if match else None


def transcript(messages: list[AnyMessage], *, skip_first: bool = True) -> str:
    """The conversation as `[speaker] text` lines (the task question, first, is shown apart)."""
    shown = messages[1:] if skip_first else messages
    return "\n".join(f"[{m.name or m.type}] {m.content}" for m in shown)


def default_view(state: WorkflowState, agent: Agent, instruction: str | None) -> list[ChatMessage]:
    """One user message: the task, what was said so far, and this agent's instruction."""
    task = state.get("task", {})
    parts = [f"Task: {task.get('question', '')}"]
    if said := transcript(state.get("messages", [])):
        parts.append(f"Conversation so far:\n{said}")
    if instruction:
        parts.append(f"Instruction for you: {instruction}")
    return [ChatMessage(role="user", content="\n\n".join(parts))]


def run_agent(
    agent: Agent,
    messages: list[ChatMessage],
    *,
    state: WorkflowState | None = None,
    tool_names: Sequence[str] = (),
) -> str:
    """Run `agent` on `messages` under the directives aimed at the current step.

    `tool_names` are tools made for the task in `state` (see `_tools.TOOLS`), on top of the
    agent's own; a replay may add or remove tools from a step on, and force a tool's result.
    """
    _, here = current_directives()
    task = (state or {}).get("task", {})
    settings = agent.settings.model_copy()
    if (seed := step_seed()) is not None:
        settings.seed = seed
    if (temperature := step_temperature()) is not None:
        settings.temperature = temperature
    tools = {t.name: t for t in [*agent.tools, *task_tools(list(tool_names), task)]}
    for change in tool_changes_for(agent.name):
        if change.action == "remove":
            tools.pop(change.tool, None)
        elif change.tool in TOOLS:
            tools[change.tool] = TOOLS[change.tool](task)
    if prompts_rewritten():  # a replay's prompt changes: in the agent's instructions and its tools' descriptions
        tools = {n: t.model_copy(update={"description": rewrite_prompt(t.description)}) for n, t in tools.items()}
        agent = agent.model_copy(update={"role": rewrite_prompt(agent.role)})
    step_tools = [_answering_from_replay(tool) for tool in tools.values()]
    if here is not None and here.reply is not None:
        return here.reply  # an edited message stands in for the agent's whole turn
    runner = agent.model_copy(update={"settings": settings, "tools": step_tools})
    if here is not None and here.instruction:
        messages = _with_note(messages, here.instruction)
    prefix = here.prefix if here is not None and here.prefix else None
    if prefix:
        messages = [*messages, ChatMessage(role="assistant", content=prefix)]
    edits = here.activation_edits if here is not None and here.activation_edits else None
    text = runner.respond(messages, activation_edits=edits).text
    if prefix and not text.startswith(prefix):
        text = prefix + text  # the model continued the prefix; the reply is both
    return text


def _with_note(messages: list[ChatMessage], note: str) -> list[ChatMessage]:
    """`messages` with `note` added to the last user turn, where the agent reads its task (a
    second user turn in a row confuses small models' chat templates less than it helps)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        return [*messages, ChatMessage(role="user", content=note)]
    turn = messages[last]
    return [*messages[:last], turn.model_copy(update={"content": f"{turn.content}\n\nNote: {note}"}), *messages[last + 1 :]]


def _answering_from_replay(tool: Tool) -> Tool:
    """`tool`, answering from a result the replay forces or reuses, else live."""

    def answer(arguments: Any) -> Any:
        given, result = tool_result_for(tool.name, arguments.model_dump())
        return result if given else tool.function(arguments)

    return tool.model_copy(update={"function": answer})


def agent_node(
    agent: Agent,
    *,
    tool_names: Sequence[str] = (),
    examples: Sequence[ChatMessage] = (),
    view: Callable[..., list[ChatMessage]] = default_view,
) -> NodeFunction:
    """A node where `agent` takes its turn; the route's instruction reaches it if addressed.

    `examples` are few-shot turns shown before the task: small models imitate a worked
    exchange far more reliably than they follow an instruction.
    """

    def node(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        route = Route.model_validate(state["route"]) if state.get("route") else None
        instruction = route.instruction if route and route.next == agent.name else None
        messages = [*examples, *view(state, agent, instruction)]
        text = run_agent(agent, messages, state=state, tool_names=tool_names)
        update: dict[str, Any] = {"messages": [agent_message(agent.name, text)]}
        if (answer := final_answer_in(text)) is not None:
            update["final_answer"] = answer
        return update

    return node
