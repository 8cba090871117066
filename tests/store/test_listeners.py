"""Store listeners come from entry points; one that cannot be loaded is left out with a
warning, and the store opens and records without it."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from counterfact.store import TraceStore, _listeners


def test_a_listener_that_cannot_be_loaded_is_left_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = EntryPoint(name="gone", value="counterfact.no_such_module:listener", group=_listeners.LISTENER_GROUP)
    working = EntryPoint(name="quiet", value="builtins:dict", group=_listeners.LISTENER_GROUP)
    monkeypatch.setattr(_listeners, "entry_points", lambda group: [broken, working])
    _listeners.listeners.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="counterfact.store"):
            assert _listeners.listeners() == (dict,)
            store = TraceStore.open(str(tmp_path / "s.db"))
        assert store.live == {}  # the working factory's listener
        assert any("gone" in r.getMessage() and "cannot be loaded" in r.getMessage() for r in caplog.records)
    finally:
        _listeners.listeners.cache_clear()
