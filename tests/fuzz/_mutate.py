"""Hypothesis strategies that perturb real inputs: parsed data (drop, duplicate, retype or
rename fields, add unknown ones, random unicode) and raw bytes (truncation, byte flips,
insertions of random unicode)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

HOSTILE_TEXT = st.sampled_from([
    "", " ", "\x00", "\n", "é", "\u202e", "\ud7ff", "😀", "'", '"', "\\", "${x}", "{{x}}", "(",
    "[", "*", "a" * 10_000, "' OR 1=1 --", "../../etc/passwd", "\r\n", "NaN", "-1", "1e999",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**30, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), HOSTILE_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `node` (the root included)."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _slots(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _slots(value, path + (i,))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn, base: Any, *, max_mutations: int = 3) -> Any:
    """`base` (parsed YAML/JSON) with one to a few structural mutations."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _slots(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["drop", "duplicate", "retype", "rename", "unknown", "unicode", "swap"]))
        if not path:  # the root: replace it, or wrap it
            if op in ("retype", "unicode"):
                data = draw(VALUES)
            elif op == "duplicate":
                data = [data, copy.deepcopy(data)]
            continue
        parent, key = _get(data, path[:-1]), path[-1]
        if op == "drop":
            del parent[key]
        elif op == "duplicate":
            if isinstance(parent, list):
                parent.insert(key, copy.deepcopy(parent[key]))
            else:
                parent[key] = [parent[key], copy.deepcopy(parent[key])]
        elif op == "retype":
            parent[key] = draw(VALUES)
        elif op == "unicode":
            parent[key] = draw(st.text(min_size=0, max_size=40) | HOSTILE_TEXT)
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | HOSTILE_TEXT)] = parent.pop(key)
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
        elif op == "swap":
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else (value[0] if value else {})
    return data


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, *, max_mutations: int = 3) -> bytes:
    """`base` with one to a few byte-level mutations: truncation, flips, inserts, deletes."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.text(min_size=1, max_size=8) | HOSTILE_TEXT).encode("utf-8", "surrogatepass")
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
    return bytes(data)


def dumps(value: Any) -> str:
    """JSON that can hold what mutation produced (NaN, huge ints, lone surrogates)."""
    return json.dumps(value, ensure_ascii=True, default=str)
