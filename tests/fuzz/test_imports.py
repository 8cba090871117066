"""Imports are all-or-nothing: `import jsonl`, `import whowhen` and `import otel` on mutated
real files either import, or raise one clear error and leave the store as it was (row counts
per table, and the chains of the runs already there)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counterfact.formats import (
    OtelImportError,
    import_jsonl,
    import_otel,
    import_whowhen,
)
from counterfact.store import TraceStore, verify_run
from tests.conftest import WHOWHEN, require
from tests.fuzz._mutate import dumps, mutated, mutated_bytes
from tests.fuzz.conftest import assert_clear, count, row_counts

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


class Target:
    """The store imports go into: one run of its own already recorded. After an import is
    accepted, the next case gets a fresh one (so re-imports of the same ids stay interesting)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.n, self.store = folder, 0, None
        self.renew()

    def renew(self) -> None:
        from counterfact.graphs import Task, WorkflowRunner
        from tests.graphs.scripted import trio_pool, trio_spec

        if self.store is not None:
            self.store.close()
        self.n += 1
        self.store = TraceStore.open(str(self.folder / f"target{self.n}.db"))
        task = Task(id="own", question="What is the population of Avalon?", facts={"population of Avalon": "7"})
        self.baseline = [WorkflowRunner(trio_spec(), self.store, trio_pool()).run(task).run_id]

    def check(self, prop: str, call: Callable[[TraceStore], Any], *names: str) -> None:
        store = self.store
        before = row_counts(store)
        try:
            call(store)
        except Exception as exc:  # noqa: BLE001 - the property is about which exceptions
            after = row_counts(store)
            assert after == before, f"rejected ({type(exc).__name__}: {exc}) but rows changed: {before} -> {after}"
            assert all(verify_run(store, r).ok for r in self.baseline)
            assert_clear(exc, *names)
            count(prop, "rejected")
        else:
            count(prop)
            assert all(verify_run(store, r).ok for r in self.baseline)
            self.renew()

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    t = Target(tmp_path_factory.mktemp("import-target"))
    yield t
    t.close()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- import jsonl ---------------------------------------------------------------------------


def test_real_export_imports(recorded: dict, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text(recorded["jsonl"], encoding="utf-8")
    store = TraceStore.open(str(tmp_path / "t.db"))
    assert import_jsonl(store, path) == recorded["ids"]
    assert all(verify_run(store, r).ok for r in recorded["ids"])
    store.close()


@given(data=st.data())
def test_import_jsonl_mutated_lines(recorded: dict, target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    lines = _lines(recorded["jsonl"])
    which = data.draw(st.integers(0, len(lines) - 1))
    lines[which] = data.draw(mutated(lines[which]))
    path = tmp_path_factory.mktemp("jsonl") / "runs.jsonl"
    path.write_text("".join(dumps(line) + "\n" for line in lines), encoding="utf-8")
    target.check("import jsonl (mutated fields)", lambda s: import_jsonl(s, path), str(path))


@given(data=st.data())
def test_import_jsonl_damaged_bytes(recorded: dict, target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    raw = data.draw(mutated_bytes(recorded["jsonl"].encode("utf-8")))
    path = tmp_path_factory.mktemp("jsonl") / "runs.jsonl"
    path.write_bytes(raw)
    target.check("import jsonl (damaged bytes)", lambda s: import_jsonl(s, path), str(path))


def test_import_jsonl_twice_is_refused_untouched(recorded: dict, target: Target, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text(recorded["jsonl"], encoding="utf-8")
    target.check("import jsonl (real export)", lambda s: import_jsonl(s, path))  # accepted, renews
    import_jsonl(target.store, path)
    target.check("import jsonl (again)", lambda s: import_jsonl(s, path), str(path))


# -- import otel ----------------------------------------------------------------------------


@given(data=st.data())
def test_import_otel_mutated(recorded: dict, target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    lines = _lines(recorded["otlp"])
    which = data.draw(st.integers(0, len(lines) - 1))
    lines[which] = data.draw(mutated(lines[which], max_mutations=4))
    path = tmp_path_factory.mktemp("otel") / "spans.json"
    path.write_text("".join(dumps(line) + "\n" for line in lines), encoding="utf-8")
    target.check("import otel (mutated fields)", lambda s: import_otel(s, [path]), str(path))


@given(data=st.data())
def test_import_otel_damaged_bytes(recorded: dict, target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("otel") / "spans.json"
    path.write_bytes(data.draw(mutated_bytes(recorded["otlp"].encode("utf-8"))))
    target.check("import otel (damaged bytes)", lambda s: import_otel(s, [path]), str(path))


# -- import whowhen -------------------------------------------------------------------------


def _whowhen_logs() -> list[Path]:
    return sorted((WHOWHEN / "Hand-Crafted").glob("*.json"))[:4] + sorted((WHOWHEN / "Algorithm-Generated").glob("*.json"))[:4]


@pytest.fixture(scope="module")
def whowhen_logs() -> list[Path]:
    require((WHOWHEN / "Hand-Crafted").is_dir(), f"the Who&When subset is not at {WHOWHEN}")
    return _whowhen_logs()


@given(data=st.data())
def test_import_whowhen_mutated(whowhen_logs: list[Path], target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    log = data.draw(st.sampled_from(whowhen_logs))
    value = data.draw(mutated(json.loads(log.read_text(encoding="utf-8")), max_mutations=4))
    path = tmp_path_factory.mktemp("ww") / log.name
    path.write_text(dumps(value), encoding="utf-8")
    target.check("import whowhen (mutated fields)", lambda s: import_whowhen(s, [path]), path.name)


@given(data=st.data())
def test_import_whowhen_damaged_bytes(whowhen_logs: list[Path], target: Target, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    log = data.draw(st.sampled_from(whowhen_logs))
    folder = tmp_path_factory.mktemp("ww")
    (folder / log.name).write_bytes(data.draw(mutated_bytes(log.read_bytes())))
    # a folder with one good log beside the damaged one: a bad file must stop both
    good = next(p for p in whowhen_logs if p.name != log.name or p.parent != log.parent)
    (folder / f"good-{good.name}").write_bytes(good.read_bytes())
    target.check("import whowhen (damaged bytes, folder)", lambda s: import_whowhen(s, [folder]), log.name, folder.name)


OTLP_BAD = {
    "resourceSpans entry not an object": {"resourceSpans": [["x"]]},
    "resource attribute not an object": {"resourceSpans": [{"resource": {"attributes": ["x"]}, "scopeSpans": []}]},
    "span not an object": {"resourceSpans": [{"scopeSpans": [{"spans": [None]}]}]},
    "span status a list": {"resourceSpans": [{"scopeSpans": [{"spans": [{"status": [], "traceId": "0" * 32,
                                                                        "spanId": "0" * 16, "startTimeUnixNano": "1"}]}]}]},
    "not UTF-8": b"\xff{}",
    "time out of range": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "1" * 32, "spanId": "1" * 16,
                                                                        "startTimeUnixNano": str(10**30)}]}]}]},
    "id neither hex nor base64": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "é" * 32, "spanId": "1" * 16,
                                                                                "startTimeUnixNano": "1"}]}]}]},
    "attribute of the wrong type": {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "1" * 32, "spanId": "1" * 16, "startTimeUnixNano": "1",
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "many"}}]}]}]}]},
    "lone surrogate": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "1" * 32, "spanId": "1" * 16,
                                                                    "startTimeUnixNano": "1", "name": "\ud800"}]}]}]},
    "spans in a cycle": {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "1" * 32, "spanId": "1" * 16, "parentSpanId": "2" * 16, "startTimeUnixNano": "1"},
        {"traceId": "1" * 32, "spanId": "2" * 16, "parentSpanId": "1" * 16, "startTimeUnixNano": "1"}]}]}]},
    "nested too deeply": b"[" * 100_000,
}


@pytest.mark.parametrize("case", list(OTLP_BAD))
def test_malformed_otlp_is_a_clear_error(case: str, target: Target, tmp_path: Path) -> None:
    path = tmp_path / "spans.json"
    bad = OTLP_BAD[case]
    path.write_bytes(bad if isinstance(bad, bytes) else json.dumps(bad).encode())
    before = row_counts(target.store)
    with pytest.raises(Exception) as info:
        import_otel(target.store, [path])
    assert row_counts(target.store) == before
    assert isinstance(info.value, OtelImportError), f"{type(info.value).__name__}: {info.value}"
    assert_clear(info.value, str(path))
