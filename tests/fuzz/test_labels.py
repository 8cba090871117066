"""Label filters with hostile keys and values cannot inject SQL or JSON paths:
TraceStore.list_runs(labels={key: value}) returns exactly the matching runs, on SQLite and
PostgreSQL, without a SQL error, and leaves the tables as they were."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy.exc import SQLAlchemyError

from hypothesis import given
from hypothesis import strategies as st

from counterfact.traces import RunRecord, TraceStore
from tests.fuzz.conftest import count, row_counts

HOSTILE = st.sampled_from([
    "' OR 1=1 --", "'; DROP TABLE runs; --", '" OR "1"="1', "a'b", 'a"b', "a\\b", "a.b", "$", "$.a", "$[0]",
    "a[0]", "$.\"x\"", "{a}", "a,b", "->>", "?", "%s", "%", "_", ":name", "\x00", "é", "😀", "", " ", "a\nb",
    "' OR labels IS NOT NULL --", "*", "**", "$..a", "$.a[*]", "\"", "'", ";",
]) | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(key=HOSTILE, value=HOSTILE, other=HOSTILE)
def test_hostile_label_filters(store: TraceStore, key: str, value: str, other: str) -> None:
    if "\x00" in key + value + other and store.dialect == "postgresql":
        value, key, other = (s.replace("\x00", "0") for s in (value, key, other))  # PG text holds no NUL
    match = RunRecord(id=uuid.uuid4().hex, workflow="fuzz", labels={key: value, "other": other})
    decoy = RunRecord(id=uuid.uuid4().hex, workflow="fuzz", labels={key: value + "x", other: value})
    for record in (match, decoy):
        store.create_run(record)
    before = row_counts(store)
    everything = store.list_runs(limit=None)
    prop = f"labels: list_runs(hostile labels) on {store.dialect}"
    for filters in (dict(match.labels), {key: value}, {other: value}, {key: value, "other": other}, {key: "' OR 1=1 --"}):
        expected = {r.id for r in everything if all(r.labels.get(k) == v for k, v in filters.items())}
        known = store.dialect == "sqlite" and any(json.dumps(k)[1:-1] != k for k in filters)
        try:
            found = {r.id for r in store.list_runs(labels=filters, limit=None)}
        except SQLAlchemyError:
            if not known:
                raise
            found = None
        if store.dialect == "sqlite" and found is not None and found != expected:
            by_id = {r.id: r for r in everything}
            known = known or any("\x00" in v for v in filters.values()) or all(
                any("\x00" in str(by_id[r].labels.get(k, "")) for k in filters) for r in found ^ expected)
        if known and found != expected:
            count(prop, "known_bug")
            continue
        assert found == expected, f"filters {filters!r}: {len(found)} runs, expected {len(expected)}"
        count(prop)
    assert row_counts(store) == before


@pytest.mark.xfail(strict=True, reason="bug: counterfact/traces/_store.py:552 `Run.labels[key]` compiles on SQLite to "
                   "JSON_EXTRACT(labels, '$.\"<key>\"') with the key unescaped: a key with '\"', "
                   "a backslash, a control or a non-ASCII character (stored \\\\u-escaped) matches nothing, one with NUL raises sqlite3.OperationalError (JSON path error)")
@pytest.mark.parametrize("key", ['a"b', "\x00", '"', "a\\b", "\x1f", "a\nb", "\x7f", "é"])
def test_label_keys_with_quotes_match_on_sqlite(sqlite_path: str, key: str) -> None:
    store = TraceStore.open(sqlite_path)
    run = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={key: "v"})
    store.create_run(run)
    assert [r.id for r in store.list_runs(labels={key: "v"})] == [run.id]
    store.close()


@pytest.mark.xfail(strict=True, reason="bug: counterfact/traces/_store.py:552 on SQLite the label filter compares "
                   "CAST(JSON_EXTRACT(...) AS VARCHAR), cut at a NUL: a run labelled 'ab\\x00zz' matches the filter 'ab'")
def test_label_values_with_nul_match_exactly_on_sqlite(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    store.create_run(RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"k": "ab\x00zz"}))
    plain = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"k": "ab"})
    store.create_run(plain)
    assert [r.id for r in store.list_runs(labels={"k": "ab"})] == [plain.id]
    store.close()
