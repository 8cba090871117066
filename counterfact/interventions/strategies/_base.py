"""What a debugger strategy is: something that reads a failed run and proposes hypotheses (a
suspect step, why, and the fixes that would test it). Strategies never replay to verify and
never write to the store: the debugger stores what they propose and verifies it, so a new
strategy is one module that implements `propose`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from counterfact.agents import ChatModel
from counterfact.interventions._fixes import Fix
from counterfact.interventions._replay import Replayer
from counterfact.interventions._session import DebugReport
from counterfact.store import StepRecord, TraceStore


class Proposal(BaseModel):
    """A hypothesis: the step suspected, why, and its fixes, best first. Proposals on one step
    become one hypothesis with the fixes of every strategy behind it."""

    step: int
    reason: str
    fixes: list[Fix]
    reference: str | None = None  # a run the fixes borrow from
    evidence: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # stored as this strategy name instead of the proposer's
    # the step was placed by replays, not read from the log: its fixes are verified first, and
    # against their own control when re-executing the whole run does not reproduce the failure
    placed_by_replay: bool = False


class Skipped(BaseModel):
    """Why a strategy proposed nothing (or nothing more), for the report's notes."""

    note: str


Outcome = Proposal | Skipped


class DebugContext(Protocol):
    """What a strategy may read and ask of the session that runs it."""

    replayer: Replayer
    store: TraceStore
    steps: list[StepRecord]
    samples: int  # sampled fixes per hypothesis; fresh replays per resampled step
    temperature: float
    max_hypotheses: int
    reference: str | None  # a successful run given for comparison

    def fixes(self, step: int, notes: list[str], strategy: str) -> list[Fix]:
        """Thinking fixes of `step`: its agent told `notes` and asked to write the step again."""
        ...

    def afford(self, replays: int) -> bool:
        """Whether the budget still pays for `replays` more replays."""
        ...

    def sample_from(self, step: int, count: int) -> list[tuple[str, bool]]:
        """`count` fresh replays from `step` at the sampling temperature, charged to the
        budget: (run id, success) of each."""
        ...

    def rerun_from(self, step: int) -> tuple[str, bool]:
        """One replay from `step`, nothing edited, the steps from there on executed again
        (tools only where the app declares them safe to repeat), charged to the budget:
        (run id, success)."""
        ...

    def hypothesis_model(self) -> ChatModel:
        """The model that reads runs and names suspect steps."""
        ...

    def report(self) -> DebugReport:
        """The session so far: its hypotheses with their fixes and verdicts."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A way of finding failure hypotheses in a run."""

    name: str

    def propose(self, context: DebugContext) -> Iterable[Outcome]:
        """Hypotheses about the run (or why there are none), in the order to try them."""
        ...


@runtime_checkable
class FollowsUp(Protocol):
    """A strategy with a second stage, run once its hypotheses are verified (the patch
    strategy's layer scan of a validated transplant). `follow_up` names that stage."""

    follow_up: str

    def after_verification(self, context: DebugContext) -> Iterable[Outcome]: ...
