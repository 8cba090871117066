"""The README's edit-file example: a valid edit file that shows every edit kind with every field."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import yaml

from counterfact.interventions import Edit, parse_intervention

README = Path(__file__).resolve().parents[1] / "README.md"


def _edit_file_example() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    return next(block for block in blocks if block.startswith("- kind: message"))


def test_the_readme_edit_file_example_gives_every_kind_with_all_its_fields() -> None:
    block = _edit_file_example()
    parse_intervention(yaml.safe_load(block), source="README")  # a valid edit file as written
    sections: dict[str, str] = {}  # each kind's entries, their comments included
    for entry in re.split(r"(?m)^(?=- kind: )", block):
        if match := re.match(r"- kind: (\w+)", entry):
            sections[match[1]] = sections.get(match[1], "") + entry
    kinds = {model.model_fields["kind"].default: model for model in typing.get_args(typing.get_args(Edit)[0])}
    assert sorted(sections) == sorted(kinds)
    missing = {
        kind: [field for field in model.model_fields if field not in ("kind", "at") and not re.search(rf"\b{field}:", sections[kind])]
        for kind, model in kinds.items()
    }
    assert not any(missing.values()), {kind: fields for kind, fields in missing.items() if fields}
    assert re.search(r"(?m)^  at: ", block), "no example of `at:`, where an edit aims"
    assert all(mode in sections["message"] for mode in ("replace", "append", "regex"))
    assert all(re.search(rf"action: {action}\b", sections["tool"]) for action in ("add", "remove"))
