"""`activation`: edit a local model's activations during the step's generation (white-box
models only): layers, component, positions, operation and a vector."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from counterfact.agents import (
    ActivationEdit,
    ChatMessage,
    GenerationSettings,
    ModelError,
    ModelRequest,
)
from counterfact.interventions.edits._base import (
    CompileContext,
    EditSpec,
    InterventionError,
    StepPlan,
)
from counterfact.store import StepRecord, TraceStore


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


class ActivationIntervention(EditSpec):
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


SPEC: type[EditSpec] = ActivationIntervention
ORDER = 120


def compile_edit(edit: ActivationIntervention, context: CompileContext, plan: StepPlan) -> None:
    """Resolve the vector and check the edit against the step's model, before any replay."""
    step = context.step
    model = context.local_model("activation")
    if not model.white_box:
        raise InterventionError(
            f"step {step.index} runs on {model.name} ({model.backend}), a remote black-box "
            "model: activation edits need a local model"
        )
    vector = resolve_vector(edit, model, context.store) if edit.vector is not None else None
    resolved = edit.to_edit(vector)
    try:
        model.check_edits([resolved])
    except ModelError as exc:
        raise InterventionError(f"activation edit at step {step.index}: {exc}") from None
    plan.directives.activation_edits.append(resolved.model_dump(mode="json", exclude_none=True))
    plan.activation = True


def describe(edit: dict[str, Any], where: str) -> str:
    return (
        f"{edit.get('operation', 'add')} {edit.get('component', 'residual')} activations at layers "
        f"{edit['layers']}, positions {edit.get('positions', 'all')}, at {where}"
    )


def template(step: StepRecord, before: dict[str, Any] | None) -> dict[str, Any] | None:
    if not any(c.backend == "local" for c in step.model_calls):
        return None
    return {
        "kind": "activation", "layers": [0], "component": "residual", "positions": "all",
        "operation": "scale", "strength": 0.0,
    }


def resolve_vector(edit: ActivationIntervention, model: Any, store: TraceStore) -> list[float]:
    """The edit's vector as numbers, checked against the model's width at its hook point."""
    import torch  # only when a vector is resolved: importing the edit kinds stays torch-free

    source = edit.vector
    assert source is not None
    if source.values is not None:
        return list(source.values)
    if source.file is not None:
        probe = ActivationEdit(layer=edit.layers, vector_file=source.file, vector_key=source.key)
        try:
            tensor = probe.load_vector()
        except Exception as exc:  # noqa: BLE001 - unreadable file, missing key, bad shape
            raise InterventionError(f"cannot read vector file {source.file}: {exc}") from None
        assert tensor is not None
        return tensor.flatten().tolist()
    point = _point(edit)
    if source.captured is not None:
        captured = source.captured
        steps = store.steps(captured.run)
        if not 0 <= captured.step < len(steps):
            raise InterventionError(
                f"captured vector: step {captured.step} is out of range for run {captured.run}"
            )
        calls = steps[captured.step].model_calls
        if not calls:
            raise InterventionError(f"captured vector: step {captured.step} made no model call")
        request = [ChatMessage.model_validate(m) for m in calls[0].request]
        acts = _activations(model, request, point)
        row = acts.mean(0) if captured.position == "mean" else acts[-1 if captured.position == "last" else captured.position]
        return row.tolist()
    contrast = source.contrastive
    assert contrast is not None
    mean = lambda prompts: torch.stack(  # noqa: E731 - last-token activation, averaged
        [_activations(model, [ChatMessage(role="user", content=p)], point)[-1] for p in prompts]
    ).mean(0)
    return (mean(contrast.positive) - mean(contrast.negative)).tolist()


def _point(edit: ActivationIntervention) -> str:
    if len(edit.layers) != 1:
        raise InterventionError("a captured or contrastive vector is taken at exactly one layer")
    suffix = f"head.{edit.head}" if edit.component == "head" else edit.component
    return f"layers.{edit.layers[0]}.{suffix}"


def _activations(model: Any, messages: list[ChatMessage], point: str) -> Any:
    """Activations at `point` for each prompt position (one row per position)."""
    if not hasattr(model, "complete_with_activations"):
        raise InterventionError(f"model {model.name} cannot capture activations (not a local model)")
    request = ModelRequest(messages=messages, settings=GenerationSettings(max_tokens=1))
    _, captured = model.complete_with_activations(request, capture=[point])
    tensor = captured[point]
    return tensor if tensor.dim() == 2 else tensor.reshape(-1, tensor.shape[-1])
