"""Property-based fuzzing of counterfact's input surfaces (hypothesis).

Few examples by default (CI), reproducibly (derandomized); set COUNTERFACT_FUZZ_EXAMPLES=N for
a longer search. Every property counts its cases; the session ends with one summary line per
property: "fuzz: <property>: N cases (K rejected with a clear error)".
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import text

from counterfact import CounterfactError
from counterfact.store import TraceStore, verify_run

_EXAMPLES = os.environ.get("COUNTERFACT_FUZZ_EXAMPLES")
settings.register_profile(
    "counterfact-fuzz",
    max_examples=int(_EXAMPLES) if _EXAMPLES else 25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("counterfact-fuzz")

TABLES = ("runs", "steps", "model_calls", "tool_calls", "blobs", "checkpoints",
          "checkpoint_writes", "interventions", "verdicts", "debug_sessions", "hypotheses")

# property -> Counter(cases=, rejected=)
TALLY: dict[str, Counter[str]] = defaultdict(Counter)


def count(prop: str, outcome: str = "accepted") -> None:
    """Count one case of `prop`: accepted or rejected (with a clear error)."""
    TALLY[prop]["cases"] += 1
    TALLY[prop][outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    terminalreporter.section("fuzz cases")
    for prop in sorted(TALLY):
        t = TALLY[prop]
        terminalreporter.write_line(f"fuzz: {prop}: {t['cases']} cases ({t['rejected']} rejected with a clear error)")


def assert_clear(exc: BaseException, *names: str) -> None:
    """`exc` is a CounterfactError with a one-line message naming one of `names` (file,
    field or step), if any are given."""
    assert isinstance(exc, CounterfactError), f"not a CounterfactError: {type(exc).__name__}: {exc}"
    message = str(exc)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"multi-line error message: {message!r}"
    assert "Traceback" not in message
    if names:
        assert any(n in message for n in names), f"message names none of {names}: {message!r}"


def row_counts(store: TraceStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def snapshot(store: TraceStore) -> tuple[dict[str, int], dict[str, bool]]:
    """Row counts per table and whether each run's chain verifies."""
    with store.engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM runs")).scalars())
    return row_counts(store), {i: verify_run(store, i).ok for i in ids}


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A SQLite store with two runs of the scripted trio workflow, and real exports of them:
    JSON lines (`jsonl`) and OTLP JSON (`otlp`)."""
    from counterfact.formats import export_jsonl, write_otlp_json
    from counterfact.graphs import WorkflowRunner, load_suite
    from tests.graphs.scripted import trio_pool, trio_spec

    folder = tmp_path_factory.mktemp("fuzz-recorded")
    store = TraceStore.open(str(folder / "source.db"))
    suite = load_suite(Path(__file__).parents[1] / "graphs" / "suite.yaml")
    runner = WorkflowRunner(trio_spec(), store, trio_pool())
    ids = [runner.run(task).run_id for task in suite.tasks]
    export_jsonl(store, ids, folder / "runs.jsonl")
    write_otlp_json(store, ids, folder / "runs.otlp.json")
    yield {
        "store": store,
        "ids": ids,
        "jsonl": (folder / "runs.jsonl").read_text(encoding="utf-8"),
        "otlp": (folder / "runs.otlp.json").read_text(encoding="utf-8"),
        "folder": folder,
    }
    store.close()


def check_property(prop: str, call: Callable[[], object], error: type[BaseException], *names: str) -> None:
    """The property of a file or data surface: `call` works, or raises one clear `error`
    naming `names`."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions
        assert_clear(exc, *names)
        assert isinstance(exc, error), f"{type(exc).__name__}, not {error.__name__}: {exc}"
        count(prop, "rejected")
    else:
        count(prop)

