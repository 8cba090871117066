"""Debugger strategies as plug-ins: each proposes failure hypotheses from a run (see
`_base.Strategy`); the registry finds them by name. A new strategy is a module with a class
that has a `name` and a `propose`, registered with `register_strategy`."""

from counterfact._errors import CounterfactError
from counterfact.interventions.strategies._base import (
    DebugContext,
    FollowsUp,
    Outcome,
    Proposal,
    Skipped,
    Strategy,
)
from counterfact.interventions.strategies._grounded import GroundedStrategy
from counterfact.interventions.strategies._handoff import (
    HandoffStrategy,
    HandoffSuspect,
    handoff_suspects,
)
from counterfact.interventions.strategies._history import HistoryStrategy, usual_result
from counterfact.interventions.strategies._llm import (
    LlmStrategy,
    hypothesis_schema,
    read_hypothesis,
)
from counterfact.interventions.strategies._patch import PatchStrategy
from counterfact.interventions.strategies._rerun import RerunStrategy
from counterfact.interventions.strategies._resample import ResampleStrategy

_REGISTRY: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Make `strategy` choosable by its name (a later one of the same name replaces it)."""
    if not isinstance(strategy, Strategy):
        raise TypeError(f"{strategy!r} is not a strategy: it needs a name and a propose(context)")
    _REGISTRY[strategy.name] = strategy
    return strategy


def strategy_named(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CounterfactError(f"no strategy {name!r}; choose among {', '.join(_REGISTRY)}") from None


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy, in the order a session tries them: cheapest evidence first."""
    return tuple(_REGISTRY)


def strategies_from(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` checked against the registry ("all" stands for every one), in the order given."""
    known = strategy_names()
    chosen = list(known) if list(names) == ["all"] else list(names)
    unknown = [name for name in chosen if name not in known]
    if not chosen or unknown:
        raise CounterfactError(
            f"choose strategies among {', '.join(known)} or all" + (f", not {', '.join(unknown)}" if unknown else "")
        )
    return chosen


for _builtin in (HistoryStrategy(), HandoffStrategy(), GroundedStrategy(), RerunStrategy(), LlmStrategy(), ResampleStrategy(),
                 PatchStrategy()):
    register_strategy(_builtin)

STRATEGIES = strategy_names()  # the built-in ones

__all__ = [
    "STRATEGIES",
    "DebugContext",
    "FollowsUp",
    "GroundedStrategy",
    "HandoffStrategy",
    "HandoffSuspect",
    "HistoryStrategy",
    "LlmStrategy",
    "Outcome",
    "PatchStrategy",
    "Proposal",
    "RerunStrategy",
    "ResampleStrategy",
    "Skipped",
    "Strategy",
    "handoff_suspects",
    "hypothesis_schema",
    "read_hypothesis",
    "register_strategy",
    "strategies_from",
    "strategy_named",
    "strategy_names",
    "usual_result",
]
