"""Interventions: targeted edits of a recorded run at one step, as one discriminated union of
the registered edit kinds (`edits/`, one module per kind).

An edit file holds one edit or a list of them; a list composes into one intervention, applied
in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, RootModel, ValidationError

from counterfact._errors import validation_message
from counterfact._files import load_yaml
from counterfact.interventions.edits import (
    AnyEdit,
    InterventionError,
    edit_union,
    holds_edits,
)

Edit = edit_union()  # the built-in kinds' union, as a type; models validate with AnyEdit


@holds_edits
class Intervention(BaseModel):
    """One or more edits, applied in order, all forking the run at the same step."""

    edits: list[AnyEdit] = Field(min_length=1)
    note: str = ""

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@holds_edits
class _Edits(RootModel[list[AnyEdit]]):
    """The edits of an edit file on their own, so that an error names the item (`[1].text`)."""


def parse_intervention(data: Any, *, source: str = "edit") -> Intervention:
    """An intervention from parsed YAML/JSON: one edit, a list, or {edits: [...], note}."""
    if isinstance(data, dict) and "edits" in data:
        raw, note = data["edits"], str(data.get("note", ""))
    else:
        raw, note = (data if isinstance(data, list) else [data]), ""
    try:
        return Intervention(edits=_Edits.model_validate(raw).root, note=note)
    except ValidationError as exc:
        raise InterventionError(f"{source}: {validation_message(exc, raw)}") from None


def load_intervention(path: str | Path) -> Intervention:
    """Read an edit file (YAML or JSON)."""
    return parse_intervention(load_yaml(path, "edit", InterventionError), source=str(path))
