"""Label filters with hostile keys and values cannot inject SQL or JSON paths:
TraceStore.list_runs(labels={key: value}) returns exactly the matching runs, on SQLite and
PostgreSQL, without a SQL error, and leaves the tables as they were."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counterfact.store import RunRecord, TraceStore
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
        found = {r.id for r in store.list_runs(labels=filters, limit=None)}
        assert found == expected, f"filters {filters!r}: {len(found)} runs, expected {len(expected)}"
        count(prop)
    assert row_counts(store) == before


@pytest.mark.parametrize("key", ['a"b', "\x00", '"', "a\\b", "\x1f", "a\nb", "\x7f", "é"])
def test_label_keys_with_quotes_match_on_sqlite(sqlite_path: str, key: str) -> None:
    store = TraceStore.open(sqlite_path)
    run = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={key: "v"})
    store.create_run(run)
    assert [r.id for r in store.list_runs(labels={key: "v"})] == [run.id]
    store.close()


def test_label_values_with_nul_match_exactly_on_sqlite(sqlite_path: str) -> None:
    store = TraceStore.open(sqlite_path)
    store.create_run(RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"k": "ab\x00zz"}))
    plain = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"k": "ab"})
    store.create_run(plain)
    assert [r.id for r in store.list_runs(labels={"k": "ab"})] == [plain.id]
    store.close()


def test_label_filters_read_numbers_as_text(store: TraceStore) -> None:
    """A label that is not a string matches its text form, as before (`--label repeat=1`),
    also in a run whose labels hold a NUL elsewhere (read apart by an older SQLite, such as 3.40)."""
    nul = "\x00" if store.dialect == "sqlite" else "0"
    number = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"repeat": 1, "k": "v"})
    beside_nul = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"repeat": 1, "note": f"a{nul}b", "k": "v"})
    text = RunRecord(id=uuid.uuid4().hex, workflow="w", labels={"repeat": "2", "k": f"v{nul}"})
    for run in (number, beside_nul, text):
        store.create_run(run)
    assert {r.id for r in store.list_runs(labels={"repeat": "1"})} == {number.id, beside_nul.id}
    assert {r.id for r in store.list_runs(labels={"repeat": "2"})} == {text.id}
    assert {r.id for r in store.list_runs(labels={"k": "v"})} == {number.id, beside_nul.id}
    assert {r.id for r in store.list_runs(labels={"k": f"v{nul}", "repeat": "2"})} == {text.id}
    assert store.list_runs(labels={"repeat": "1", "k": f"v{nul}"}) == []
