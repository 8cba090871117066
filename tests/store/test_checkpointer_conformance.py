"""The official LangGraph conformance suite, base and extended capabilities, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from counterfact.store import SQLAlchemySaver, TraceStore

EXTENDED = {"delete_for_runs", "copy_thread", "prune"}


async def _check(url: str) -> None:
    store = TraceStore.open(url)

    @checkpointer_test(name=f"SQLAlchemySaver[{store.dialect}]")
    async def saver() -> AsyncIterator[SQLAlchemySaver]:
        yield SQLAlchemySaver(store)

    report = await validate(saver, progress=ProgressCallbacks.verbose())
    report.print_report()
    store.close()
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert report.passed_all_base(), f"base capabilities failed: {failures}"
    for capability in EXTENDED:  # extended ones must be detected, not just skipped
        result = report.results[capability]
        assert result.detected and result.passed is True, f"{capability}: {result}"
    assert report.conformance_level() == "FULL"


async def test_conformance_sqlite(sqlite_path: str) -> None:
    await _check(sqlite_path)


@pytest.mark.postgres
async def test_conformance_postgres(pg_url: str) -> None:
    await _check(pg_url)
