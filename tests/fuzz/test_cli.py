"""CLI arguments: `counterfact.cli.main` in-process with fuzzed step references (--at),
run-id prefixes, --label, --since and --model specs: exit code 0 or 1, and on 1 exactly one
`error: ...` line on stderr; never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from counterfact.cli import main
from counterfact.interventions import InterventionError, StepRef, parse_step
from tests.fuzz.conftest import assert_clear, count

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
AT = st.sampled_from(["0", "2", "-1", "solver#0", "agent:solver#1", "agent:", "#", "solver#x", "99999999999999999999",
                      " 1 ", "solver#-1", "agent:a:b#2", "٣"]) | TEXT
PREFIX = st.sampled_from(["", "0", "a", "%", "_", "'", "' OR 1=1 --", "*"]) | st.text("0123456789abcdef%_'", max_size=12)
LABEL = st.sampled_from(["k=v", "=v", "k", "k==", "' OR 1=1 --=x", "a\"b=c", "suite=tiny"]) | TEXT
SINCE = st.sampled_from(["2024-01-01", "2024-13-01", "2024-01-01T25:00", "yesterday", "0000-00-00", "2024-02-30",
                         "9999-12-31T23:59:59"]) | TEXT
# model specs that fail fast (no network, no download of the embedded model)
MODEL = (st.sampled_from(["test", "", ":", "local:", "local:/nonexistent", "local:/nonexistent#x.gguf", "openai",
                          "bogus:x", " "]) | TEXT).filter(
    lambda m: m.strip().partition(":")[0] not in ("embedded", "openai") or m.strip() == "openai")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, prop: str) -> None:
    monkeypatch.setattr(sys, "argv", ["counterfact", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    assert code in (0, 1), f"exit {code}; stderr {err!r}"
    assert "Traceback" not in err + out
    if code == 1:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr {err!r}"
        count(prop, "rejected")
    else:
        count(prop)


@pytest.fixture(scope="module")
def db(recorded: dict) -> str:
    return str(Path(recorded["folder"]) / "source.db")


@given(label=st.lists(LABEL, max_size=3), since=st.none() | SINCE)
def test_runs_list(db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, label: list[str], since: str | None) -> None:
    argv = ["runs", "list", "--db", db, "--format", "json"]
    for item in label:
        argv += ["--label", item]
    if since is not None:
        argv += ["--since", since]
    _run(argv, capsys, monkeypatch, "cli: runs list --label/--since")


@given(prefix=PREFIX, real=st.none() | st.integers(1, 33), command=st.sampled_from([["runs", "show"], ["verify"], ["runs", "tree"]]))
def test_run_prefixes(recorded: dict, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                      prefix: str, real: int | None, command: list[str]) -> None:
    if real is not None:  # a real id's prefix (or the id with one character more)
        prefix = (recorded["ids"][0] + "0")[:real]
    _run([*command, prefix, "--db", db], capsys, monkeypatch, "cli: run-id prefixes")


@given(at=AT, model=MODEL, prefix=st.sampled_from(["", "x"]))
def test_replay_at_and_model(recorded: dict, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             at: str, model: str, prefix: str) -> None:
    run = prefix + recorded["ids"][0][:8]
    _run(["replay", run, "--at", at, "--model", model, "--db", db], capsys, monkeypatch, "cli: replay --at/--model")


@given(at=AT)
def test_parse_step(at: str) -> None:
    prop = "cli: parse_step(--at)"
    try:
        parse_step(at)
    except Exception as exc:  # noqa: BLE001
        assert isinstance(exc, InterventionError)
        assert_clear(exc)
        count(prop, "rejected")
    else:
        count(prop)


def test_a_superscript_step_is_a_node_name_not_an_index() -> None:
    """'²'.isdigit() is true but int() refuses it: it must not be taken for an index (it was
    a traceback); as a node name it is refused, clearly, when the run has no such node."""
    assert parse_step("²") == StepRef(node="²")
