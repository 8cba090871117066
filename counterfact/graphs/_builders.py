"""Workflow topologies as LangGraph StateGraphs: pipeline, orchestrator, group chat.

Each builder returns an uncompiled `StateGraph` over `WorkflowState` whose nodes carry
counterfact metadata (agent, step kind); `counterfact.graphs.record` compiles and records it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from counterfact.agents import Agent, ChatMessage
from counterfact.graphs._nodes import agent_node, final_answer_in, run_agent, transcript
from counterfact.graphs._recorder import NODE_METADATA_KEY
from counterfact.graphs._state import (
    Plan,
    PlanStep,
    Route,
    WorkflowState,
    agent_message,
)


def _meta(agent: str, kind: str) -> dict[str, Any]:
    return {NODE_METADATA_KEY: {"agent": agent, "kind": kind}}


def _check_names(agents: Sequence[Agent]) -> None:
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agent names must be unique, got {names}")
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise ValueError(f"agent name {name!r} must be a plain identifier")


# -- pipeline ---------------------------------------------------------------------------------


ToolNames = Mapping[str, Sequence[str]]  # agent name -> names of task tools (see _tools)
Examples = Mapping[str, Sequence[ChatMessage]]  # agent name -> few-shot turns


def _worker_node(agent: Agent, tools: ToolNames | None, examples: Examples | None) -> Any:
    return agent_node(
        agent,
        tool_names=(tools or {}).get(agent.name, ()),
        examples=(examples or {}).get(agent.name, ()),
    )


def pipeline(
    agents: Sequence[Agent], *, tools: ToolNames | None = None, examples: Examples | None = None
) -> StateGraph:
    """Agents in sequence, each seeing everything said before it."""
    if not agents:
        raise ValueError("a pipeline needs at least one agent")
    _check_names(agents)
    graph = StateGraph(WorkflowState)
    previous = START
    for agent in agents:
        graph.add_node(
            agent.name, _worker_node(agent, tools, examples), metadata=_meta(agent.name, "agent")
        )
        graph.add_edge(previous, agent.name)
        previous = agent.name
    graph.add_edge(previous, END)
    return graph


# -- group chat -------------------------------------------------------------------------------

SELECTOR = "selector"


def group_chat(
    agents: Sequence[Agent],
    *,
    max_rounds: int = 6,
    selector: Agent | None = None,
    tools: ToolNames | None = None,
    examples: Examples | None = None,
) -> StateGraph:
    """Agents take turns (round robin, or as a selector agent picks) until one gives a final
    answer or the round limit is reached."""
    if not agents:
        raise ValueError("a group chat needs at least one agent")
    _check_names([*agents, *([selector] if selector else [])])
    names = [a.name for a in agents]
    graph = StateGraph(WorkflowState)
    for agent in agents:
        node = _counted(_worker_node(agent, tools, examples))
        graph.add_node(agent.name, node, metadata=_meta(agent.name, "agent"))

    def next_speaker(state: WorkflowState) -> str:
        if state.get("final_answer") is not None or state.get("round", 0) >= max_rounds:
            return END
        if selector is not None:
            return SELECTOR
        return names[state.get("round", 0) % len(names)]

    if selector is not None:

        def select(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
            prompt = (
                f"Task: {state.get('task', {}).get('question', '')}\n\n"
                f"Conversation so far:\n{transcript(state.get('messages', []))}\n\n"
                f"Who should speak next? Answer with one name from: {', '.join(names)}."
            )
            text = run_agent(selector, [ChatMessage(role="user", content=prompt)])
            chosen = _first_name(text, names) or names[state.get("round", 0) % len(names)]
            return {"route": Route(next=chosen).model_dump()}

        graph.add_node(SELECTOR, select, metadata=_meta(selector.name, "router"))
        graph.add_conditional_edges(
            SELECTOR, lambda s: Route.model_validate(s["route"]).next, names
        )
        graph.add_edge(START, SELECTOR)
        targets = [SELECTOR, END]
    else:
        graph.add_edge(START, names[0])
        targets = [*names, END]
    for name in names:
        graph.add_conditional_edges(name, next_speaker, targets)
    return graph


def _counted(node: Any) -> Any:
    """A node that also advances the round counter."""

    def counted(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        return {**node(state, config), "round": state.get("round", 0) + 1}

    return counted


def _first_name(text: str, names: Sequence[str]) -> str | None:
    """The first of `names` mentioned in `text` (case-insensitive)."""
    found = [(m.start(), n) for n in names if (m := re.search(re.escape(n), text, re.IGNORECASE))]
    return min(found)[1] if found else None


# -- orchestrator -------------------------------------------------------------------------------

PLAN, ROUTE, FINAL = "plan", "route", "final"


def orchestrator(
    lead: Agent,
    workers: Sequence[Agent],
    *,
    max_rounds: int = 8,
    stall_limit: int = 2,
    max_replans: int = 1,
    tools: ToolNames | None = None,
    examples: Examples | None = None,
) -> StateGraph:
    """Magentic-One style: the lead writes a plan and ledger, then each round picks the next
    worker and its instruction, marks progress, re-plans when stalled, and ends with a final
    answer or at the round limit. The lead's worked examples, if any, come before each of its
    prompts (plan, route, final): one list that shows it each kind of turn."""
    if not workers:
        raise ValueError("an orchestrator needs at least one worker")
    _check_names([lead, *workers])
    shown = list((examples or {}).get(lead.name, ()))

    def ask_lead(prompt: str, state: WorkflowState) -> str:
        return run_agent(lead, [*shown, ChatMessage(role="user", content=prompt)], state=state)

    names = [w.name for w in workers]
    roster = "\n".join(f"- {w.name}: {w.role.splitlines()[0]}" for w in workers)
    graph = StateGraph(WorkflowState)

    def plan(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        previous = Plan.model_validate(state["plan"]) if state.get("plan") else None
        prompt = (
            f"Task: {state.get('task', {}).get('question', '')}\n\n"
            f"Team:\n{roster}\n\n"
            + (f"Conversation so far:\n{transcript(state.get('messages', []))}\n\n" if previous else "")
            + "Write the plan in this format:\n"
            "FACTS KNOWN: <facts given in the task>\n"
            "FACTS TO FIND: <facts to look up>\n"
            "PLAN:\n1. <worker name>: <what to do>\n2. <worker name>: <what to do>"
        )
        text = ask_lead(prompt, state)
        new = parse_plan(text, names)
        if previous is not None:
            new.replans = previous.replans + 1
        return {"messages": [agent_message(lead.name, text)], "plan": new.model_dump()}

    def route(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        ledger = Plan.model_validate(state.get("plan") or {})
        previous = Route.model_validate(state["route"]) if state.get("route") else None
        progressed = _mark_progress(ledger, previous, state)
        ledger.stalls = 0 if progressed else ledger.stalls + 1
        steps = "\n".join(f"{i + 1}. [{s.status}] {s.agent}: {s.text}" for i, s in enumerate(ledger.steps))
        prompt = (
            f"Task: {state.get('task', {}).get('question', '')}\n\n"
            f"Plan:\n{steps or '(none)'}\n\n"
            f"Conversation so far:\n{transcript(state.get('messages', []))}\n\n"
            f"If the task is answered, write FINAL ANSWER: <answer>. Otherwise choose the next "
            f"worker from {', '.join(names)} and write:\nNEXT: <worker>\nINSTRUCTION: <what to do>"
        )
        text = ask_lead(prompt, state)
        update: dict[str, Any] = {
            "messages": [agent_message(lead.name, text)],
            "plan": ledger.model_dump(),
            "round": state.get("round", 0) + 1,
        }
        if (answer := final_answer_in(text)) is not None:
            update["final_answer"] = answer
            update["route"] = None
            return update
        chosen = parse_route(text, names)
        if chosen is None:  # an unreadable decision: follow the plan's next pending step
            pending = ledger.next_pending()
            fallback = pending.agent if pending and pending.agent in names else names[0]
            chosen = Route(next=fallback, instruction=pending.text if pending else "")
        for step in ledger.steps:
            if step.agent == chosen.next and step.status == "pending":
                step.status = "in_progress"
                break
        update["plan"] = ledger.model_dump()
        update["route"] = chosen.model_dump()
        return update

    def after_route(state: WorkflowState) -> str:
        if state.get("final_answer") is not None:
            return END
        ledger = Plan.model_validate(state.get("plan") or {})
        if state.get("round", 0) >= max_rounds:
            return FINAL
        if ledger.stalls >= stall_limit and ledger.replans < max_replans:
            return PLAN
        return Route.model_validate(state["route"]).next

    def final(state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        prompt = (
            f"Task: {state.get('task', {}).get('question', '')}\n\n"
            f"Conversation so far:\n{transcript(state.get('messages', []))}\n\n"
            "Give the answer now, in one line: FINAL ANSWER: <answer>"
        )
        text = ask_lead(prompt, state)
        return {"messages": [agent_message(lead.name, text)], "final_answer": final_answer_in(text) or text.strip()}

    graph.add_node(PLAN, plan, metadata=_meta(lead.name, "plan"))
    graph.add_node(ROUTE, route, metadata=_meta(lead.name, "router"))
    graph.add_node(FINAL, final, metadata=_meta(lead.name, "agent"))
    for worker in workers:
        graph.add_node(
            worker.name, _worker_node(worker, tools, examples), metadata=_meta(worker.name, "agent")
        )
        graph.add_edge(worker.name, ROUTE)
    graph.add_edge(START, PLAN)
    graph.add_edge(PLAN, ROUTE)
    graph.add_conditional_edges(ROUTE, after_route, [*names, PLAN, FINAL, END])
    graph.add_edge(FINAL, END)
    return graph


_PLAN_LINE = re.compile(r"^\s*\d+[.)]\s*\[?([A-Za-z_][\w-]*)\]?\s*[:\-]\s*(.+)$")


def parse_plan(text: str, workers: Sequence[str]) -> Plan:
    """Read a plan written in the prompted format; lines that do not fit are left out."""
    plan = Plan()
    for line in text.splitlines():
        stripped = line.strip()
        upper = stripped.upper()
        if upper.startswith("FACTS KNOWN:"):
            plan.facts_known = [f for f in [stripped.split(":", 1)[1].strip()] if f]
        elif upper.startswith("FACTS TO FIND:"):
            plan.facts_to_find = [f for f in [stripped.split(":", 1)[1].strip()] if f]
        elif match := _PLAN_LINE.match(stripped):
            agent = _first_name(match.group(1), workers) or match.group(1)
            plan.steps.append(PlanStep(agent=agent, text=match.group(2).strip()))
    return plan


def parse_route(text: str, workers: Sequence[str]) -> Route | None:
    """The `NEXT:` / `INSTRUCTION:` decision, if the text names a known worker."""
    nxt = re.search(r"NEXT\s*:\s*\[?([A-Za-z_][\w-]*)", text, re.IGNORECASE)
    if not nxt:
        return None
    name = _first_name(nxt.group(1), workers)
    if name is None:
        return None
    instruction = re.search(r"INSTRUCTION\s*:\s*(.+)", text, re.IGNORECASE)
    return Route(next=name, instruction=instruction.group(1).strip() if instruction else "")


def _mark_progress(ledger: Plan, previous: Route | None, state: WorkflowState) -> bool:
    """After a worker spoke: mark its in-progress step done. Progress = a step got done."""
    if previous is None:
        return True
    messages = state.get("messages", [])
    spoke = bool(messages) and getattr(messages[-1], "name", None) == previous.next
    for step in ledger.steps:
        if step.agent == previous.next and step.status == "in_progress" and spoke:
            step.status = "done"
            return True
    return False
