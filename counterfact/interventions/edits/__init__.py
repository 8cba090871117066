"""Edit kinds as plug-ins: one module per kind (see `_base.EditKind`), each found and registered
here by importing every module of this package. A new kind is one new module."""

import importlib
import pkgutil

from counterfact.interventions.edits._base import (
    AnyEdit,
    CompileContext,
    EditKind,
    EditSpec,
    InterventionError,
    StateUpdate,
    StepPlan,
    StepRef,
    edit_kind,
    edit_kind_names,
    edit_union,
    holds_edits,
    register_edit_kind,
    short,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        register_edit_kind(importlib.import_module(f"{__name__}.{_module.name}"))  # type: ignore[arg-type]

__all__ = [
    "AnyEdit",
    "CompileContext",
    "EditKind",
    "EditSpec",
    "InterventionError",
    "StateUpdate",
    "StepPlan",
    "StepRef",
    "edit_kind",
    "edit_kind_names",
    "edit_union",
    "holds_edits",
    "register_edit_kind",
    "short",
]
