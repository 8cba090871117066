"""Resolving the vector of an activation edit: inline, from a file, captured, or contrastive."""

from __future__ import annotations

from typing import Any

import torch

from counterfact.agents import ActivationEdit, ChatMessage
from counterfact.interventions.edits import InterventionError
from counterfact.interventions.edits.activation import ActivationIntervention
from counterfact.store import TraceStore


def resolve_vector(edit: ActivationIntervention, model: Any, store: TraceStore) -> list[float]:
    """The edit's vector as numbers, checked against the model's width at its hook point."""
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


def _activations(model: Any, messages: list[ChatMessage], point: str) -> torch.Tensor:
    """Activations at `point` for each prompt position (one row per position)."""
    if not hasattr(model, "complete_with_activations"):
        raise InterventionError(f"model {model.name} cannot capture activations (not a local model)")
    from counterfact.agents import GenerationSettings, ModelRequest

    request = ModelRequest(messages=messages, settings=GenerationSettings(max_tokens=1))
    _, captured = model.complete_with_activations(request, capture=[point])
    tensor = captured[point]
    return tensor if tensor.dim() == 2 else tensor.reshape(-1, tensor.shape[-1])
