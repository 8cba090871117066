"""The state every built-in workflow shares, and the plan/ledger an orchestrator keeps.

Messages are LangChain messages with stable ids under the `add_messages` reducer, so a replay
can replace one by reusing its id. The plan is stored as a plain dict (a `Plan` dumped) so
checkpoints stay plain data that any checkpoint serializer can read back.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field

StepStatus = Literal["pending", "in_progress", "done"]


class PlanStep(BaseModel):
    agent: str
    text: str
    status: StepStatus = "pending"


class Plan(BaseModel):
    """A Magentic-One style task ledger: what is known, what to find, and the steps."""

    facts_known: list[str] = Field(default_factory=list)
    facts_to_find: list[str] = Field(default_factory=list)
    steps: list[PlanStep] = Field(default_factory=list)
    replans: int = 0
    stalls: int = 0  # rounds in a row without progress

    def next_pending(self) -> PlanStep | None:
        return next((s for s in self.steps if s.status != "done"), None)


class Route(BaseModel):
    """The orchestrator's (or selector's) decision: who speaks next, told what."""

    next: str
    instruction: str = ""


class WorkflowState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    task: dict[str, Any]  # the task input: question, and anything the task provides
    plan: dict[str, Any] | None  # a Plan, dumped
    route: dict[str, Any] | None  # a Route, dumped
    final_answer: str | None
    round: int


def new_message_id() -> str:
    return uuid.uuid4().hex


def agent_message(agent: str, content: str) -> AIMessage:
    """A message spoken by `agent`, with a fresh stable id."""
    return AIMessage(content=content, name=agent, id=new_message_id())


def task_message(question: str) -> HumanMessage:
    return HumanMessage(content=question, name="user", id=new_message_id())


def initial_state(task: dict[str, Any]) -> WorkflowState:
    """The state a workflow starts from for `task` (which must have a `question`)."""
    return {
        "messages": [task_message(str(task["question"]))],
        "task": task,
        "plan": None,
        "route": None,
        "final_answer": None,
        "round": 0,
    }
