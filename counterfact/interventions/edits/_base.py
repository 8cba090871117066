"""What an edit kind is, what compiling one may read, and the registry that finds kinds by name.

An edit kind is a module of this package (or any object shaped like one, see `EditKind`): its
spec, how an edit of it compiles into step directives and evidence, how a report says it, and
the edit the viewer starts from. Each edit names its step by the trace's own index
(`step: 7`) or by node or agent and nth invocation (`node: solver, invocation: 1`), never by
LangGraph's step number or task id, which change in a fork.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar, Union, runtime_checkable

from pydantic import BaseModel, Field, GetCoreSchemaHandler, model_validator
from pydantic_core import CoreSchema

from counterfact._errors import CounterfactError
from counterfact.capture import PromptChange, RouteChange, StepDirectives, ToolChange
from counterfact.interventions._applied import Evidence
from counterfact.store import StepRecord, TraceStore, excerpt


class InterventionError(CounterfactError):
    """An edit that cannot be applied; names the file, field or step."""


class StepRef(BaseModel):
    """Which step an edit aims at: a trace index, or node/agent and nth invocation."""

    step: int | None = Field(default=None, ge=0)
    node: str | None = None
    agent: str | None = None
    invocation: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_address(self) -> StepRef:
        given = sum(x is not None for x in (self.step, self.node, self.agent))
        if given > 1:
            raise ValueError("address a step by one of `step`, `node` or `agent`")
        return self

    @property
    def given(self) -> bool:
        return self.step is not None or self.node is not None or self.agent is not None

    def describe(self) -> str:
        if self.step is not None:
            return f"step {self.step}"
        who = f"node {self.node}" if self.node is not None else f"agent {self.agent}"
        return f"{who} #{self.invocation}"


class EditSpec(BaseModel):
    """The fields every edit has; a kind's spec narrows `kind` to its own name (a Literal)."""

    at: StepRef = Field(default_factory=StepRef)  # empty: the step given on the command line
    kind: str


class StateUpdate(BaseModel):
    """A write into the state at the fork point, as if `as_node` had produced it."""

    model_config = {"arbitrary_types_allowed": True}

    values: dict[str, Any]
    as_node: str | None


class StepPlan(BaseModel):
    """What the edits at one step compile to: what to write, what to tell the step, and what
    evidence shows that the edits reached the agents."""

    model_config = {"arbitrary_types_allowed": True}

    directives: StepDirectives = Field(default_factory=StepDirectives)
    tool_changes: list[ToolChange] = Field(default_factory=list)
    prompt_changes: list[PromptChange] = Field(default_factory=list)
    route_changes: list[RouteChange] = Field(default_factory=list)
    updates: list[StateUpdate] = Field(default_factory=list)
    resume: Any = None
    resumes: bool = False  # answer the step's interrupt() with `resume`
    evidence: list[Evidence] = Field(default_factory=list)
    activation: bool = False


@dataclass(frozen=True)
class CompileContext:
    """What compiling an edit may read of the run and its graph, before any replay."""

    index: int  # the edited step's trace index
    step: StepRecord
    ours: bool  # the step's node is one of counterfact's agent nodes (it takes replies)
    graph: Any  # the run's compiled LangGraph graph: its builder and channels
    steps: list[StepRecord]  # the run's steps
    store: TraceStore
    state_before: Callable[[], dict[str, Any]]  # the state the step ran on (read when asked)
    models: Callable[[StepRecord], Any]  # a step's counterfact model, or None

    @property
    def nodes(self) -> dict[str, Any]:
        return self.graph.builder.nodes

    def local_model(self, what: str) -> Any:
        """The step's counterfact model, which a `what` edit needs (refused without one)."""
        step = self.step
        model = self.models(step) if (self.ours or step.model_calls) else None
        if model is None:
            raise InterventionError(
                f"a {what} edit needs a counterfact model at step {step.index} ({step.node}): "
                "a counterfact agent, or ChatCounterfact in your graph"
            )
        return model


@runtime_checkable
class EditKind(Protocol):
    """One kind of edit, as its module holds it."""

    SPEC: type[EditSpec]  # its edits: `kind` is a Literal of the kind's name
    ORDER: int  # where it comes in lists of kinds (error messages, the viewer's menu of edits)

    def compile_edit(self, edit: Any, context: CompileContext, plan: StepPlan) -> None:
        """Add the edit's directives, state writes and evidence to `plan` (refuse with an
        InterventionError what cannot apply at the step)."""

    def describe(self, edit: dict[str, Any], where: str) -> str:
        """The stored edit in one line, as a person would say it; `where` names its step."""

    def template(self, step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """An edit (as an edit file holds it) to start from at `step`, filled with what the step
        holds and the state `before` it; None where the kind does not apply."""


_KINDS: dict[str, EditKind] = {}
_HOLDERS: list[type[BaseModel]] = []  # models with an AnyEdit field, rebuilt when a kind registers
Holder = TypeVar("Holder", bound=type[BaseModel])


def _name_of(spec: type[EditSpec]) -> str:
    return str(spec.model_fields["kind"].default)


def register_edit_kind(kind: EditKind) -> EditKind:
    """Make edits of `kind` parse, compile, describe and offer templates (a later kind of the
    same name replaces it)."""
    if not isinstance(kind, EditKind) or not (isinstance(kind.SPEC, type) and issubclass(kind.SPEC, EditSpec)):
        raise TypeError(f"{kind!r} is not an edit kind: it needs SPEC, ORDER, compile_edit, describe and template")
    _KINDS[_name_of(kind.SPEC)] = kind
    rebuild_holders()
    return kind


def edit_kind(name: str) -> EditKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise InterventionError(f"no edit kind {name!r}; choose among {', '.join(edit_kind_names())}") from None


def edit_kind_names() -> tuple[str, ...]:
    """Every registered kind, in its ORDER."""
    return tuple(sorted(_KINDS, key=lambda name: _KINDS[name].ORDER))


def edit_union() -> Any:
    """The registered kinds' specs as one pydantic union, discriminated on `kind`."""
    specs = tuple(_KINDS[name].SPEC for name in edit_kind_names())
    return Annotated[Union[specs], Field(discriminator="kind")]


class _Registered:
    """Validates and dumps a field as `edit_union()` (as the registry stands when the model is
    built or rebuilt)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(edit_union())


AnyEdit = Annotated[EditSpec, _Registered()]  # an edit of any registered kind, in a model's field


def holds_edits(model: Holder) -> Holder:
    """Mark a model with an `AnyEdit` field, so that kinds registered later parse in it too."""
    _HOLDERS.append(model)
    return model


def rebuild_holders() -> None:
    for model in _HOLDERS:
        model.model_rebuild(force=True)


def short(value: Any) -> str:
    """A value in a description: one line of at most 120 characters."""
    return excerpt(str(value), 120)
