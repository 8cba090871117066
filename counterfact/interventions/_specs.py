"""Interventions: targeted edits of a recorded run at one step, as one discriminated union.

Each edit names its step by the trace's own index (`step: 7`) or by node or agent and nth
invocation (`node: solver, invocation: 1`), never by LangGraph's step number or task id, which
change in a fork. An edit file holds one edit or a list of them; a list composes into one
intervention, applied in order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, field_validator, Field, TypeAdapter, ValidationError, model_validator

from counterfact._errors import CounterfactError, validation_message
from counterfact._files import load_yaml
from counterfact.agents import ActivationEdit


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


class _Edit(BaseModel):
    at: StepRef = Field(default_factory=StepRef)  # empty: the step given on the command line


class MessageEdit(_Edit):
    """Replace the step's output message, append to it, or substitute by regex."""

    kind: Literal["message"] = "message"
    mode: Literal["replace", "append", "regex"] = "replace"
    text: str = ""
    pattern: str | None = None  # for regex: the text is the replacement

    @model_validator(mode="after")
    def _regex(self) -> MessageEdit:
        if self.mode == "regex":
            if not self.pattern:
                raise ValueError("a regex message edit needs `pattern`")
            try:
                re.compile(self.pattern)
            except re.error as exc:  # pydantic reports ValueErrors only
                raise ValueError(f"pattern is not a regular expression ({exc})") from None
        return self


class StateEdit(_Edit):
    """Patch the state as the step finds it (RFC 6902 JSON patch on the channels, by name:
    `/plan/steps/0/text`, `/messages/2/content`); later steps see the patched state."""

    kind: Literal["state"] = "state"
    patch: list[dict[str, Any]] = Field(min_length=1)


class PlanEdit(_Edit):
    """Replace the plan/ledger in the state at the step, or patch it (RFC 6902 JSON patch):
    a state edit of the orchestrator's `plan` channel."""

    kind: Literal["plan"] = "plan"
    plan: dict[str, Any] | None = None
    patch: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one(self) -> PlanEdit:
        if (self.plan is None) == (self.patch is None):
            raise ValueError("a plan edit needs exactly one of `plan` or `patch`")
        return self


class RouteEdit(_Edit):
    """Force the next speaker (and its instruction) at a routing step."""

    kind: Literal["route"] = "route"
    next: str
    instruction: str = ""


class HandoffEdit(_Edit):
    """Change a handoff the step made: send control to another agent (`to: AGENT`), keep it
    with the agent that handed off (`to: null`, kept as "none"), and/or change the message
    handed over."""

    kind: Literal["handoff"] = "handoff"
    to: str = ""  # "": where the step sent it
    message: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _null(cls, to: Any) -> Any:
        return "none" if to is None else to

    @model_validator(mode="after")
    def _something(self) -> HandoffEdit:
        if not self.to and self.message is None:
            raise ValueError("a handoff edit needs `to` (an agent, or null to keep control) or `message`")
        return self

    @property
    def keeps_control(self) -> bool:
        return self.to == "none"


class ToolEdit(_Edit):
    """Replace a tool's result at the step, or give/take a tool from the step on."""

    kind: Literal["tool"] = "tool"
    tool: str
    action: Literal["result", "add", "remove"] = "result"
    result: Any = None


class ResponseEdit(_Edit):
    """The `call`-th model call inside the step returns this message instead of calling the
    model (any model: counterfact's, a LangChain chat model, an instrumented openai client)."""

    kind: Literal["response"] = "response"
    call: int = Field(default=0, ge=0)
    text: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)  # {"name", "args"}


class ResumeEdit(_Edit):
    """Answer the step's `interrupt()` with this value instead of the recorded one."""

    kind: Literal["resume"] = "resume"
    value: Any


class PrefixEdit(_Edit):
    """The agent's response at the step must begin with `text`; the model continues from it."""

    kind: Literal["prefix"] = "prefix"
    text: str = Field(min_length=1)


class InstructionEdit(_Edit):
    """The agent at the step reads `text` as a note before it answers, and writes its own
    step again: a fix in the agent's own words and format, not one written for it."""

    kind: Literal["instruction"] = "instruction"
    text: str = Field(min_length=1)


class SampleEdit(_Edit):
    """The agent at the step writes its step again, sampled at `temperature` with `seed`;
    the other steps keep their own decoding. A fix drawn from the agent itself."""

    kind: Literal["sample"] = "sample"
    temperature: float = Field(default=0.8, gt=0.0, le=2.0)
    seed: int = 0


class CapturedVector(BaseModel):
    """An activation recorded by re-running another run's step: its prompt, at one point."""

    run: str
    step: int = Field(ge=0)
    position: int | Literal["last", "mean"] = "last"


class ContrastiveVector(BaseModel):
    """Mean activation over `positive` prompts minus over `negative` ones (last token)."""

    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(min_length=1)


class VectorSource(BaseModel):
    """Exactly one of: inline values, a .safetensors/.npy file, a capture, a contrast."""

    values: list[float] | None = None
    file: str | None = None
    key: str | None = None  # tensor name in a .safetensors file
    captured: CapturedVector | None = None
    contrastive: ContrastiveVector | None = None

    @model_validator(mode="after")
    def _one(self) -> VectorSource:
        given = [x for x in (self.values, self.file, self.captured, self.contrastive) if x is not None]
        if len(given) != 1:
            raise ValueError("a vector needs exactly one of values, file, captured, contrastive")
        return self


class ActivationIntervention(_Edit):
    """Edit a local model's activations during the step's generation."""

    kind: Literal["activation"] = "activation"
    layers: list[int] = Field(min_length=1)
    component: Literal["residual", "attn", "mlp", "head"] = "residual"
    head: int | None = None
    positions: Literal["prompt", "generated", "all", "last"] | list[int] = "all"
    operation: Literal["add", "set", "ablate", "scale"] = "add"
    strength: float = 1.0
    vector: VectorSource | None = None

    @model_validator(mode="after")
    def _needs_vector(self) -> ActivationIntervention:
        if self.operation != "scale" and self.vector is None:
            raise ValueError(f"operation {self.operation!r} needs a `vector`")
        return self

    def to_edit(self, vector: list[float] | None) -> ActivationEdit:
        """The backend's edit, once the vector is resolved to numbers."""
        return ActivationEdit(
            layer=self.layers,
            component=self.component,
            head=self.head,
            positions=self.positions,
            operation=self.operation,
            vector=vector,
            strength=self.strength,
        )


Edit = Annotated[
    MessageEdit
    | StateEdit
    | PlanEdit
    | RouteEdit
    | HandoffEdit
    | ResponseEdit
    | ResumeEdit
    | ToolEdit
    | PrefixEdit
    | InstructionEdit
    | SampleEdit
    | ActivationIntervention,
    Field(discriminator="kind"),
]


class Intervention(BaseModel):
    """One or more edits, applied in order, all forking the run at the same step."""

    edits: list[Edit] = Field(min_length=1)
    note: str = ""

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


_EDITS: TypeAdapter[list[Edit]] = TypeAdapter(list[Edit])


def parse_intervention(data: Any, *, source: str = "edit") -> Intervention:
    """An intervention from parsed YAML/JSON: one edit, a list, or {edits: [...], note}."""
    if isinstance(data, dict) and "edits" in data:
        raw, note = data["edits"], str(data.get("note", ""))
    else:
        raw, note = (data if isinstance(data, list) else [data]), ""
    try:
        return Intervention(edits=_EDITS.validate_python(raw), note=note)
    except ValidationError as exc:
        raise InterventionError(f"{source}: {validation_message(exc, raw)}") from None


def load_intervention(path: str | Path) -> Intervention:
    """Read an edit file (YAML or JSON)."""
    return parse_intervention(load_yaml(path, "edit", InterventionError), source=str(path))
