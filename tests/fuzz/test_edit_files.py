"""Edit files of every kind: parse_intervention and load_intervention on mutated real edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from counterfact.interventions import (
    InterventionError,
    load_intervention,
    parse_intervention,
)
from tests.fuzz._mutate import dumps, mutated, mutated_bytes
from tests.fuzz.conftest import assert_clear, check_property

# One real edit of each kind of counterfact/interventions/_specs.py.
EDITS = {
    "message": {"kind": "message", "at": {"step": 2}, "mode": "regex", "pattern": "RESULT: \\d+", "text": "RESULT: 7"},
    "state": {"kind": "state", "at": {"node": "solver", "invocation": 0},
              "patch": [{"op": "replace", "path": "/messages/1/content", "value": "FACTS: none"}]},
    "plan": {"kind": "plan", "at": {"agent": "lead"}, "plan": {"steps": [{"text": "look up", "done": False}]}},
    "route": {"kind": "route", "at": {"step": 1}, "next": "solver", "instruction": "compute it"},
    "response": {"kind": "response", "at": {"step": 1}, "call": 0, "text": "CALL calculator",
                 "tool_calls": [{"name": "calculator", "args": {"expression": "1 + 2"}}]},
    "resume": {"kind": "resume", "at": {"step": 3}, "value": {"approved": True}},
    "tool": {"kind": "tool", "at": {"step": 1}, "tool": "lookup", "action": "result", "result": "1000"},
    "prefix": {"kind": "prefix", "at": {"step": 0}, "text": "FACTS:"},
    "instruction": {"kind": "instruction", "at": {"agent": "solver", "invocation": 1}, "text": "Check the sum."},
    "sample": {"kind": "sample", "at": {"step": 2}, "temperature": 0.7, "seed": 3},
    "activation": {"kind": "activation", "at": {"step": 2}, "layers": [0, 1], "component": "head", "head": 1,
                   "positions": [0, 2], "operation": "add", "strength": 2.0,
                   "vector": {"contrastive": {"positive": ["yes"], "negative": ["no"]}}},
}
BASES = list(EDITS.values()) + [
    list(EDITS.values())[:3],
    {"edits": [EDITS["message"], EDITS["instruction"]], "note": "two edits"},
    {"kind": "activation", "layers": [3], "operation": "scale", "strength": 0.5},
    {"kind": "activation", "layers": [0], "vector": {"captured": {"run": "abc", "step": 1, "position": "mean"}}},
    {"kind": "activation", "layers": [0], "vector": {"file": "v.safetensors", "key": "steer"}},
]
base_edit = st.sampled_from(BASES)


def test_real_edits_parse() -> None:
    for base in BASES:
        parse_intervention(base, source="real.yaml")


@given(data=base_edit.flatmap(mutated))
def test_parse_intervention_mutated(data: object) -> None:
    check_property("edit: parse_intervention(mutated data)", lambda: parse_intervention(data, source="fuzz.yaml"), InterventionError, "fuzz.yaml")


@given(data=base_edit.flatmap(mutated), suffix=st.sampled_from([".yaml", ".json"]))
def test_load_intervention_mutated_file(tmp_path_factory: pytest.TempPathFactory, data: object, suffix: str) -> None:
    path = tmp_path_factory.mktemp("edit") / f"edit{suffix}"
    path.write_text(dumps(data) if suffix == ".json" else yaml.safe_dump(json.loads(dumps(data)), allow_unicode=False))
    check_property("edit: load_intervention(mutated file)", lambda: load_intervention(path), InterventionError, str(path))


@given(raw=st.tuples(base_edit, st.sampled_from([".yaml", ".json"])).flatmap(
    lambda b: st.tuples(mutated_bytes((yaml.safe_dump(b[0]) if b[1] == ".yaml" else json.dumps(b[0], indent=1)).encode()),
                        st.just(b[1]))))
def test_load_intervention_damaged_bytes(tmp_path_factory: pytest.TempPathFactory, raw: tuple[bytes, str]) -> None:
    data, suffix = raw
    path = tmp_path_factory.mktemp("edit") / f"edit{suffix}"
    path.write_bytes(data)
    check_property("edit: load_intervention(damaged bytes)", lambda: load_intervention(path), InterventionError, str(path))


def test_missing_edit_file(tmp_path: Path) -> None:
    with pytest.raises(InterventionError) as info:
        load_intervention(tmp_path / "nope.yaml")
    assert_clear(info.value, "nope.yaml")


@pytest.mark.parametrize("pattern", ["(", "[", "*", "a{2,1}"])
def test_bad_regex_pattern_is_a_clear_error(pattern: str) -> None:
    with pytest.raises(InterventionError) as info:
        parse_intervention({"kind": "message", "mode": "regex", "pattern": pattern, "text": "x"}, source="edit.yaml")
    assert_clear(info.value, "edit.yaml")


def test_item_name_with_newline_gives_one_line() -> None:
    with pytest.raises(InterventionError) as info:
        parse_intervention([{"kind": "message", "name": "x\ny", "mode": "bad"}], source="edit.yaml")
    assert_clear(info.value, "edit.yaml")
