"""Fixtures of the agents' tests."""

from __future__ import annotations

import pytest

from counterfact.agents import LocalModel

from .passes import CountingPasses


@pytest.fixture
def counted(tiny: LocalModel, monkeypatch: pytest.MonkeyPatch) -> CountingPasses:
    """The tiny model's engine counting its forward passes, its memo of answers emptied."""
    tiny.engine.memo.clear()
    counting = CountingPasses(tiny.engine.model)
    monkeypatch.setattr(tiny.engine, "model", counting)
    return counting
