"""The hash chain: any single-byte change of a stored payload (a blob's data) or of a step
row's chain digest, in a recorded run, is detected by verify_run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from counterfact.store import TraceStore, verify_run
from counterfact.store.schema import Blob, Step
from tests.fuzz.conftest import count


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TraceStore, list[str]]]:
    """A store of its own (bytes get changed and put back) with two recorded trio runs."""
    from counterfact.graphs import WorkflowRunner, load_suite
    from tests.graphs.scripted import trio_pool, trio_spec

    store = TraceStore.open(str(tmp_path_factory.mktemp("chain") / "chain.db"))
    suite = load_suite(Path(__file__).parents[1] / "graphs" / "suite.yaml")
    runner = WorkflowRunner(trio_spec(), store, trio_pool())
    ids = [runner.run(task).run_id for task in suite.tasks]
    assert all(verify_run(store, r).ok for r in ids)
    yield store, ids
    store.close()


def test_every_blob_belongs_to_a_run(copy: tuple[TraceStore, list[str]]) -> None:
    """Each stored blob is a payload some step reaches (so the property below covers all)."""
    store, ids = copy
    with store.engine.connect() as conn:
        digests = list(conn.execute(select(Blob.digest)).scalars())
    for digest in digests:
        with store.begin() as conn:
            data = conn.execute(select(Blob.data).where(Blob.digest == digest)).scalar_one()
            conn.execute(update(Blob).where(Blob.digest == digest).values(data=data + b" "))
        try:
            assert not all(verify_run(store, r).ok for r in ids), f"blob {digest[:12]} is in no run's chain"
        finally:
            with store.begin() as conn:
                conn.execute(update(Blob).where(Blob.digest == digest).values(data=data))


@given(data=st.data())
def test_single_byte_change_of_a_blob_is_detected(copy: tuple[TraceStore, list[str]], data: st.DataObject) -> None:
    store, ids = copy
    with store.engine.connect() as conn:
        digests = sorted(conn.execute(select(Blob.digest)).scalars())
    digest = data.draw(st.sampled_from(digests))
    with store.engine.connect() as conn:
        original = conn.execute(select(Blob.data).where(Blob.digest == digest)).scalar_one()
    at = data.draw(st.integers(0, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]))
    changed = original[:at] + bytes([new]) + original[at + 1:]
    with store.begin() as conn:
        conn.execute(update(Blob).where(Blob.digest == digest).values(data=changed))
    try:
        reports = [verify_run(store, r) for r in ids]
        assert not all(r.ok for r in reports), f"byte {at} of blob {digest[:12]} changed, every run still verifies"
        count("chain: one byte of a blob changed", "rejected")
    finally:
        with store.begin() as conn:
            conn.execute(update(Blob).where(Blob.digest == digest).values(data=original))
    assert all(verify_run(store, r).ok for r in ids)


@given(data=st.data())
def test_single_char_change_of_a_step_digest_is_detected(copy: tuple[TraceStore, list[str]], data: st.DataObject) -> None:
    store, ids = copy
    with store.engine.connect() as conn:
        rows = sorted(conn.execute(select(Step.id, Step.run_id, Step.digest)).all())
    step_id, run_id, original = data.draw(st.sampled_from(rows))
    field = data.draw(st.sampled_from(["digest", "input_digest", "output_digest", "delta_digest", "node", "error"]))
    with store.engine.connect() as conn:
        value = conn.execute(select(getattr(Step, field)).where(Step.id == step_id)).scalar_one()
    if value is None or value == "":
        changed = "x"
    else:
        at = data.draw(st.integers(0, len(value) - 1))
        changed = value[:at] + data.draw(st.characters(codec="ascii").filter(lambda c: c != value[at])) + value[at + 1:]
    with store.begin() as conn:
        conn.execute(update(Step).where(Step.id == step_id).values({field: changed}))
    try:
        report = verify_run(store, run_id)
        assert not report.ok, f"step {step_id} {field} {value!r} -> {changed!r} not detected"
        count("chain: one character of a step row changed", "rejected")
    finally:
        with store.begin() as conn:
            conn.execute(update(Step).where(Step.id == step_id).values({field: value}))
    assert verify_run(store, run_id).ok
