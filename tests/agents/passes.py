"""A stand-in for an engine's model that counts its forward passes, for tests that check what
the engine computed and what it answered without computing."""

from __future__ import annotations

from typing import Any


class CountingPasses:
    """Wraps a model: `passes` counts every forward pass, `prefills` the prompt passes among
    them (those keep only some logits; decode steps keep all)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.config = model.config
        self.passes = 0
        self.prefills = 0

    def __call__(self, **kwargs: Any) -> Any:
        self.passes += 1
        self.prefills += "logits_to_keep" in kwargs
        return self.model(**kwargs)
